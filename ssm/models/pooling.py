"""Sequence pooling (B, L, H) -> (B, H) (or (B, K, H) for "last_k"), aware of right padding
through ``lengths``."""

from __future__ import annotations

import torch

from ssm.layers._checks import require
from ssm.padding import check_lengths, padding_mask

POOLINGS = ("mean", "last", "last_k")


def pool(x: torch.Tensor, lengths: torch.Tensor | None = None, mode: str = "mean", k: int = 1) -> torch.Tensor:
    """Mean over the first ``lengths[b]`` steps, the step at ``lengths[b] - 1``, or the last
    ``k`` valid steps (for tasks with one prediction at each of the last k positions).

    Args:
        x: (B, L, H).
        lengths: optional (B,) valid lengths in [1, L]; None means every sequence has length L.
        mode: "mean", "last" ((B, H)) or "last_k" ((B, k, H); needs lengths >= k).
        k: number of final steps kept by "last_k".
    """
    if mode not in POOLINGS:
        raise ValueError(f"pool: mode must be one of {POOLINGS}, got {mode!r}")
    if not torch.is_tensor(x) or x.dim() != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"pool: expected x of shape (batch, length, channels), got {shape}")
    if mode == "last_k" and (isinstance(k, bool) or not isinstance(k, int)):
        raise ValueError(f"pool: k must be a positive integer, got {k!r}")
    B, L, _ = x.shape
    if L == 0:
        raise ValueError("pool: the sequences are empty (L = 0); there is nothing to pool")
    check_lengths(lengths, B, L, "pool")
    if mode == "last_k":
        if not 1 <= k <= L:
            raise ValueError(f"pool: last_k needs 1 <= k <= L = {L}, got k = {k}")
        if lengths is None:
            return x[:, L - k :]
        if B:
            require((lengths >= k).all(), ValueError,
                    f"pool: expected lengths of shape ({B},) with values in [{k}, {L}]")
        steps = lengths.to(x.device)[:, None] - k + torch.arange(k, device=x.device)[None, :]  # (B, k)
        return x[torch.arange(B, device=x.device)[:, None], steps]
    if lengths is None:
        return x.mean(1) if mode == "mean" else x[:, -1]
    lengths = lengths.to(x.device)
    if mode == "last":
        return x[torch.arange(B, device=x.device), lengths - 1]
    mask = padding_mask(lengths, L, x.device).to(x.dtype)
    return (x * mask).sum(1) / lengths.unsqueeze(-1).to(x.dtype)
