"""Linear scan in Triton (same contract as :func:`linear_scan_torch`).

One program per (batch row, block of BLOCK_P channels). It walks L in tiles of BLOCK_L
steps, in scan order (from the end for ``reverse``: the tile is simply loaded with
reversed time offsets). Inside a tile, ``tl.associative_scan`` along time combines the
steps h -> a h + b as affine maps,

    (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)        (step 1 first, then step 2),

giving (A[j], B[j]) with h[j] = A[j] · carry + B[j]; the last row becomes the carry into
the next tile. With a constant a (shape (P,)) the carry is kept in float64 and multiplied
by a^k (k real steps in the tile) formed in float64 by binary powering: the float32 product
over a tile would be rounded the same way in every tile, and its error would grow linearly
in L instead of like √L. Steps past L load as the identity (1, 0), so the last row is always the
state after the last real step. Complex values are written out on (re, im) parts; complex
tensors are passed as their real views ``torch.view_as_real`` (interleaved re, im).
float16 / bfloat16 are loaded, computed in float32 and stored back; float64 stays float64.

Backward reuses the same kernel: g[t] = grad_h[t] + conj(a[t+1]) g[t+1] is a scan in the
opposite direction whose multiplier is a read one step further along (A_SHIFT = ±1) and
conjugated (CONJ_A); reads before the start or past the end load as 1 and only ever
multiply the zero initial state. grad_a = g · conj(h_prev) and grad_h0 are elementwise and
done in PyTorch, as in ``pytorch.py``.

Importing this module decorates the kernel, which fixes whether it runs compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); the entry point,
:func:`kernels.linear_scan.triton_op.linear_scan_triton`, imports it on first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels._autograd import first_order_only
from kernels.linear_scan.pytorch import grads_of_a_and_h0

BLOCK_L = 64  # time steps per tile (at most; short sequences use the next power of 2 >= L); < 256
BLOCK_P = 32  # channels per program (at most)
MIN_BLOCK = 16  # smallest tile along L


@triton.jit
def _combine_real(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _combine_real_a(a1, br1, bi1, a2, br2, bi2):
    # real a, complex b
    return a1 * a2, a2 * br1 + br2, a2 * bi1 + bi2


@triton.jit
def _combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    return (
        ar1 * ar2 - ai1 * ai2,
        ar1 * ai2 + ai1 * ar2,
        ar2 * br1 - ai2 * bi1 + br2,
        ar2 * bi1 + ai2 * br1 + bi2,
    )


@triton.jit
def _power64(ar, ai, k, A_COMPLEX: tl.constexpr):
    """(ar + i ai)^k in float64 by binary powering, for 0 <= k < 256 (k <= BLOCK_L)."""
    pr = tl.full(ar.shape, 1.0, tl.float64)
    pi = tl.zeros(ar.shape, dtype=tl.float64)
    for bit in tl.static_range(8):
        use = ((k >> bit) & 1) == 1
        if A_COMPLEX:
            nr = pr * ar - pi * ai
            ni = pr * ai + pi * ar
            pr = tl.where(use, nr, pr)
            pi = tl.where(use, ni, pi)
            ar, ai = ar * ar - ai * ai, 2.0 * ar * ai
        else:
            pr = tl.where(use, pr * ar, pr)
            ar = ar * ar
    return pr, pi


@triton.jit
def _linear_scan_kernel(
    a_ptr,  # (B|1, L|1, P[, 2]) real or real view of complex; stride 0 where a broadcasts
    b_ptr,  # (B, L, P[, 2])
    h0_ptr,  # (B, P[, 2]); unused without HAS_H0
    out_ptr,  # (B, L, P[, 2])
    L,
    P,
    n_pblocks,
    stride_ab,
    stride_al,
    stride_ap,
    stride_bb,
    stride_bl,
    stride_bp,
    stride_hb,
    stride_hp,
    stride_ob,
    stride_ol,
    stride_op,
    ACC: tl.constexpr,  # compute dtype: float32 or float64
    A_COMPLEX: tl.constexpr,
    B_COMPLEX: tl.constexpr,
    HAS_H0: tl.constexpr,
    REVERSE: tl.constexpr,
    A_SHIFT: tl.constexpr,  # step t multiplies by a[t + A_SHIFT]
    CONJ_A: tl.constexpr,
    CONST_A: tl.constexpr,  # a has one value per channel (size 1 along L)
    BLOCK_L: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    batch = (pid // n_pblocks).to(tl.int64)
    offs_p = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < P
    chan = offs_p.to(tl.int64)  # times a channel stride, which may be large (a (B, P, L) view)
    a_row = a_ptr + batch * stride_ab + chan[None, :] * stride_ap
    b_row = b_ptr + batch * stride_bb + chan[None, :] * stride_bp
    o_row = out_ptr + batch * stride_ob + chan[None, :] * stride_op

    hr = tl.zeros([BLOCK_P], dtype=ACC)
    hi = tl.zeros([BLOCK_P], dtype=ACC)
    if HAS_H0:
        h_row = h0_ptr + batch * stride_hb + chan * stride_hp
        hr = tl.load(h_row, mask=mask_p, other=0.0).to(ACC)
        if B_COMPLEX:
            hi = tl.load(h_row + 1, mask=mask_p, other=0.0).to(ACC)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None]
    if CONST_A:
        # The carry between tiles in float64, multiplied by a^k (k real steps in the tile)
        # formed in float64: the scan's float32 product over a tile would be rounded the same
        # way in every tile and its error would add up coherently along L.
        cr = hr.to(tl.float64)
        ci = hi.to(tl.float64)
        a0 = a_ptr + batch * stride_ab + chan * stride_ap
        a0r = tl.load(a0, mask=mask_p, other=1.0).to(tl.float64)
        a0i = tl.zeros([BLOCK_P], dtype=tl.float64)
        if A_COMPLEX:
            a0i = tl.load(a0 + 1, mask=mask_p, other=0.0).to(tl.float64)
            if CONJ_A:
                a0i = -a0i

    for start in range(0, L, BLOCK_L):
        step = start + tl.arange(0, BLOCK_L)  # position in scan order
        in_l = step < L
        if REVERSE:
            t = (L - 1 - step).to(tl.int64)
        else:
            t = step.to(tl.int64)
        t_a = t + A_SHIFT
        mask = in_l[:, None] & mask_p[None, :]
        a_in = in_l & (t_a >= 0) & (t_a < L)  # steps whose multiplier is read (others: 1)
        mask_a = a_in[:, None] & mask_p[None, :]

        a_off = a_row + t_a[:, None] * stride_al
        ar = tl.load(a_off, mask=mask_a, other=1.0).to(ACC)
        b_off = b_row + t[:, None] * stride_bl
        br = tl.load(b_off, mask=mask, other=0.0).to(ACC)
        if B_COMPLEX:
            bi = tl.load(b_off + 1, mask=mask, other=0.0).to(ACC)
            if A_COMPLEX:
                ai = tl.load(a_off + 1, mask=mask_a, other=0.0).to(ACC)
                if CONJ_A:
                    ai = -ai
                sar, sai, sbr, sbi = tl.associative_scan((ar, ai, br, bi), 0, _combine_complex)
                yr = sar * hr[None, :] - sai * hi[None, :] + sbr
                yi = sar * hi[None, :] + sai * hr[None, :] + sbi
            else:
                sar, sbr, sbi = tl.associative_scan((ar, br, bi), 0, _combine_real_a)
                yr = sar * hr[None, :] + sbr
                yi = sar * hi[None, :] + sbi
        else:
            sar, sbr = tl.associative_scan((ar, br), 0, _combine_real)
            yr = sar * hr[None, :] + sbr

        if CONST_A:
            k = tl.sum(a_in.to(tl.int32), axis=0)
            pr, pi = _power64(a0r, a0i, k, A_COMPLEX)
            lr = tl.sum(tl.where(last, sbr, 0.0), axis=0).to(tl.float64)  # the tile's B at its last step
            if B_COMPLEX:
                li = tl.sum(tl.where(last, sbi, 0.0), axis=0).to(tl.float64)
                cr, ci = pr * cr - pi * ci + lr, pr * ci + pi * cr + li
                hi = ci.to(ACC)
            else:
                cr = pr * cr + lr
            hr = cr.to(ACC)
        else:  # the carry is the tile's last state
            if B_COMPLEX:
                hi = tl.sum(tl.where(last, yi, 0.0), axis=0)
            hr = tl.sum(tl.where(last, yr, 0.0), axis=0)

        o_off = o_row + t[:, None] * stride_ol
        tl.store(o_off, yr.to(out_ptr.dtype.element_ty), mask=mask)
        if B_COMPLEX:
            tl.store(o_off + 1, yi.to(out_ptr.dtype.element_ty), mask=mask)


def _real_view(x: torch.Tensor) -> torch.Tensor:
    """x itself if real, else its (..., 2) real view (the conjugate bit resolved first)."""
    return torch.view_as_real(x.resolve_conj()) if x.is_complex() else x


def _strides(x: torch.Tensor, real: torch.Tensor) -> list[int]:
    """Strides of x's dims in its real view ``real``, 0 where x has size 1 (broadcast)."""
    return [0 if n == 1 else s for n, s in zip(x.shape, real.stride())]


