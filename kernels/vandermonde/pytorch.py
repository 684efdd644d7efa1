"""Vandermonde kernel in PyTorch, chunked over L so that peak memory stays bounded.

Forward and backward both walk L in chunks of ``c`` positions, so the largest temporary is
(H, N, c) complex; autograd never stores an (H, N, L) tensor. Inside a chunk the powers
exp(x l) are built as exp(x (l0 + j b)) · exp(x r) with l = l0 + j b + r, which needs
about 2·sqrt(c) complex exponentials per mode instead of c.
"""

from __future__ import annotations

import math

import torch

_CHUNK_ELEMENTS = 1 << 21  # complex entries per temporary (H, N, c) block


def _chunk_size(H: int, N: int, L: int) -> int:
    return max(1, min(L, _CHUNK_ELEMENTS // max(1, H * N)))


def _powers(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """exp(x[h, n] * l) for l in [start, stop): (H, N, stop - start)."""
    length = stop - start
    block = max(1, math.isqrt(length))
    n_blocks = -(-length // block)
    real = x.real.dtype
    inner = torch.exp(x.unsqueeze(-1) * torch.arange(block, device=x.device, dtype=real))
    offsets = start + block * torch.arange(n_blocks, device=x.device, dtype=real)
    outer = torch.exp(x.unsqueeze(-1) * offsets)
    powers = (outer.unsqueeze(-1) * inner.unsqueeze(-2)).flatten(-2)
    return powers[..., :length]


def _forward(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """v (C, H, N), x (H, N) -> (C, H, L)."""
    C, H, N = v.shape
    out = torch.empty(H, C, L, dtype=v.real.dtype, device=v.device)
    c = _chunk_size(H, N, L)
    vh = v.transpose(0, 1)  # (H, C, N)
    for start in range(0, L, c):
        stop = min(L, start + c)
        out[:, :, start:stop] = 2 * torch.matmul(vh, _powers(x, start, stop)).real
    return out.transpose(0, 1)


class _Vandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, x, L):
        ctx.save_for_backward(v, x)
        ctx.L = L
        return _forward(v, x, L)

    @staticmethod
    def backward(ctx, grad):
        # K_l = 2 Re(v e^{x l});  dK/dv -> 2 conj(e^{xl}),  dK/dx -> 2 conj(v l e^{xl}).
        v, x = ctx.saved_tensors
        L = ctx.L
        C, H, N = v.shape
        g_all = grad.to(v.dtype).transpose(0, 1)  # (H, C, L)
        s0 = torch.zeros(H, C, N, dtype=v.dtype, device=v.device)
        s1 = torch.zeros_like(s0)
        c = _chunk_size(H, N, L)
        for start in range(0, L, c):
            stop = min(L, start + c)
            E = _powers(x, start, stop).transpose(-1, -2)  # (H, c, N)
            g = g_all[:, :, start:stop]
            l = torch.arange(start, stop, device=v.device, dtype=v.real.dtype)
            s0 += torch.matmul(g, E)
            s1 += torch.matmul(g * l, E)
        s0, s1 = s0.transpose(0, 1), s1.transpose(0, 1)  # (C, H, N)
        grad_v = 2 * s0.conj() if ctx.needs_input_grad[0] else None
        grad_x = 2 * (v * s1).sum(0).conj() if ctx.needs_input_grad[1] else None
        return grad_v, grad_x, None


def vandermonde_torch(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Chunked PyTorch path of :func:`kernels.vandermonde` (same contract)."""
    if v.dim() == 2:
        return _Vandermonde.apply(v.unsqueeze(0), x, L).squeeze(0)
    return _Vandermonde.apply(v, x, L)
