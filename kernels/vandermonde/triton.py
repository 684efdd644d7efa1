"""Vandermonde kernel in Triton (same contract as :func:`vandermonde_torch`).

Forward: one program per (h, block of BLOCK_L positions); it loops over the modes in chunks
of BLOCK_N, builds exp(x l) = exp(xr l) (cos(xi l) + i sin(xi l)) for that (BLOCK_N, BLOCK_L)
tile in registers and accumulates 2 Re(v · exp(x l)) for all C coefficient sets at once, so
the only tensor in memory is the (C, H, L) output.

Backward: one program per (h, block of BLOCK_N modes); it loops over L in chunks of BLOCK_L
and accumulates, for every c,

    S0[c, h, n] = sum_l g[c, h, l] exp(x l),   S1[c, h, n] = sum_l g[c, h, l] l exp(x l),

in registers. The launcher then forms grad_v = 2 conj(S0) and grad_x = 2 conj(sum_c v S1)
(the PyTorch complex-gradient convention, as in ``pytorch.py``).

Complex tensors are passed as interleaved (re, im) real views. The kernels compute in the
real dtype of the inputs (float32 for complex64, float64 for complex128).

Float32 phase: a plain float32 xi·l is off by about |xi l| · 6e-8 (1e-4 rad at l ~ 500), which
shows in K where modes cancel. Instead each block of positions l = l0 + j (j < BLOCK_L) takes
its start phase xi·l0 mod 2 pi in float64, one value per mode (exact to about |xi l0|·1e-16
rad at any L: at L = 16384 and xi = 100 the old all-float32 reduction was off by 6e-2), and
the offset xi·j in float32: the launcher splits xi = xi_hi + xi_lo with xi_hi keeping 9
significant bits, so xi_hi·j is exact; it is reduced by 2·pi in two parts (Cody-Waite, exact
for |xi j| < 4e5) before xi_lo·j is added. The reduced argument also keeps approximate GPU
sin/cos accurate. Float64 skips the split.

Importing this module decorates the kernels, which fixes whether they run compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); the entry point,
:func:`kernels.vandermonde.triton_op.vandermonde_triton`, imports it on first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels._autograd import first_order_only

BLOCK_L = 64  # positions per forward program / per backward loop step
BLOCK_N = 16  # modes per forward loop step / per backward program

# 2*pi split so that k * _TWO_PI_HI is exact in float32 for |k| < 2**16 (Cody-Waite).
_TWO_PI_HI = tl.constexpr(6.28125)
_TWO_PI_LO = tl.constexpr(1.9353071795864769e-3)
_INV_TWO_PI = tl.constexpr(0.15915494309189535)


@triton.jit
def _modes_tile(xr, xi, xi_lo, l0, j, l, REDUCE_PHASE: tl.constexpr):
    """exp(x l), x = xr + i (xi + xi_lo), for x of shape (BLOCK_N,) at positions l = l0 + j,
    j of shape (BLOCK_L,) (l: the same positions with the tail set to 0, for the magnitude).

    Returns (re, im), each (BLOCK_N, BLOCK_L). With REDUCE_PHASE (float32) the phase is
    (xi + xi_lo) l0 reduced by 2 pi in float64, one value per mode, plus xi j reduced by
    2 pi in float32 (xi the high part of the split: xi j is exact for j < 2**15) plus xi_lo j.
    """
    mag = tl.exp(xr[:, None] * l[None, :])
    if REDUCE_PHASE:
        start = (xi.to(tl.float64) + xi_lo.to(tl.float64)) * l0  # l0 (int) converts exactly
        two_pi = tl.full((), 6.283185307179586, tl.float64)
        start = (start - tl.floor(start / two_pi + 0.5) * two_pi).to(xi.dtype)
        phase = xi[:, None] * j[None, :]
        k = tl.floor(phase * _INV_TWO_PI + 0.5)
        phase = (phase - k * _TWO_PI_HI) - k * _TWO_PI_LO
        phase = start[:, None] + phase + xi_lo[:, None] * j[None, :]
    else:
        phase = xi[:, None] * l[None, :]
    return mag * tl.cos(phase), mag * tl.sin(phase)


@triton.jit
def _vandermonde_fwd_kernel(
    v_ptr,  # (C, H, N, 2) contiguous real view of complex v
    x_ptr,  # (H, N, 2) contiguous (xr, xi_hi)
    xlo_ptr,  # (H, N) contiguous xi_lo (zeros without the phase split)
    out_ptr,  # (C, H, L) contiguous
    C,
    H,
    N,
    L,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
    REDUCE_PHASE: tl.constexpr,
):
    pid = tl.program_id(0)
    n_lblocks = tl.cdiv(L, BLOCK_L)
    h = (pid // n_lblocks).to(tl.int64)
    lb = pid % n_lblocks

    offs_c = tl.arange(0, BLOCK_C).to(tl.int64)  # offsets in int64, as h
    offs_n = tl.arange(0, BLOCK_N)
    l0 = lb * BLOCK_L
    offs_l = l0 + tl.arange(0, BLOCK_L)
    mask_c = offs_c < C
    mask_l = offs_l < L
    dtype = out_ptr.dtype.element_ty
    # Tail positions evaluate at l = 0 (finite even for growing modes); they are not stored.
    l = tl.where(mask_l, offs_l, 0).to(dtype)
    j = tl.arange(0, BLOCK_L).to(dtype)

    acc = tl.zeros((BLOCK_C, BLOCK_L), dtype=dtype)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + offs_n
        mask_n = n < N
        x_off = (h * N + n) * 2
        xr = tl.load(x_ptr + x_off, mask=mask_n, other=0.0)
        xi = tl.load(x_ptr + x_off + 1, mask=mask_n, other=0.0)
        xi_lo = tl.load(xlo_ptr + h * N + n, mask=mask_n, other=0.0)
        er, ei = _modes_tile(xr, xi, xi_lo, l0, j, l, REDUCE_PHASE)  # (BN, BL)

        v_off = ((offs_c[:, None] * H + h) * N + n[None, :]) * 2  # (BC, BN)
        mask_v = mask_c[:, None] & mask_n[None, :]
        vr = tl.load(v_ptr + v_off, mask=mask_v, other=0.0)
        vi = tl.load(v_ptr + v_off + 1, mask=mask_v, other=0.0)
        # Re(v e) = vr er - vi ei, summed over the mode chunk.
        term = vr[:, :, None] * er[None, :, :] - vi[:, :, None] * ei[None, :, :]
        acc += tl.sum(term, axis=1)

    out_off = (offs_c[:, None] * H + h) * L + offs_l[None, :]
    tl.store(out_ptr + out_off, 2.0 * acc, mask=mask_c[:, None] & mask_l[None, :])


@triton.jit
def _vandermonde_bwd_kernel(
    g_ptr,  # (C, H, L) contiguous real upstream gradient
    x_ptr,  # (H, N, 2) contiguous (xr, xi_hi)
    xlo_ptr,  # (H, N) contiguous xi_lo (zeros without the phase split)
    s_ptr,  # (2, C, H, N, 2) real output: S0 and S1 as (re, im)
    C,
    H,
    N,
    L,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
    REDUCE_PHASE: tl.constexpr,
):
    pid = tl.program_id(0)
    n_nblocks = tl.cdiv(N, BLOCK_N)
    h = (pid // n_nblocks).to(tl.int64)
    nb = pid % n_nblocks

    offs_c = tl.arange(0, BLOCK_C).to(tl.int64)  # offsets in int64, as h
    offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < C
    mask_n = offs_n < N
    dtype = s_ptr.dtype.element_ty

    x_off = (h * N + offs_n) * 2
    xr = tl.load(x_ptr + x_off, mask=mask_n, other=0.0)
    xi = tl.load(x_ptr + x_off + 1, mask=mask_n, other=0.0)
    xi_lo = tl.load(xlo_ptr + h * N + offs_n, mask=mask_n, other=0.0)

    s0r = tl.zeros((BLOCK_C, BLOCK_N), dtype=dtype)
    s0i = tl.zeros((BLOCK_C, BLOCK_N), dtype=dtype)
    s1r = tl.zeros((BLOCK_C, BLOCK_N), dtype=dtype)
    s1i = tl.zeros((BLOCK_C, BLOCK_N), dtype=dtype)
    j = tl.arange(0, BLOCK_L).to(dtype)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        mask_l = offs_l < L
        # Tail positions evaluate at l = 0 with g = 0: they add nothing (and no inf * 0).
        l = tl.where(mask_l, offs_l, 0).to(dtype)
        er, ei = _modes_tile(xr, xi, xi_lo, l0, j, l, REDUCE_PHASE)  # (BN, BL)

        g_off = (offs_c[:, None] * H + h) * L + offs_l[None, :]  # (BC, BL)
        g = tl.load(g_ptr + g_off, mask=mask_c[:, None] & mask_l[None, :], other=0.0)
        gl = g * l[None, :]
        s0r += tl.sum(g[:, None, :] * er[None, :, :], axis=2)
        s0i += tl.sum(g[:, None, :] * ei[None, :, :], axis=2)
        s1r += tl.sum(gl[:, None, :] * er[None, :, :], axis=2)
        s1i += tl.sum(gl[:, None, :] * ei[None, :, :], axis=2)

    s_off = ((offs_c[:, None] * H + h) * N + offs_n[None, :]) * 2  # (BC, BN)
    mask_s = mask_c[:, None] & mask_n[None, :]
    s1_base = s_ptr + tl.cast(C, tl.int64) * H * N * 2  # int64: C·H·N·2 may pass 2^31
    tl.store(s_ptr + s_off, s0r, mask=mask_s)
    tl.store(s_ptr + s_off + 1, s0i, mask=mask_s)
    tl.store(s1_base + s_off, s1r, mask=mask_s)
    tl.store(s1_base + s_off + 1, s1i, mask=mask_s)


def _as_real(z: torch.Tensor) -> torch.Tensor:
    """Contiguous interleaved (re, im) real view of a complex tensor."""
    return torch.view_as_real(z.resolve_conj().contiguous())


def _reduce_phase(dtype: torch.dtype) -> bool:
    # float64 is accurate enough as is (and the float32 split constants would cost precision).
    return dtype != torch.float64


def _split_modes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, N, 2) contiguous (xr, xi_hi) and (H, N) xi_lo, with xi = xi_hi + xi_lo exactly.

    xi_hi keeps the sign, exponent and top 8 mantissa bits of xi (float32 only; float64
    returns xi_hi = xi, xi_lo = 0).
    """
    xr = _as_real(x)
    if not _reduce_phase(xr.dtype):
        return xr, torch.zeros(x.shape, dtype=xr.dtype, device=x.device)
    xi = xr[..., 1]
    hi = (xi.contiguous().view(torch.int32) & -(1 << 15)).view(torch.float32)
    return torch.stack([xr[..., 0], hi], dim=-1), (xi - hi).contiguous()


