"""Reference companion kernels: the definition by powers, and SpaceTime's squaring Krylov.

Both build the dense companion matrix A = S + a e_dᵀ (S the lower shift, S[i+1, i] = 1)
explicitly, so each can be read off the definition K[i, k] = c[i]ᵀ A_i^k b[i].
"""

from __future__ import annotations

import torch


def companion_matrix(a: torch.Tensor) -> torch.Tensor:
    """Dense A = S + a e_dᵀ for a of shape (n, d): (n, d, d), A[:, j+1, j] = 1, A[:, :, d-1] += a."""
    n, d = a.shape
    shift = torch.diag(torch.ones(d - 1, dtype=a.dtype, device=a.device), -1)
    A = shift.expand(n, d, d).clone()
    A[:, :, d - 1] = A[:, :, d - 1] + a
    return A


def companion_kernel_reference(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """K[i, k] = c[i]ᵀ A_i^k b[i] for k < L, by the sequential recurrence x_{k+1} = A x_k, x_0 = b.

    a, b, c: (n, d). Returns (n, L). O(n d² L); meant for tests (float64 gives an exact oracle).
    """
    A = companion_matrix(a)
    x = b
    out = []
    for _ in range(L):
        out.append((c * x).sum(-1))
        x = torch.einsum("nij,nj->ni", A, x)
    if not out:
        return torch.zeros(a.shape[0], 0, dtype=a.dtype, device=a.device)
    return torch.stack(out, dim=-1)


def krylov_squaring(a: torch.Tensor, b: torch.Tensor, L: int) -> torch.Tensor:
    """Columns A_i^k b[i] for k < L, (n, d, L), by repeated squaring: starting from X = [b]
    and P = A, repeat X ← [X, P X], P ← P² until X has L columns. O(n (d³ log L + d² L))."""
    X = b.unsqueeze(-1)  # (n, d, m): columns A^k b, k < m
    P = companion_matrix(a)
    while X.shape[-1] < L:
        X = torch.cat([X, P @ X], dim=-1)
        P = P @ P
    return X[..., :L]


def companion_kernel_squaring(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """The same kernel by Krylov with repeated squaring (the algorithm SpaceTime's layers run):
    cᵀ [b, A b, A² b, ...] from :func:`krylov_squaring`. O(n (d³ log L + d² L)); a baseline for
    the benchmarks, a second oracle in the tests, and the fast path's route for rows whose
    large coefficients defeat its spectral formulas.
    """
    return torch.einsum("nd,ndk->nk", c, krylov_squaring(a, b, L))
