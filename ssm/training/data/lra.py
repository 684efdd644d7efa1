"""LRA Text (IMDB bytes), Retrieval (AAN pairs) and Image (grayscale CIFAR-10) data modules.

Each reads the official files under ``data_root`` (see ``ssm.data.lra`` for the layouts) and
raises a FileNotFoundError naming the expected files and where to get them when absent.
"""

from __future__ import annotations

import os
import pathlib

from ssm.data import listops, lra
from ssm.training.data.base import ClassificationDataModule


class _SplitsDataModule(ClassificationDataModule):
    """Loads all three splits in ``setup`` from ``self._splits()``; checks files in ``prepare_data``."""

    def __init__(self, data_root: str | os.PathLike, batch_size: int, eval_batch_size: int | None,
                 num_workers: int) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.data_root = pathlib.Path(data_root).expanduser()

    def _locate(self) -> pathlib.Path:
        raise NotImplementedError

    def _splits(self) -> dict:
        raise NotImplementedError

    def check_files(self) -> None:
        self._locate()

    def prepare_data(self) -> None:
        self.check_files()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            splits = self._splits()
            self.train_set, self.val_set, self.test_set = splits["train"], splits["val"], splits["test"]


class TextDataModule(_SplitsDataModule):
    """IMDB reviews as UTF-8 bytes (259 tokens with pad/unk/eos), truncated to ``l_max`` with
    EOS; 2 classes. As in the S4 papers the test set doubles as the validation set."""

    n_tokens = lra.BYTE_VOCAB_SIZE
    n_classes = 2

    def __init__(self, data_root: str | os.PathLike = "data", l_max: int = 4096, batch_size: int = 16,
                 eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__(data_root, batch_size, eval_batch_size, num_workers)
        self.l_max = l_max
        self.collate_fn = listops.collate

    def _locate(self) -> pathlib.Path:
        return lra.locate_imdb(self.data_root)

    def _splits(self) -> dict:
        return lra.text_splits(self.data_root, self.l_max)


class RetrievalDataModule(_SplitsDataModule):
    """AAN citation pairs: two byte sequences of at most ``l_max`` tokens each, 2 classes.
    Batches are ``(tokens (2, B, L), labels (B,), lengths (2, B))`` for a dual encoder."""

    n_tokens = lra.BYTE_VOCAB_SIZE
    n_classes = 2

    def __init__(self, data_root: str | os.PathLike = "data", l_max: int = 4000, batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__(data_root, batch_size, eval_batch_size, num_workers)
        self.l_max = l_max
        self.collate_fn = lra.collate_pairs

    def _locate(self) -> pathlib.Path:
        return lra.locate_aan(self.data_root)

    def _splits(self) -> dict:
        return lra.retrieval_splits(self.data_root, self.l_max)


class ImageDataModule(_SplitsDataModule):
    """Grayscale CIFAR-10 flattened row-major to (1024, 1), normalized with mean 122.6/255 and
    std 61.0/255 (LRA Image), or with ``grayscale=False`` RGB to (1024, 3), normalized per
    channel (sCIFAR as in the S4-PTD robustness protocol); ``n_val`` training images (seed
    ``seed``) are held out for validation."""

    n_classes = 10
    image_shape = (32, 32)  # 2D models (ssm.ImageClassifier) see the sequence as this grid

    def __init__(self, data_root: str | os.PathLike = "data", n_val: int = 5000, seed: int = 42,
                 batch_size: int = 50, eval_batch_size: int | None = None, num_workers: int = 0,
                 grayscale: bool = True) -> None:
        super().__init__(data_root, batch_size, eval_batch_size, num_workers)
        self.check_split_sizes(type(self).__name__, n_val=n_val)
        if not isinstance(grayscale, bool):
            raise ValueError(f"ImageDataModule: grayscale must be true or false, got {grayscale!r}")
        self.n_val = n_val
        self.seed = seed
        self.grayscale = grayscale
        self.d_input = 1 if grayscale else 3
        self.collate_fn = lra.collate_images

    def _locate(self) -> pathlib.Path:
        return lra.locate_cifar10(self.data_root)

    def _splits(self) -> dict:
        return lra.image_splits(self.data_root, self.n_val, self.seed, grayscale=self.grayscale)
