"""FFT convolution in PyTorch: zero-padded rfft of length n >= 2L, autograd by torch.fft.

n is the smallest 2^a 3^b 5^c >= 2L: any n >= 2L - 1 keeps the circular convolution from
wrapping around, and such lengths avoid the slow prime-size FFT paths (L = 1873 would
otherwise need an FFT of the prime-factor length 3746).
"""

from __future__ import annotations

import torch

from kernels._compile import cached_outside_compile


@cached_outside_compile(maxsize=None)
def fft_length(L: int) -> int:
    """Smallest 5-smooth integer >= 2L (1 for L = 0)."""
    n = max(2 * L, 1)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def circular_kernel(k: torch.Tensor, n: int) -> torch.Tensor:
    """(H, L) -> zero-padded to n; (2, H, L) -> [k0, 0, ..., 0, reverse(k1)] of length n
    (also (2, ..., L) -> (..., n), e.g. one two-sided kernel per sequence)."""
    if k.dim() == 2:
        return k
    L = k.shape[-1]
    gap = k.new_zeros(*k.shape[1:-1], n - 2 * L)
    return torch.cat([k[0], gap, k[1].flip(-1)], dim=-1)


def fftconv_torch(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """y = irfft(rfft(u, n) · rfft(k, n))[:L] + D ⊙ u (same contract as :func:`kernels.fftconv`).

    Half-precision inputs are computed in float32 and cast back.
    """
    L = u.shape[-1]
    out_dtype = u.dtype
    compute = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    u_c, k_c = u.to(compute), k.to(compute)
    n = fft_length(L)
    kernel_f = torch.fft.rfft(circular_kernel(k_c, n), n=n)
    y = torch.fft.irfft(torch.fft.rfft(u_c, n=n) * kernel_f, n=n)[..., :L]
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    return y.to(out_dtype)
