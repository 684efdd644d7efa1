"""Synthetic tasks that separate selective (input-dependent) SSMs from LTI ones (the Mamba
paper, Gu and Dao 2023, section 3.1 and 4.1): selective copying and induction heads.

Samples are generated on the fly and are a pure function of (seed, split, index), so the
splits are reproducible and differ from one another without any file on disk.

Token ids (both tasks): 0 is the blank / noise token, 1..vocab_size are data tokens, and
vocab_size + 1 is the marker (selective copying) or trigger (induction heads) token, so a
model needs ``n_tokens = vocab_size + 2`` embeddings. Targets are data tokens minus 1, i.e.
classes 0..vocab_size-1 (``n_classes = vocab_size``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
BLANK = 0


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def _check(name: str, value, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def marker_token(vocab_size: int) -> int:
    """Id of the marker (selective copying) / trigger (induction heads) token."""
    return vocab_size + 1


def selective_copy_sample(
    rng: np.random.Generator, seq_len: int, n_memorize: int, vocab_size: int, variable_spacing: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One selective-copying sample.

    The context has ``seq_len`` positions: ``n_memorize`` data tokens (uniform over
    1..vocab_size) at sorted positions drawn without replacement (``variable_spacing``) or at
    positions 0..n_memorize-1 (the plain copying task, whose constant lag an LTI convolution
    can learn), blanks elsewhere. Then ``n_memorize`` marker tokens follow; at those last
    positions the model must output the data tokens in order.

    Returns x (seq_len + n_memorize,) int64 and y (n_memorize,) int64 in [0, vocab_size).
    """
    data = rng.integers(1, vocab_size + 1, size=n_memorize)
    if variable_spacing:
        positions = np.sort(rng.choice(seq_len, size=n_memorize, replace=False))
    else:
        positions = np.arange(n_memorize)
    x = np.full(seq_len + n_memorize, BLANK, dtype=np.int64)
    x[positions] = data
    x[seq_len:] = marker_token(vocab_size)
    return torch.from_numpy(x), torch.from_numpy(data - 1)


def induction_heads_sample(rng: np.random.Generator, seq_len: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One induction-heads sample: ``seq_len`` random data tokens with the trigger token
    placed once at a random position p in [0, seq_len - 2], so the token at p + 1 is its value;
    the sequence ends with the trigger again (length seq_len + 1), and the target is that
    value (recall what followed the trigger the first time).

    Returns x (seq_len + 1,) int64 and y (1,) int64 in [0, vocab_size).
    """
    x = rng.integers(1, vocab_size + 1, size=seq_len + 1)
    p = int(rng.integers(0, seq_len - 1))
    x[p] = marker_token(vocab_size)
    x[-1] = marker_token(vocab_size)
    return torch.from_numpy(x.astype(np.int64)), torch.tensor([x[p + 1] - 1], dtype=torch.int64)


class SelectiveCopyDataset(Dataset):
    """``n`` selective-copying samples (see :func:`selective_copy_sample`); item i is
    ``(x (seq_len + n_memorize,), y (n_memorize,))``, a function of (seed, split, i).

    The paper's setting is 16 data tokens from a vocabulary of 16 in a context of 4096; the
    defaults here are smaller so that the task trains on a CPU.
    """

    def __init__(
        self, n: int, seq_len: int = 256, n_memorize: int = 8, vocab_size: int = 8, variable_spacing: bool = True,
        seed: int = 0, split: str = "train",
    ) -> None:
        self.n = _check("n", n, 0)
        self.seq_len = _check("seq_len", seq_len, 1)
        self.n_memorize = _check("n_memorize", n_memorize, 1)
        self.vocab_size = _check("vocab_size", vocab_size, 1)
        if self.n_memorize > self.seq_len:
            raise ValueError(f"n_memorize ({n_memorize}) must not exceed seq_len ({seq_len})")
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {tuple(SPLIT_CODES)}, got {split!r}")
        self.variable_spacing, self.seed, self.split = bool(variable_spacing), int(seed), split

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        rng = _rng(self.seed, self.split, index)
        return selective_copy_sample(rng, self.seq_len, self.n_memorize, self.vocab_size, self.variable_spacing)


class InductionHeadsDataset(Dataset):
    """``n`` induction-heads samples (see :func:`induction_heads_sample`); item i is
    ``(x (seq_len + 1,), y (1,))``, a function of (seed, split, i)."""

    def __init__(self, n: int, seq_len: int = 256, vocab_size: int = 16, seed: int = 0, split: str = "train") -> None:
        self.n = _check("n", n, 0)
        self.seq_len = _check("seq_len", seq_len, 2)
        self.vocab_size = _check("vocab_size", vocab_size, 1)
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {tuple(SPLIT_CODES)}, got {split!r}")
        self.seed, self.split = int(seed), split

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        return induction_heads_sample(_rng(self.seed, self.split, index), self.seq_len, self.vocab_size)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, None]:
    """Stack equal-length samples into ``(x (B, L), y (B, K), None)`` (no padding)."""
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.stack(ys), None
