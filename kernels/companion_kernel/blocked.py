"""Krylov columns A^k b of a companion matrix by a blocked recurrence, in float64: the route
of the rows that the spectral formulas cannot compute accurately (large ||a||_1, or a
spectral radius >= 1).

With m the block length, the first block X_0 = [b, A b, ..., A^{m-1} b] and T = A^m come
from m steps of the recurrence x ← A x on [b | I] (A x = S x + a x_{d-1}, O(d) per column),
and the others from X_j = T X_{j-1}: m + L/m sequential steps, O(d² L) work per row.

Unlike repeated squaring (P ← P², whose rounding scales with ||A||^{2^j} rather than with
||A^{2^j}||, so a stable A with ||a||_1 in the tens already loses every digit in float32),
every product here is one of the recurrence's own powers, whose rounding grows like the
norms of the powers A^k themselves. Computing in float64 also keeps T finite where
float32's range ends: m is chosen so that (1 + ||a||_1)^m stays below 1e250.
"""

from __future__ import annotations

import math

import torch

from kernels.companion_kernel.reference import companion_matrix

# Rows at or above it grow (or come within rounding of it), and the spectral formulas'
# rounding grows with them like ρ^L.
SPECTRAL_RADIUS_LIMIT = 1.0 - 1e-6


def _times_companion(a: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """A X for A = S + a e_dᵀ: a (n, d), X (n, d, m) -> (n, d, m)."""
    shifted = torch.cat([torch.zeros_like(X[:, :1]), X[:, :-1]], dim=1)
    return shifted + a.unsqueeze(-1) * X[:, -1:, :]


def block_length(a: torch.Tensor, L: int) -> int:
    """About sqrt(L), fewer where (1 + ||a||_1)^m would leave float64's safe range."""
    growth = 1.0 + float(a.detach().abs().sum(-1).max()) if a.numel() else 1.0
    cap = max(1, int(250 / math.log10(growth))) if growth > 1.0 else L
    return max(1, min(L, math.isqrt(max(L - 1, 0)) + 1, cap))


def krylov_blocked(a: torch.Tensor, b: torch.Tensor, L: int) -> torch.Tensor:
    """Columns A_i^k b[i] for k < L: (n, d, L) in float64, for a, b (n, d). Differentiable."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    n, d = a.shape
    m = block_length(a, L)  # >= 1: at L = 0 one column is built and cut away
    eye = torch.eye(d, dtype=a.dtype, device=a.device).expand(n, d, d)
    Y = torch.cat([b.unsqueeze(-1), eye], dim=-1)  # (n, d, 1 + d): [A^k b | A^k]
    columns = []
    for _ in range(m):
        columns.append(Y[:, :, 0])
        Y = _times_companion(a, Y)
    blocks = [torch.stack(columns, dim=-1)]
    power = Y[:, :, 1:]  # T = A^m
    while len(blocks) * m < L:
        blocks.append(power @ blocks[-1])
    return torch.cat(blocks, dim=-1)[..., :L]


def companion_kernel_blocked(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """K[i, k] = c[i]ᵀ A_i^k b[i], (n, L), from :func:`krylov_blocked`; float64 result."""
    return torch.einsum("nd,ndk->nk", c.to(torch.float64), krylov_blocked(a, b, L))


def spectral_radius_at_least_one(a: torch.Tensor) -> torch.Tensor:
    """Rows (n,) bool of a (n, d) with ρ(S + a e_dᵀ) >= ``SPECTRAL_RADIUS_LIMIT``.
    ||a||_1 <= 1 implies ρ <= 1 (|z| > 1 gives |Σ_j a_j z^j| < |z|^d), so only rows with
    ||a||_1 > 1 take an eigenvalue computation (float64, detached)."""
    a = a.detach()
    rows = torch.zeros(a.shape[0], dtype=torch.bool, device=a.device)
    unknown = a.abs().sum(-1) > 1
    if bool(unknown.any()):
        eigenvalues = torch.linalg.eigvals(companion_matrix(a[unknown].to(torch.float64)))
        rows[unknown] = eigenvalues.abs().amax(-1) >= SPECTRAL_RADIUS_LIMIT
    return rows
