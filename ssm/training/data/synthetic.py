"""Selective copying and induction heads as Lightning data modules (generated on the fly)."""

from __future__ import annotations

from ssm.data import synthetic
from ssm.training.data.base import ClassificationDataModule

TASKS = ("selective_copy", "induction_heads")


class SyntheticDataModule(ClassificationDataModule):
    """Token inputs (B, L) and K targets per sequence (B, K), predicted at the last K positions.

    Args:
        task: "selective_copy" (K = n_memorize) or "induction_heads" (K = 1).
        seq_len: context length (the markers / final trigger come after it).
        n_memorize: data tokens to copy (selective_copy only).
        vocab_size: data tokens (ids 1..vocab_size; 0 is blank, vocab_size + 1 the marker).
        variable_spacing: random positions (selective copying) or the first n_memorize ones.
        n_train, n_val, n_test: split sizes; seed: base seed of the generator.
        batch_size, eval_batch_size, num_workers: loader settings.

    Exposes ``n_tokens = vocab_size + 2``, ``n_classes = vocab_size`` and ``n_predict = K``.
    """

    def __init__(
        self,
        task: str = "selective_copy",
        seq_len: int = 256,
        n_memorize: int = 8,
        vocab_size: int = 8,
        variable_spacing: bool = True,
        n_train: int = 10_000,
        n_val: int = 1_000,
        n_test: int = 1_000,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.check_split_sizes("SyntheticDataModule", n_train=n_train, n_val=n_val, n_test=n_test)
        if task not in TASKS:
            raise ValueError(f"SyntheticDataModule: task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.n_tokens = int(vocab_size) + 2
        self.n_classes = int(vocab_size)
        self.n_predict = int(n_memorize) if task == "selective_copy" else 1
        sizes = {"train": n_train, "val": n_val, "test": n_test}
        if task == "selective_copy":
            make = lambda split: synthetic.SelectiveCopyDataset(  # noqa: E731
                sizes[split], seq_len, n_memorize, vocab_size, variable_spacing, seed, split
            )
        else:
            make = lambda split: synthetic.InductionHeadsDataset(sizes[split], seq_len, vocab_size, seed, split)  # noqa: E731
        self._sets = {split: make(split) for split in sizes}  # validates the arguments now
        self.collate_fn = synthetic.collate

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = self._sets["train"], self._sets["val"], self._sets["test"]
