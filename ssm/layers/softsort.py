"""SoftSort: a differentiable relaxation of the permutation that sorts a score vector."""

from __future__ import annotations

import torch


def soft_sort(scores: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Soft permutation matrix that sorts ``scores`` in descending order.

        P[..., r, c] = softmax_c( -|scores[..., c] - sort_desc(scores)[..., r]| / tau )

    Args:
        scores: (..., L) real scores.
        tau: temperature > 0. As tau -> 0, P becomes the hard permutation matrix with
            (P @ v)[r] = v[argsort_desc(scores)[r]] (ties share their rows' weight).

    Returns:
        P, (..., L, L): every row sums to 1; ``P @ v`` reorders v (..., L, d) by descending score.
    """
    if not torch.is_tensor(scores) or scores.dim() < 1 or not scores.is_floating_point():
        raise ValueError("soft_sort: scores must be a real floating-point tensor of shape (..., L)")
    if not tau > 0:
        raise ValueError(f"soft_sort: tau must be > 0, got {tau}")
    ordered = scores.sort(dim=-1, descending=True).values
    gaps = (scores.unsqueeze(-2) - ordered.unsqueeze(-1)).abs()  # (..., r, c)
    return torch.softmax(-gaps / tau, dim=-1)
