"""Results of empty inputs (a batch, length or image side of 0) that stay in the graph."""

from __future__ import annotations

import torch
from torch import nn


def zeros_in_graph(u: torch.Tensor, *sources: nn.Module | torch.Tensor) -> torch.Tensor:
    """Zeros of ``u``'s shape and dtype that depend on ``u`` and on every trainable tensor
    of ``sources`` (modules or tensors), so that a backward pass through an empty batch
    gives them zero gradients instead of none (which DDP reports as unused parameters)."""
    out = u * 0
    for source in sources:
        tensors = source.parameters() if isinstance(source, nn.Module) else [source]
        for t in tensors:
            if t.requires_grad:
                out = out + (t.sum() * 0).real.to(out.dtype)
    return out
