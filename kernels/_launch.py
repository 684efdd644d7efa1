"""What every Triton launcher shares."""

from __future__ import annotations

import contextlib

import torch


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s GPU the current device for a launch: Triton launches on the current device
    and its current stream, not on the tensors' device (a model on cuda:1 while cuda:0 is
    current). A no-op for CPU tensors (the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
