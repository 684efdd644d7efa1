"""What every Triton launcher shares."""

from __future__ import annotations

import contextlib

import torch


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s GPU the current device for a launch: Triton launches on the current device
    and its current stream, not on the tensors' device (a model on cuda:1 while cuda:0 is
    current). A no-op for CPU tensors (the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# CUDA's limit on grid dimension 0 (dimensions 1 and 2 stop at 65535).
MAX_GRID_X = 2**31 - 1


def flat_grid(*counts: int) -> tuple[int]:
    """A 1D launch grid of prod(counts) programs: one per (batch row, block, ...), decoded in
    the kernel with the last count varying fastest. The batch is never a grid dimension of
    its own, where CUDA would cap it at 65535 (dimensions 1 and 2); dimension 0 takes up to
    2^31 - 1 programs, and more is refused here rather than at launch."""
    n = 1
    for c in counts:
        n *= int(c)
    if n > MAX_GRID_X:
        raise ValueError(f"{' x '.join(str(int(c)) for c in counts)} = {n} programs: a CUDA grid holds at most "
                         f"{MAX_GRID_X} along dimension 0")
    return (n,)
