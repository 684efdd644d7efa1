"""Convolution kernel of a companion-matrix SSM (SpaceTime).

    K[i, k] = c[i]ᵀ A_i^k b[i],   k = 0 .. L-1,   A_i = S + a[i] e_dᵀ

with S the lower shift matrix (S[j+1, j] = 1): the last column of A_i is a[i] (plus the
shift), so its characteristic polynomial is z^d - Σ_j a[i, j] z^j and a holds AR coefficients.
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels._empty import with_zero_grads
from kernels._length import check_length
from kernels.companion_kernel.blocked import companion_kernel_blocked, krylov_blocked
from kernels.companion_kernel.compiled import PATHS, companion_kernel_compiled
from kernels.companion_kernel.pytorch import METHODS, companion_kernel_torch, power_row
from kernels.companion_kernel.reference import (
    companion_kernel_reference,
    companion_kernel_squaring,
    companion_matrix,
    krylov_squaring,
)

_IMPLEMENTATIONS = {"torch": companion_kernel_torch, "reference": companion_kernel_reference}

if triton_installed():  # else the op keeps its "torch" and "reference" backends
    _IMPLEMENTATIONS["triton"] = PATHS["triton"]


def companion_kernel(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    L: int,
    backend: str | None = None,
    method: str = "fft",
) -> torch.Tensor:
    """Kernel ``K[i, k] = c[i]ᵀ A_i^k b[i]`` of n companion SSMs, for k < L.

    Args:
        a: real (n, d), the learned last columns of the companion matrices A_i = S + a[i] e_dᵀ.
        b: real (n, d), input vectors.
        c: real (n, d), output vectors.
        L: kernel length, >= 0 (L < d is fine).
        backend: None (by device: Triton on CUDA where triton is installed, else "torch"),
            "triton" (the spectral combination as one fused kernel, the FFTs in torch; CPU
            tensors need TRITON_INTERPRET=1), "torch" or "reference" (the recurrence
            x_{k+1} = A x_k with dense A, O(n d² L)).
        method: for "torch" and "triton": "fft" (SpaceTime's generating function at the L-th
            roots of unity with Sherman–Morrison, O((d + L) log(d + L)); rows with an
            eigenvalue at a root of unity fall back to "series") or "series" (the kernel as a
            power series P/Q_rev with Newton inversion, same cost, computed in float64). With either, rows with
            ||a||_1 above 2 (float32; 4 in float64), where both formulas cancel large terms,
            or with a spectral radius >= 1, where their rounding grows like the kernel, are
            computed by a blocked recurrence in float64, O(d² L).

    Returns:
        real (n, L) in the dtype of the inputs (float16/bfloat16 are computed in float32).
    """
    for name, t in (("a", a), ("b", b), ("c", c)):
        if not torch.is_tensor(t):
            raise TypeError(f"companion_kernel: {name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"companion_kernel: {name} must be a real floating-point tensor, got {t.dtype}")
    if a.dim() != 2 or a.shape[-1] < 1 or b.shape != a.shape or c.shape != a.shape:
        raise ValueError(
            "companion_kernel: expected a, b, c of one shape (n, d) with d >= 1, "
            f"got a {tuple(a.shape)}, b {tuple(b.shape)}, c {tuple(c.shape)}"
        )
    if not a.dtype == b.dtype == c.dtype:
        raise TypeError(f"companion_kernel: a, b, c must share a dtype, got {a.dtype}, {b.dtype}, {c.dtype}")
    check_length(L, "companion_kernel")
    if method not in METHODS:
        raise ValueError(f"companion_kernel: method must be one of {sorted(METHODS)}, got {method!r}")
    fn = select_backend("companion_kernel", _IMPLEMENTATIONS, backend, a, b, c)
    if L == 0:  # empty, but in the graph: zero gradients for a, b, c
        return with_zero_grads(a.new_zeros(a.shape[0], 0), a, b, c)
    # no rows: the FFT libraries reject empty batches; meta tensors: the fast path's choice
    # of method per row needs values
    if fn is companion_kernel_reference or a.shape[0] == 0 or a.is_meta:
        fn = companion_kernel_reference
    if fn is companion_kernel_reference:
        K = fn(a, b, c, int(L))
    elif torch.compiler.is_compiling():  # the fast paths' choice of formula per row needs values
        K = companion_kernel_compiled(a, b, c, int(L), method, "triton" if fn is PATHS["triton"] else "torch")
    else:
        K = fn(a, b, c, int(L), method=method)
    return with_zero_grads(K, a) if L == 1 else K  # K_0 = cᵀb: a's gradient is zero, not none


__all__ = [
    "companion_kernel", "companion_kernel_blocked", "companion_kernel_reference", "companion_kernel_squaring",
    "companion_kernel_torch", "companion_matrix", "krylov_blocked", "krylov_squaring", "power_row",
]
