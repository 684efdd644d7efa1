"""Validate and test one fixed classifier with Lightning on 1 or 2 CPU processes (DDP over
gloo), as ``python tests/distributed_evaluation.py OUT_DIR DEVICES N_VAL N_TEST BATCH``.

Each rank writes ``OUT_DIR/rank{r}.json``: the metrics ``validate`` and ``test`` returned
and the example ids it evaluated. The data are logits (so the "model" is a scale of its
input) with the example id in their last column; the classes come from a fixed seed.
"""

import json
import pathlib
import sys

import lightning as L
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssm.training.data.base import ClassificationDataModule
from ssm.training.task import SequenceClassificationTask

N_CLASSES = 3


def split(n: int, seed: int) -> TensorDataset:
    """(x (n, N_CLASSES + 1): logits then the example id, y (n,)) with about half right."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, N_CLASSES, generator=g)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    y[: n // 2] = logits[: n // 2].argmax(-1)
    return TensorDataset(torch.cat([logits, torch.arange(n, dtype=torch.float32)[:, None]], 1), y)


class Logits(ClassificationDataModule):
    n_classes = N_CLASSES
    d_input = N_CLASSES + 1

    def __init__(self, n_val: int, n_test: int, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self.n_val, self.n_test = n_val, n_test

    def setup(self, stage=None) -> None:
        self.val_set, self.test_set = split(self.n_val, 1), split(self.n_test, 2)


class RecordingScale(nn.Module):
    """``scale · logits``, recording the ids of the examples it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.seen: list[int] = []

    def forward(self, x, lengths=None):
        self.seen += x[:, -1].long().tolist()
        return self.scale * x[:, :-1]


def main(out: pathlib.Path, devices: int, n_val: int, n_test: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    model = RecordingScale()
    task = SequenceClassificationTask(model, n_classes=N_CLASSES, optimizer=None)
    data = Logits(n_val, n_test, batch_size)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)
    (val,) = trainer.validate(task, datamodule=data, verbose=False)
    val_seen, model.seen = model.seen, []
    (test,) = trainer.test(task, datamodule=data, verbose=False)
    record = {"val": val, "test": test, "val_seen": val_seen, "test_seen": model.seen}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), *map(int, sys.argv[2:6]))
