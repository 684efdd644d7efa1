"""Vandermonde kernel of a diagonal SSM.

    K[h, l] = 2 Re sum_n v[h, n] exp(x[h, n] * l),    l = 0 .. L-1

with x = Δ·A (discrete log-eigenvalues) and v = C·B̄ (folded output/input weights). Several
output maps can share one set of modes: v of shape (C, H, N) gives K of shape (C, H, L).
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels._empty import with_zero_grads
from kernels._length import check_length
from kernels.vandermonde.pytorch import vandermonde_torch
from kernels.vandermonde.reference import vandermonde_reference
from kernels.vandermonde.triton_op import vandermonde_triton

_IMPLEMENTATIONS = {"torch": vandermonde_torch, "reference": vandermonde_reference}

if triton_installed():  # else the op keeps its "torch" and "reference" backends
    _IMPLEMENTATIONS["triton"] = vandermonde_triton


def vandermonde(
    v: torch.Tensor, x: torch.Tensor, L: int, backend: str | None = None
) -> torch.Tensor:
    """Vandermonde kernel ``K = 2 Re(v · exp(x ⊗ arange(L)))``.

    Args:
        v: complex (H, N), the mode coefficients (C·B̄); or (C, H, N) for C coefficient
            sets over the same modes (e.g. the two directions of a bidirectional layer).
        x: complex (H, N), the discrete log-eigenvalues (Δ·A).
        L: kernel length, >= 0.
        backend: None (by device: Triton on CUDA where triton is installed, else "torch"),
            "triton" (fused kernels, memory O(C·H·L); CPU tensors need TRITON_INTERPRET=1),
            "torch" (chunked, memory O(H·N·chunk)) or "reference".

    Returns:
        real (H, L), or (C, H, L), in the real dtype of ``v`` (float32 for complex64).
    """
    if not (torch.is_tensor(v) and torch.is_tensor(x)):
        raise TypeError("vandermonde: v and x must be tensors")
    if not (v.is_complex() and x.is_complex()):
        raise TypeError(f"vandermonde: v and x must be complex, got {v.dtype} and {x.dtype}")
    if v.dtype != x.dtype:
        raise TypeError(f"vandermonde: v and x must share a dtype, got {v.dtype} and {x.dtype}")
    if v.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"vandermonde: v and x must be complex64 or complex128, got {v.dtype} (convert with "
                        ".to(torch.complex64))")
    if x.dim() != 2 or v.dim() not in (2, 3) or v.shape[-2:] != x.shape:
        raise ValueError(
            "vandermonde: expected x of shape (H, N) and v of shape (H, N) or (C, H, N), "
            f"got v {tuple(v.shape)} and x {tuple(x.shape)}"
        )
    check_length(L, "vandermonde")
    fn = select_backend("vandermonde", _IMPLEMENTATIONS, backend, v, x)
    K = fn(v, x, int(L))
    return with_zero_grads(K, v, x) if L <= 1 else K  # K_0 = 2 Re Σ v has no x: zero gradient, not none


__all__ = ["vandermonde", "vandermonde_reference", "vandermonde_torch"]
