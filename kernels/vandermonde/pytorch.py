"""Vandermonde kernel in PyTorch, chunked over L so that peak memory stays bounded.

Forward and backward both walk L in chunks of ``c`` positions, so the largest temporary is
(H, N, c) complex; autograd never stores an (H, N, L) tensor.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 21  # complex entries per temporary (H, N, c) block


def _chunk_size(H: int, N: int, L: int) -> int:
    return max(1, min(L, _CHUNK_ELEMENTS // max(1, H * N)))


def _powers(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """exp(x[h, n] * l) for l in [start, stop): (H, N, stop - start)."""
    l = torch.arange(start, stop, device=x.device, dtype=x.real.dtype)
    return torch.exp(x.unsqueeze(-1) * l)


def _forward(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    H, N = v.shape
    out = torch.empty(H, L, dtype=v.real.dtype, device=v.device)
    c = _chunk_size(H, N, L)
    vr = v.unsqueeze(1)  # (H, 1, N)
    for start in range(0, L, c):
        stop = min(L, start + c)
        out[:, start:stop] = 2 * torch.matmul(vr, _powers(x, start, stop)).squeeze(1).real
    return out


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
        H, N = v.shape
        grad = grad.to(v.real.dtype)
        s0 = torch.zeros_like(v)
        s1 = torch.zeros_like(v)
        c = _chunk_size(H, N, L)
        for start in range(0, L, c):
            stop = min(L, start + c)
            E = _powers(x, start, stop)  # (H, N, c)
            g = grad[:, start:stop].to(v.dtype)
            l = torch.arange(start, stop, device=v.device, dtype=v.real.dtype)
            s0 += torch.matmul(E, g.unsqueeze(-1)).squeeze(-1)
            s1 += torch.matmul(E, (g * l).unsqueeze(-1)).squeeze(-1)
        grad_v = 2 * s0.conj() if ctx.needs_input_grad[0] else None
        grad_x = 2 * (v * s1).conj() if ctx.needs_input_grad[1] else None
        return grad_v, grad_x, None


def vandermonde_torch(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Chunked PyTorch path of :func:`kernels.vandermonde` (same contract)."""
    return _Vandermonde.apply(v, x, L)
