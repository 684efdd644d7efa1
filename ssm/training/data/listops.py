"""LRA ListOps: the official release when present, else generated with the official
generator's algorithm (deterministic by seed, cached under the data root)."""

from __future__ import annotations

import logging
import os
import pathlib

from ssm.data import listops
from ssm.training.data.base import ClassificationDataModule

log = logging.getLogger(__name__)


class ListOpsDataModule(ClassificationDataModule):
    """Token sequences of nested MIN/MAX/MED/SM expressions, 10 classes.

    Looks for ``basic_{train,val,test}.tsv`` under ``data_root`` (``listops/``,
    ``listops-1000/`` or the unpacked ``lra_release``). Without them it generates the set
    (``n_train``/``n_val``/``n_test`` unique expressions with length in the open interval
    (min_length, max_length)) into ``data_root/listops_generated/...`` once, and reuses it.
    With the release, ``n_train``/``n_val``/``n_test`` keep the first rows of each split.

    Args:
        data_root: folder holding the data (``$DATA_PATH`` in the configs).
        l_max: maximum tokens per sequence, EOS included (2048 in the S4 papers).
        batch_size, eval_batch_size, num_workers: loader settings.
        n_train, n_val, n_test: split sizes (official: 96000/2000/2000).
        seed, max_depth, max_args, min_length, max_length: generator settings.
        workers: generator processes (None: all cores).
        use_release: read the official files when they exist.
    """

    n_tokens = len(listops.VOCAB)
    n_classes = 10

    def __init__(
        self,
        data_root: str | os.PathLike = "data",
        l_max: int = 2048,
        batch_size: int = 50,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        n_train: int = 96_000,
        n_val: int = 2_000,
        n_test: int = 2_000,
        seed: int = 0,
        max_depth: int = 10,
        max_args: int = 10,
        min_length: int = 500,
        max_length: int = 2000,
        workers: int | None = None,
        use_release: bool = True,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.check_split_sizes("ListOpsDataModule", n_train=n_train, n_val=n_val, n_test=n_test)
        self.data_root = pathlib.Path(data_root).expanduser()
        self.l_max = l_max
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.generator_args = dict(
            n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, max_depth=max_depth,
            max_args=max_args, min_length=min_length, max_length=max_length,
            workers=workers, use_release=use_release,
        )
        listops.validate_generator_args(
            (n_train, n_val, n_test), seed, max_depth, max_args, min_length, max_length, workers
        )
        self.collate_fn = listops.collate

    def prepare_data(self) -> None:
        self._directory(log.info)

    def setup(self, stage: str | None = None) -> None:
        directory = self._directory(log.debug)
        sets = {
            split: listops.ListOpsDataset(
                directory / listops.split_filename(split), l_max=self.l_max, limit=self.sizes[split]
            )
            for split in listops.SPLITS
        }
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]
        for split, dataset in sets.items():
            if dataset.truncated:
                log.warning(
                    "%d of %d %s expressions are longer than data.l_max=%d tokens and were cut to it: their "
                    "labels no longer follow from the tokens; raise data.l_max (or lower data.max_length)",
                    dataset.truncated, len(dataset), split, self.l_max,
                )

    def _directory(self, report) -> pathlib.Path:
        return listops.prepare_listops(self.data_root, log=report, **self.generator_args)
