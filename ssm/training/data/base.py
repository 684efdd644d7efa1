"""Shared loader plumbing of the classification data modules."""

from __future__ import annotations

import numbers
from typing import Callable

import lightning as L
from torch.utils.data import DataLoader, Dataset

from ssm.training.data.loaders import ResumableLoader, evaluation_loader


class ClassificationDataModule(L.LightningDataModule):
    """Subclasses set ``self.train_set``, ``self.val_set``, ``self.test_set`` in ``setup``
    and the shape attributes ``n_tokens`` / ``d_input`` and ``n_classes`` (and
    ``image_shape`` (H, W) when the sequences are row-major flattened images)."""

    n_tokens: int | None = None
    d_input: int | None = None
    n_classes: int
    image_shape: tuple[int, int] | None = None

    def __init__(self, batch_size: int = 32, eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise ValueError(f"{name}: {arg} must be a positive integer (data.{arg}=...), got {value!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"{name}: num_workers must be a non-negative integer, got {num_workers!r}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = self.batch_size if eval_batch_size is None else int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    collate_fn: Callable | None = None

    def check_files(self) -> None:
        """Raise FileNotFoundError, saying what to put where, when the data set must be
        downloaded and is not there; called before a run sets up its logger and trainer.
        Generated data sets (made on first use) have nothing to check."""

    @staticmethod
    def check_split_sizes(name: str, **sizes) -> None:
        """Require every split size (``n_train=...``) to be a positive integer, before any
        data are generated for it."""
        for arg, n in sizes.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name}: {arg} must be a positive integer (data.{arg}=...), got {n!r}")

    def _check(self, dataset: Dataset | None, split: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for loaders")
        if len(dataset) == 0:
            raise ValueError(
                f"{type(self).__name__}: the {split} split is empty; give it at least one example "
                f"(data.n_{split} where the data set has that option)"
            )
        return dataset

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (run seed, epoch), sharded over ranks, resumable mid-epoch."""
        return ResumableLoader(self._check(self.train_set, "train"), self.batch_size, shuffle=True,
                               collate_fn=self.collate_fn, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        dataset = self._check(self.val_set, "val")
        return evaluation_loader(dataset, self.eval_batch_size, self.collate_fn, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        dataset = self._check(self.test_set, "test")
        return evaluation_loader(dataset, self.eval_batch_size, self.collate_fn, self.num_workers)
