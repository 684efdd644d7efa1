"""FFT convolution in PyTorch: one rfft of length 2L per operand, autograd by torch.fft."""

from __future__ import annotations

import torch


def _two_sided(k: torch.Tensor) -> torch.Tensor:
    """(2, H, L) forward/backward kernels -> the (H, 2L) circular kernel [k0, reverse(k1)]."""
    return torch.cat([k[0], k[1].flip(-1)], dim=-1)


def fftconv_torch(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """y = irfft(rfft(u, 2L) · rfft(k, 2L))[:L] + D ⊙ u (same contract as :func:`kernels.fftconv`).

    Half-precision inputs are computed in float32 and cast back.
    """
    L = u.shape[-1]
    out_dtype = u.dtype
    compute = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    u_c, k_c = u.to(compute), k.to(compute)
    kernel = _two_sided(k_c) if k.dim() == 3 else k_c
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u_c, n=n) * torch.fft.rfft(kernel, n=n), n=n)[..., :L]
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    return y.to(out_dtype)
