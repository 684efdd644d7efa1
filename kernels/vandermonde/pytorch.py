"""Vandermonde kernel in PyTorch as batched matrix products, memory O(H·N·sqrt(L) + H·L).

Write l = j·b + r with b ≈ sqrt(L). Then exp(x l) = exp(x j b) · exp(x r), so

    K[h, j b + r] = 2 Re sum_n (v[h, n] exp(x[h, n] j b)) · exp(x[h, n] r)

is a product of an (n_blocks, N) and an (N, b) matrix per channel: a batched GEMM that
never forms the (H, N, L) tensor of powers, forward or backward. L is processed in chunks
so the (H, N, n_blocks) factor stays bounded too.
"""

from __future__ import annotations

import math

import torch

from kernels._compile import FunctionContext, dense, fake_gradients, placeholders, wanted

_CHUNK_ELEMENTS = 1 << 22  # complex entries of the largest temporary factor


def _factors(x: torch.Tensor, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """outer (H, N, n_blocks) = exp(x (start + j b)), inner (H, N, b) = exp(x r), and b.

    The exponents x·l are formed and exponentiated in complex128, then rounded to x's dtype:
    in complex64 the phase Im(x)·l would carry an absolute error ~|Im x|·l·eps, which for a
    long-memory mode (Re x ≈ 0) at l ~ 1e4 costs three digits. The factors are only
    O(H·N·sqrt(L)), so the wide exponentials are cheap."""
    block = max(1, math.isqrt(length))
    n_blocks = -(-length // block)
    wide = x.to(torch.complex128).unsqueeze(-1)
    r = torch.arange(block, device=x.device, dtype=torch.float64)
    offsets = start + block * torch.arange(n_blocks, device=x.device, dtype=torch.float64)
    return torch.exp(wide * offsets).to(x.dtype), torch.exp(wide * r).to(x.dtype), block


def _chunks(H: int, N: int, L: int):
    """(start, stop) pieces of [0, L) whose factors hold at most _CHUNK_ELEMENTS entries."""
    per_position = max(1, _CHUNK_ELEMENTS // max(1, H * N))
    c = max(1, min(L, per_position * per_position // 4))  # n_blocks + b ≈ 2 sqrt(c) per row
    for start in range(0, L, c):
        yield start, min(L, start + c)


def _forward(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """v (C, H, N), x (H, N) -> (C, H, L)."""
    C, H, N = v.shape
    out = torch.empty(C, H, L, dtype=v.real.dtype, device=v.device)
    for start, stop in _chunks(H, N, L):
        outer, inner, _ = _factors(x, start, stop - start)
        left = (v.unsqueeze(-1) * outer).transpose(-1, -2)  # (C, H, n_blocks, N)
        k = torch.matmul(left, inner).real  # (C, H, n_blocks, block)
        out[..., start:stop] = 2 * k.flatten(-2)[..., : stop - start]
    return out


def _gather_modes(g: torch.Tensor, outer: torch.Tensor, inner: torch.Tensor, block: int) -> torch.Tensor:
    """sum_l g[..., l] exp(x l) over a chunk: (C, H, N) for g (C, H, length)."""
    length = g.shape[-1]
    n_blocks = outer.shape[-1]
    g = torch.nn.functional.pad(g, (0, n_blocks * block - length)).unflatten(-1, (n_blocks, block))
    t = torch.matmul(g.to(inner.dtype), inner.transpose(-1, -2))  # (C, H, n_blocks, N)
    return (t * outer.transpose(-1, -2)).sum(-2)


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
        grad = grad.to(v.real.dtype)
        s0 = torch.zeros(C, H, N, dtype=v.dtype, device=v.device)
        s1 = torch.zeros_like(s0)
        for start, stop in _chunks(H, N, L):
            outer, inner, block = _factors(x, start, stop - start)
            g = grad[..., start:stop]
            l = torch.arange(start, stop, device=v.device, dtype=v.real.dtype)
            s0 += _gather_modes(g, outer, inner, block)
            s1 += _gather_modes(g * l, outer, inner, block)
        grad_v = 2 * s0.conj() if ctx.needs_input_grad[0] else None
        grad_x = 2 * (v * s1).sum(0).conj() if ctx.needs_input_grad[1] else None
        return grad_v, grad_x, None


# Under torch.compile the Function above runs as a pair of opaque ops: its chunking and
# block size are Python arithmetic on L, which a graph traced for symbolic lengths cannot do.


@torch.library.custom_op("ssm_kernels::vandermonde_torch", mutates_args=())
def _vandermonde_op(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    return dense(_forward(v, x, L))


@_vandermonde_op.register_fake
def _(v, x, L):
    return v.real.new_empty(v.shape[0], v.shape[1], L)


@torch.library.custom_op("ssm_kernels::vandermonde_torch_backward", mutates_args=())
def _vandermonde_backward_op(
    grad: torch.Tensor, v: torch.Tensor, x: torch.Tensor, L: int, need_v: bool, need_x: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    ctx = FunctionContext((v, x), dict(L=L), (need_v, need_x, False))
    return placeholders(_Vandermonde.backward(ctx, grad)[:2], (need_v, need_x), v)


@_vandermonde_backward_op.register_fake
def _(grad, v, x, L, need_v, need_x):
    return fake_gradients((v, x), (need_v, need_x), v)


def _setup(ctx, inputs, output):
    v, x, ctx.L = inputs
    ctx.save_for_backward(v, x)


def _backward(ctx, grad):
    needs = ctx.needs_input_grad[:2]
    return (*wanted(_vandermonde_backward_op(grad, *ctx.saved_tensors, ctx.L, *needs), needs), None)


_vandermonde_op.register_autograd(_backward, setup_context=_setup)


def vandermonde_torch(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """PyTorch path of :func:`kernels.vandermonde` (same contract)."""
    run = _vandermonde_op if torch.compiler.is_compiling() else _Vandermonde.apply
    if v.dim() == 2:
        return run(v.unsqueeze(0), x, L).squeeze(0)
    return run(v, x, L)
