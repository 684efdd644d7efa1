"""SoftSort: a differentiable relaxation of the permutation that sorts a score vector."""

from __future__ import annotations

import torch


def soft_sort(scores: torch.Tensor, tau: float = 1.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Soft permutation matrix that sorts ``scores`` in descending order.

        P[..., r, c] = softmax_c( -|scores[..., c] - sort_desc(scores)[..., r]| / tau )

    Args:
        scores: (..., L) real scores.
        tau: temperature > 0. As tau -> 0, P becomes the hard permutation matrix with
            (P @ v)[r] = v[argsort_desc(scores)[r]] (ties share their rows' weight).
        valid: optional (..., L) bool mask of the entries to sort (e.g. not padding). The
            n valid entries are sorted among themselves into the n valid positions, in
            order: P restricted to valid rows and columns is the soft sort of the valid
            scores alone, and every row and column of an invalid position is 0.

    Returns:
        P, (..., L, L): every (valid) row sums to 1; ``P @ v`` reorders v (..., L, d) by
        descending score.
    """
    if not torch.is_tensor(scores) or scores.dim() < 1 or not scores.is_floating_point():
        raise ValueError("soft_sort: scores must be a real floating-point tensor of shape (..., L)")
    if not tau > 0:
        raise ValueError(f"soft_sort: tau must be > 0, got {tau}")
    if valid is None:
        ordered = scores.sort(dim=-1, descending=True).values
        gaps = (scores.unsqueeze(-2) - ordered.unsqueeze(-1)).abs()  # (..., r, c)
        return torch.softmax(-gaps / tau, dim=-1)
    if valid.shape != scores.shape or valid.dtype != torch.bool:
        raise ValueError(f"soft_sort: valid must be a bool mask of shape {tuple(scores.shape)}")
    # The k-th valid position (rank k = number of valid positions before it) receives the
    # k-th largest valid score; sorting puts the invalid entries (-inf) last.
    ordered_valid = scores.masked_fill(~valid, float("-inf")).sort(dim=-1, descending=True).values
    rank = (valid.long().cumsum(-1) - 1).clamp(min=0)
    ordered = ordered_valid.gather(-1, rank).masked_fill(~valid, 0.0)  # finite in every row
    gaps = (scores.masked_fill(~valid, 0.0).unsqueeze(-2) - ordered.unsqueeze(-1)).abs()
    logits = (-gaps / tau).masked_fill(~valid.unsqueeze(-2), float("-inf"))
    rows = valid.unsqueeze(-1)
    return torch.softmax(logits.masked_fill(~rows, 0.0), dim=-1) * rows
