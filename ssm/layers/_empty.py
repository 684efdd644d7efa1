"""Results of empty inputs (a batch, length or image side of 0) that stay in the graph."""

from __future__ import annotations

import torch
from torch import nn

from kernels._empty import with_zero_grads


def zeros_in_graph(u: torch.Tensor, *sources: nn.Module | torch.Tensor) -> torch.Tensor:
    """Zeros of ``u``'s shape and dtype that depend on ``u`` and on every trainable tensor
    of ``sources`` (modules or tensors), so that a backward pass through an empty batch
    gives them zero gradients instead of none (which DDP reports as unused parameters)."""
    tensors = [t for s in sources for t in (s.parameters() if isinstance(s, nn.Module) else [s])]
    return with_zero_grads(torch.zeros_like(u), u, *tensors)
