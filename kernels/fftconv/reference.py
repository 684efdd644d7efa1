"""Reference causal (and two-sided) convolution as an explicit Toeplitz product, O(L^2)."""

from __future__ import annotations

import torch


def _banded(k: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """T[h, t, s] = k[h, lag[t, s]] where lag >= 0, else 0: (H, L, L)."""
    taps = k[:, lag.clamp(min=0)]
    return torch.where(lag >= 0, taps, torch.zeros((), dtype=k.dtype, device=k.device))


def fftconv_reference(
    u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None
) -> torch.Tensor:
    """Direct convolution: the oracle for :func:`kernels.fftconv`.

    Causal, k (H, L):          y[b,h,t] = sum_{s<=t} k[h, t-s] u[b,h,s] + D[h] u[b,h,t]
    Two-sided, k (2, H, L):    adds sum_{s>t} k[1, h, s-t-1] u[b,h,s]
    """
    L = u.shape[-1]
    t = torch.arange(L, device=u.device)
    lag = t[:, None] - t[None, :]  # t - s
    if k.dim() == 3:
        T = _banded(k[0], lag) + _banded(k[1], -lag - 1)
    else:
        T = _banded(k, lag)
    y = torch.einsum("hts,bhs->bht", T, u)
    if D is not None:
        y = y + D.to(u.dtype)[:, None] * u
    return y