def _scan(a, b, h0, out, reverse: bool, a_shift: int = 0, conj_a: bool = False) -> None:
    """out = the scan of b (B, L, P) with a (B|1, L|1, P) from h0 (or 0), in scan order."""
    B, L, P = b.shape
    if out.numel() == 0:
        return
    block_l = max(MIN_BLOCK, min(BLOCK_L, triton.next_power_of_2(L)))
    block_p = min(BLOCK_P, triton.next_power_of_2(P))
    n_pblocks = triton.cdiv(P, block_p)
    h0_arg = b if h0 is None else h0  # a placeholder without h0
    acc = tl.float64 if out.real.dtype == torch.float64 else tl.float32
    views = [_real_view(t) for t in (a, b, h0_arg, out)]
    a_s, b_s, h_s, o_s = (_strides(t, v) for t, v in zip((a, b, h0_arg, out), views))
    with _launch.device_guard(b):
        _linear_scan_kernel[(B * n_pblocks,)](
            *views,
            L,
            P,
            n_pblocks,
            *a_s,
            *b_s,
            *h_s[:2],
            *o_s,
            ACC=acc,
            A_COMPLEX=a.is_complex(),
            B_COMPLEX=b.is_complex(),
            HAS_H0=h0 is not None,
            REVERSE=reverse,
            A_SHIFT=a_shift,
            CONJ_A=conj_a and a.is_complex(),
            CONST_A=a.shape[1] == 1,
            BLOCK_L=block_l,
            BLOCK_P=block_p,
        )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def forward(a, b, h0, reverse):
    """Launch the forward: the states h (B, L, P) in the compute dtype (float32 for float16 /
    bfloat16 b, else b's dtype), from a (B|1, L|1, P), b (B, L, P) and h0 (B, P) or None."""
    h = torch.empty(b.shape, dtype=_compute_dtype(b.dtype), device=b.device)
    _scan(a, b, h0, h, reverse)
    return h