def forward(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Launch the forward: v (C, H, N), x (H, N) complex -> K (C, H, L) real."""
    C, H, N = v.shape
    real = v.real.dtype
    out = torch.empty(C, H, L, dtype=real, device=v.device)
    if out.numel() == 0:
        return out
    if N == 0:
        return out.zero_()
    grid = (H * triton.cdiv(L, BLOCK_L),)
    x_hi, x_lo = _split_modes(x)
    with _launch.device_guard(v):
        _vandermonde_fwd_kernel[grid](
            _as_real(v),
            x_hi,
            x_lo,
            out,
            C,
            H,
            N,
            L,
            BLOCK_C=triton.next_power_of_2(C),
            BLOCK_N=BLOCK_N,
            BLOCK_L=BLOCK_L,
            REDUCE_PHASE=_reduce_phase(real),
        )
    return out


def _mode_sums(grad: torch.Tensor, x: torch.Tensor, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S0, S1 (complex (C, H, N)) for the real upstream gradient grad (C, H, L)."""
    H, N = x.shape
    L = grad.shape[-1]
    real = x.real.dtype
    s = torch.zeros(2, C, H, N, 2, dtype=real, device=x.device)
    if L > 0 and s.numel() > 0:
        grid = (H * triton.cdiv(N, BLOCK_N),)
        x_hi, x_lo = _split_modes(x)
        with _launch.device_guard(x):
            _vandermonde_bwd_kernel[grid](
                grad.to(real).contiguous(),
                x_hi,
                x_lo,
                s,
                C,
                H,
                N,
                L,
                BLOCK_C=triton.next_power_of_2(C),
                BLOCK_N=BLOCK_N,
                BLOCK_L=BLOCK_L,
                REDUCE_PHASE=_reduce_phase(real),
            )
    return torch.view_as_complex(s[0]), torch.view_as_complex(s[1])


def gradients(v, x, grad, needs):
    """The backward from what the forward saved, v (C, H, N) and x (H, N) complex, for the
    real upstream gradient ``grad`` (C, H, L); ``needs`` which of (v, x) want a gradient.
    (grad v, grad x), None where not needed:

        grad v = 2 conj(S0),   grad x = 2 conj(sum_c v S1).
    """
    s0, s1 = _mode_sums(grad, x, v.shape[0])
    grad_v = 2 * s0.conj_physical() if needs[0] else None
    grad_x = 2 * (v * s1).sum(0).conj_physical() if needs[1] else None
    return grad_v, grad_x


class VandermondeTriton(torch.autograd.Function):
    """The fused kernels with their hand-written backward (eager mode; under
    ``torch.compile`` the same launches run as the ops of
    :mod:`kernels.vandermonde.triton_op`)."""

    @staticmethod
    def forward(ctx, v, x, L):
        ctx.save_for_backward(v, x)
        return forward(v, x, L)

    @staticmethod
    @first_order_only("vandermonde (triton)")
    def backward(ctx, grad):
        return (*gradients(*ctx.saved_tensors, grad, ctx.needs_input_grad[:2]), None)
