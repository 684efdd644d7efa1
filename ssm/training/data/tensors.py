"""Your own classification data, from one file of tensors (``data=tensors data.path=...``)."""

from __future__ import annotations

import pathlib
import pickle

import torch
from torch.utils.data import Dataset

from ssm.training.data.base import ClassificationDataModule

FORMAT = (
    'torch.save({"train": {"x": x, "y": y}, "test": {...}, "val": {...}}, path), with x (N, L) integer token '
    "ids or (N, L) / (N, L, d) float features, y (N,) integer classes, optionally \"lengths\" (N,) for "
    'right-padded sequences; "val" may be left out (then data.val_fraction of train is held out)'
)
SPLITS = ("train", "val", "test")


class SequenceTensors(Dataset):
    """(x_i, y_i) or (x_i, y_i, length_i) items of one split."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor | None) -> None:
        self.x, self.y, self.lengths = x, y, lengths

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        if self.lengths is None:
            return self.x[i], self.y[i]
        return self.x[i], self.y[i], self.lengths[i]


class TensorDataModule(ClassificationDataModule):
    """Sequence classification on tensors saved with ``torch.save`` (see ``FORMAT``).

    Integer x are token ids (``n_tokens`` = the largest id + 1 unless given; kept as int64),
    float x are features (``d_input`` = d, or 1 for (N, L); kept as float32); ``n_classes`` = the largest class + 1
    unless given. Sequences may be right-padded with "lengths" (each in [1, L]); without
    them every step is valid. The file is read and checked when the module is built, so a
    wrong file stops a run before its logger and trainer start.

    Args:
        path: the file (relative paths from the working directory).
        n_classes, n_tokens: override the counts taken from the data (e.g. classes absent
            from a small split).
        val_fraction: without a "val" split, this fraction of train (at least one example)
            is held out for validation, drawn with ``seed``.
        batch_size, eval_batch_size, num_workers: loader settings.
    """

    def __init__(
        self,
        path: str | None = None,
        n_classes: int | None = None,
        n_tokens: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        if not 0 < val_fraction < 1:
            raise ValueError(f"TensorDataModule: val_fraction must be in (0, 1), got {val_fraction!r}")
        if path is None or not str(path).strip():
            raise ValueError(f"TensorDataModule: set data.path to your file (e.g. data.path=my_data.pt), written with "
                             f"{FORMAT}")
        self.path = pathlib.Path(str(path)).expanduser()
        self.check_files()
        try:
            raw = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # numpy arrays or other objects: not loaded without trusting the file
            raise ValueError(f"TensorDataModule: {self.path} holds something other than torch tensors, dicts and "
                             f"numbers (numpy arrays? convert them with torch.from_numpy); expected {FORMAT}") from err
        if not isinstance(raw, dict) or "train" not in raw or "test" not in raw:
            keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"TensorDataModule: {self.path} must hold a dict with 'train' and 'test' splits, "
                             f"got {keys}; expected {FORMAT}")
        unknown = set(raw) - set(SPLITS)
        if unknown:
            raise ValueError(f"TensorDataModule: {self.path} has unknown splits {sorted(unknown)}; expected {FORMAT}")
        splits = {name: self._split(raw[name], name) for name in SPLITS if name in raw}
        if "val" not in splits:
            splits["train"], splits["val"] = self._hold_out(splits["train"], val_fraction, seed)
        self._check_consistent(splits)
        x = splits["train"].x
        if x.is_floating_point():
            self.d_input = x.shape[-1]
        else:
            largest = max(int(s.x.max()) for s in splits.values() if s.x.numel())
            self.n_tokens = largest + 1 if n_tokens is None else int(n_tokens)
            if largest >= self.n_tokens:
                raise ValueError(f"TensorDataModule: token id {largest} found but n_tokens={self.n_tokens}")
        largest_class = max(int(s.y.max()) for s in splits.values() if s.y.numel())
        self.n_classes = largest_class + 1 if n_classes is None else int(n_classes)
        if largest_class >= self.n_classes:
            raise ValueError(f"TensorDataModule: class {largest_class} found but n_classes={self.n_classes}")
        self._splits = splits

    def check_files(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"TensorDataModule: no file at {self.path.resolve()}; write one with {FORMAT}")

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (self._splits[name] for name in SPLITS)

    def _split(self, split, name: str) -> SequenceTensors:
        where = f"TensorDataModule: {self.path} split {name!r}"
        if not isinstance(split, dict) or "x" not in split or "y" not in split:
            raise ValueError(f"{where} must be a dict with 'x', 'y' (and optionally 'lengths'); expected {FORMAT}")
        x, y, lengths = split["x"], split["y"], split.get("lengths")
        if not (torch.is_tensor(x) and (x.dim() in (2, 3) and x.is_floating_point() or x.dim() == 2 and _integer(x))):
            got = f"{tuple(x.shape)} {x.dtype}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{where}: x must be (N, L) integer tokens or (N, L) / (N, L, d) floats, got {got}")
        if x.is_floating_point() and x.dim() == 2:
            x = x.unsqueeze(-1)
        N, L = x.shape[:2]
        if L == 0:
            raise ValueError(f"{where}: x has sequences of length 0, got {tuple(x.shape)}")
        if not (torch.is_tensor(y) and y.shape == (N,) and _integer(y)):
            got = f"{tuple(y.shape)} {y.dtype}" if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"{where}: y must be ({N},) integer classes, got {got}")
        if y.numel() and y.min() < 0 or _integer(x) and x.numel() and x.min() < 0:
            raise ValueError(f"{where}: classes and token ids must be >= 0")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"{where}: x holds NaN or infinite values")
        if lengths is not None:
            if not (torch.is_tensor(lengths) and lengths.shape == (N,) and _integer(lengths)):
                got = f"{tuple(lengths.shape)} {lengths.dtype}" if torch.is_tensor(lengths) else type(lengths).__name__
                raise ValueError(f"{where}: lengths must be ({N},) integers, got {got}")
            if lengths.numel() and (lengths.min() < 1 or lengths.max() > L):
                raise ValueError(f"{where}: lengths must lie in [1, L = {L}], got [{int(lengths.min())}, "
                                 f"{int(lengths.max())}]")
            lengths = lengths.long()
        # what the models take: token ids as int64 (embedding lookups), features in float32
        # (the trainer's precision setting converts them from there)
        x = x.float() if x.is_floating_point() else x.long()
        return SequenceTensors(x, y.long(), lengths)

    @staticmethod
    def _hold_out(train: SequenceTensors, fraction: float, seed: int) -> tuple[SequenceTensors, SequenceTensors]:
        n = len(train)
        n_val = max(1, round(fraction * n))
        if n_val >= n:
            raise ValueError(f"TensorDataModule: train has {n} examples, too few to hold out a validation split; "
                             "add a 'val' split to the file")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))

        def pick(idx):
            return SequenceTensors(train.x[idx], train.y[idx], None if train.lengths is None else train.lengths[idx])

        return pick(order[n_val:].sort().values), pick(order[:n_val].sort().values)

    def _check_consistent(self, splits: dict) -> None:
        kinds = {name: (s.x.is_floating_point(), s.x.shape[2:], s.lengths is not None) for name, s in splits.items()}
        if len({k[:2] for k in kinds.values()}) > 1 or len({k[2] for k in kinds.values()}) > 1:
            raise ValueError(f"TensorDataModule: {self.path}: the splits differ in input kind, feature size or "
                             f"whether they have lengths: {kinds} (float?, feature shape, lengths?)")
        for name, s in splits.items():
            if len(s) == 0:
                raise ValueError(f"TensorDataModule: {self.path}: the {name} split is empty")


def _integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