def gradients(a, h, h0, reverse, b_dtype, grad, needs):
    """The backward from what the forward saved: a, the states h (compute dtype), h0 or None;
    ``grad`` the gradient of h (B, L, P), ``needs`` which of (a, b, h0) want a gradient. The
    gradients of those three (b's in ``b_dtype``), None where not needed:

        g[t] = grad[t] + conj(a[t+1]) g[t+1]   (a scan in the opposite direction),
        grad b = g,   grad a, grad h0 from g and h (:func:`grads_of_a_and_h0`).
    """
    need_a, need_b, need_h0 = needs
    g = torch.empty(h.shape, dtype=h.dtype, device=h.device)
    if g.shape[1] == 0:
        grad_a = torch.zeros_like(a) if need_a else None
        grad_h0 = torch.zeros_like(h0) if h0 is not None and need_h0 else None
        return grad_a, g.to(b_dtype) if need_b else None, grad_h0
    # Opposite direction; the multiplier of step t is conj(a) one step further along.
    _scan(a, grad, None, g, not reverse, a_shift=1 if not reverse else -1, conj_a=True)
    grad_a, grad_h0 = grads_of_a_and_h0(g, a, h, h0, reverse, need_a, need_h0)
    return grad_a, (g.to(b_dtype) if need_b else None), grad_h0


class LinearScanTriton(torch.autograd.Function):
    """The Triton scan with its hand-written backward (eager mode; under ``torch.compile`` the
    same launches run as the ops of :mod:`kernels.linear_scan.triton_op`)."""

    @staticmethod
    def forward(ctx, a, b, h0, reverse):
        # float16/bfloat16: the states are kept in float32 for the backward (as the torch
        # path keeps them), and only the returned copy is rounded to b's dtype
        h = forward(a, b, h0, reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.out_dtype = reverse, b.dtype
        return h.to(b.dtype)

    @staticmethod
    @first_order_only("linear_scan (triton)")
    def backward(ctx, grad):
        a, h, h0 = ctx.saved_tensors
        grads = gradients(a, h, h0, ctx.reverse, ctx.out_dtype, grad, ctx.needs_input_grad[:3])
        return (*grads, None)
