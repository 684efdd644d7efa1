"""Long convolution of an LTI SSM: the kernel K applied to the input by FFT.

    y[b, h, t] = sum_{s<=t} k[h, s] u[b, h, t-s] + D[h] u[b, h, t]

Zero-padding to an FFT length n >= 2L makes the circular convolution causal; any L >= 1 works.
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels._empty import with_zero_grads
from kernels.fftconv.pytorch import fftconv_torch
from kernels.fftconv.reference import fftconv_reference
from kernels.fftconv.triton_op import fftconv_triton

_IMPLEMENTATIONS = {"torch": fftconv_torch, "reference": fftconv_reference}
if triton_installed():  # the Triton kernel is optional: `import kernels` works without triton
    _IMPLEMENTATIONS["triton"] = fftconv_triton


def fftconv(
    u: torch.Tensor,
    k: torch.Tensor,
    D: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Causal convolution of ``u`` with ``k`` plus the skip ``D ⊙ u``.

    Args:
        u: real (B, H, L) input.
        k: real (H, L) causal kernel, or (2, H, L) for a two-sided (bidirectional) kernel:
            ``k[0]`` acts on the past and present, ``k[1]`` on the future,
            ``y[t] += sum_{s>t} k[1, s-t-1] u[s]``.
        D: optional real (H,) skip, in u's dtype or a wider one (e.g. a float32 skip
            parameter with float16 u); the skip is added in u's dtype.
        backend: None (by device), "triton" (DFT by matrix products; L > 4096 and float64
            go to "torch"), "torch" or "reference" (direct O(L^2) product).

    Returns:
        (B, H, L) in ``u``'s dtype.
    """
    if not torch.is_tensor(u) or u.dim() != 3:
        raise ValueError(f"fftconv: expected u of shape (B, H, L), got {_shape(u)}")
    _, H, L = u.shape
    if not torch.is_tensor(k) or k.shape not in ((H, L), (2, H, L)):
        raise ValueError(
            f"fftconv: expected k of shape ({H}, {L}) or (2, {H}, {L}) to match u {tuple(u.shape)}, "
            f"got {_shape(k)}"
        )
    if not (u.is_floating_point() and k.is_floating_point()):
        raise TypeError(f"fftconv: u and k must be real floating-point tensors, got {u.dtype} and {k.dtype}")
    if u.dtype != k.dtype:
        raise TypeError(f"fftconv: u and k must share a dtype, got {u.dtype} and {k.dtype}")
    if D is not None and (not torch.is_tensor(D) or D.shape != (H,)):
        raise ValueError(f"fftconv: expected D of shape ({H},), got {_shape(D)}")
    if D is not None and not D.is_floating_point():
        raise TypeError(f"fftconv: D must be a real floating-point tensor, got {D.dtype}")
    fn = select_backend("fftconv", _IMPLEMENTATIONS, backend, u, k, *(() if D is None else (D,)))
    if u.numel() == 0:  # an empty batch or sequence: nothing to transform; zero gradients for all
        return with_zero_grads(torch.zeros_like(u), u, k, D)
    return fn(u, k, D)


def _shape(t) -> str:
    return str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__


__all__ = ["fftconv", "fftconv_reference", "fftconv_torch"]
