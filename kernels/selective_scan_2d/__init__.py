"""2D selective scan (2DMamba's row-then-column recurrence) over (Hgt, Wdt) images: per
batch row, channel d and state n, with Ā[i, j] = exp(Δ[i, j] A[d, n]),

    Δ = softplus(delta + delta_bias)                     (softplus only with delta_softplus)
    g[i, j] = Ā[i, j] g[i, j-1] + Δ[i, j] B[i, j] u[i, j]    (row pass, left to right)
    h[i, j] = Ā[i, j] h[i-1, j] + g[i, j]                    (column pass, top to bottom)
    out = (Σ_n C[i, j] h[i, j] + D u) · silu(z)

so h[i, j] = Σ_{i'≤i, j'≤j} (Π_{k=i'+1..i} Ā[k, j]) (Π_{l=j'+1..j} Ā[i', l]) Δ B u[i', j']:
every pixel of the upper-left quadrant reaches (i, j) along one path, right then down. (This
is not the all-paths recurrence h = Ā h[i, j-1] + Ā h[i-1, j] + b, a different operator.)
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels._empty import with_zero_grads
from kernels._groups import common_groups
from kernels.selective_scan_2d.pytorch import selective_scan_2d_torch
from kernels.selective_scan_2d.reference import selective_scan_2d_reference
from kernels.selective_scan_2d.triton_op import selective_scan_2d_triton

_IMPLEMENTATIONS = {"torch": selective_scan_2d_torch, "reference": selective_scan_2d_reference}

if triton_installed():  # else the op keeps its "torch" and "reference" backends
    _IMPLEMENTATIONS["triton"] = selective_scan_2d_triton

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def selective_scan_2d(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Row-then-column selective scan (module docstring).

    Args:
        u: (B, D, Hgt, Wdt) input, float16 / bfloat16 / float32 / float64.
        delta: (B, D, Hgt, Wdt) raw step sizes (before ``delta_bias`` and softplus).
        A: (D, N) real state matrix diagonal (the layers pass -exp(A_log)).
        B, C: (B, N, Hgt, Wdt), or (B, G, N, Hgt, Wdt) with G dividing D: channel d reads
            group d // (D / G). B and C may have different G.
        D: optional (D,) skip; z: optional (B, D, Hgt, Wdt) gate; delta_bias: optional (D,).
        delta_softplus: apply softplus to delta (+ bias).
        backend: None (by device: Triton on CUDA, else "torch"), "triton" (row tiles with
            tl.associative_scan; CPU tensors need TRITON_INTERPRET=1), "torch" (a loop over
            columns, then rows, each step vectorized over a block of batch rows and channels)
            or "reference" (pixel by pixel).

    Returns:
        (B, D, Hgt, Wdt) in u's dtype, computed in float32 (float64 for float64 inputs).
        Every tensor input is differentiable.
    """
    name = "selective_scan_2d"
    for arg, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name}: {arg} must be a tensor, got {type(t).__name__}")
    if u.dim() != 4:
        raise ValueError(f"{name}: expected u of shape (B, D, Hgt, Wdt), got {tuple(u.shape)}")
    Bsz, Dm, H, W = u.shape
    if u.dtype not in _FLOATS:
        raise TypeError(f"{name}: u must be one of {_FLOATS}, got {u.dtype}")
    if A.is_complex():
        raise TypeError(f"{name}: A must be real (complex A is not supported by the 2D scan), got {A.dtype}")
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ValueError(f"{name}: expected A of shape (D, N) with D = {Dm}, got {tuple(A.shape)}")
    N = A.shape[1]
    for arg, t, shape, pattern in (
        ("delta", delta, (Bsz, Dm, H, W), "(B, D, Hgt, Wdt)"), ("z", z, (Bsz, Dm, H, W), "(B, D, Hgt, Wdt)"),
        ("D", D, (Dm,), "(D,)"), ("delta_bias", delta_bias, (Dm,), "(D,)"),
    ):
        if t is None:
            continue
        if not torch.is_tensor(t):
            raise TypeError(f"{name}: {arg} must be a tensor of shape {pattern} = {shape}, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected {arg} of shape {pattern} = {shape}, got {tuple(t.shape)}")
        if t.dtype not in _FLOATS:
            raise TypeError(f"{name}: {arg} must be real floating point, got {t.dtype}")
    if A.dtype not in _FLOATS:
        raise TypeError(f"{name}: A must be real floating point, got {A.dtype}")
    B, C = common_groups(_grouped(B, "B", Bsz, Dm, N, H, W), _grouped(C, "C", Bsz, Dm, N, H, W))
    fn = select_backend(name, _IMPLEMENTATIONS, backend, u, delta, A, B, C, D, z, delta_bias)
    out = fn(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
    if u.numel() == 0:  # zero gradients, not none, for the inputs an empty scan never reads
        out = with_zero_grads(out, u, delta, A, B, C, D, z, delta_bias)
    return out


def _grouped(M, arg, Bsz, Dm, N, H, W):
    """B / C as (B, G, N, Hgt, Wdt)."""
    given = tuple(M.shape)  # as passed, for the message
    if M.dim() == 4:
        M = M.unsqueeze(1)
    if M.dim() != 5 or M.shape[0] != Bsz or M.shape[2:] != (N, H, W) or M.shape[1] < 1 or Dm % M.shape[1]:
        raise ValueError(
            f"selective_scan_2d: expected {arg} of shape (B, N, Hgt, Wdt) = ({Bsz}, {N}, {H}, {W}) or "
            f"(B, G, N, Hgt, Wdt) with G dividing D = {Dm}, got {given}"
        )
    if M.is_complex() or M.dtype not in _FLOATS:
        raise TypeError(f"selective_scan_2d: {arg} must be real floating point, got {M.dtype}")
    return M


__all__ = ["selective_scan_2d", "selective_scan_2d_reference", "selective_scan_2d_torch"]
