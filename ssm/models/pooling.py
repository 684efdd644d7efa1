"""Sequence pooling (B, L, H) -> (B, H), aware of right padding through ``lengths``."""

from __future__ import annotations

import torch

POOLINGS = ("mean", "last")


def pool(x: torch.Tensor, lengths: torch.Tensor | None = None, mode: str = "mean") -> torch.Tensor:
    """Mean over the first ``lengths[b]`` steps, or the step at ``lengths[b] - 1``.

    Args:
        x: (B, L, H).
        lengths: optional (B,) valid lengths in [1, L]; None means every sequence has length L.
        mode: "mean" or "last".
    """
    if mode not in POOLINGS:
        raise ValueError(f"pool: mode must be one of {POOLINGS}, got {mode!r}")
    B, L, _ = x.shape
    if lengths is None:
        return x.mean(1) if mode == "mean" else x[:, -1]
    if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > L:
        raise ValueError(f"pool: expected lengths of shape ({B},) with values in [1, {L}]")
    lengths = lengths.to(x.device)
    if mode == "last":
        return x[torch.arange(B, device=x.device), lengths - 1]
    mask = torch.arange(L, device=x.device)[None, :] < lengths[:, None]
    return (x * mask.unsqueeze(-1).to(x.dtype)).sum(1) / lengths.unsqueeze(-1).to(x.dtype)
