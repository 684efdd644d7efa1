"""2D selective scan in Triton (same contract as :func:`selective_scan_2d_reference`).

Forward. One program per (channel d, batch row); grid (D, Bsz). The program walks the image
in tiles of BLOCK_H full rows (BLOCK_W = next power of two >= Wdt columns) and holds, for all
N states at once, (BLOCK_N, BLOCK_H, BLOCK_W) register tiles

    a = exp(Δ A),   b = Δ u B                          (padding: Δ = 0, i.e. a = 1, b = 0)

The row pass is ``tl.associative_scan`` along the width axis with the composition of affine
maps (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2), giving g; the column pass scans (a, g) down
the height axis, giving (P, q) with h = q + P · h_carry, where h_carry (BLOCK_N, BLOCK_W) is
the state of the last row of the tile above, kept in registers. y = Σ_n C h is a reduction
over the state axis; out = (y + D u) · silu(z) is stored in u's dtype. Arithmetic is in
float32 (float64 for float64 inputs).

Saved for the backward: h_carry at the start of every row tile, (Bsz, D, n_tiles, N, Wdt).

Backward. Same grid, row tiles from the bottom up. A tile recomputes g and h from its saved
carry, then the adjoints

    λh[i, j] = C[i, j] dy[i, j] + a[i+1, j] λh[i+1, j]      (reverse scan down → up, carry: λh
                                                             at the first row of the tile below)
    λg[i, j] = λh[i, j] + a[i, j+1] λg[i, j+1]              (reverse scan along the row)

with the shifted multipliers read one row / column further (1 past the image). With
a·h[i-1, j] = h - g and a·g[i, j-1] = g - b, the gradient with respect to Δ A is
w = λh (h - g) + λg (g - b), and

    dΔ = Σ_n A w + u Σ_n λg B      du = Δ Σ_n λg B + D dy      dA = Σ_pixels Δ w
    dB = Σ_{d in group} λg Δ u     dC = Σ_{d in group} dy h

(then through softplus and the bias; dz and dy come from the gate). dB, dC are shared by the
channels of a group and added into buffers in the compute dtype with ``tl.atomic_add``; dA,
dD and d delta_bias are written per batch row and summed in PyTorch.

A tile spans whole rows of all N states: where one such row, next_pow2(N) · next_pow2(Wdt),
exceeds MAX_ROW elements (Wdt > 256 at N = 16), the call goes to
:func:`selective_scan_2d_torch`, as do empty inputs.

Importing this module decorates the kernels, which fixes whether they run compiled or in the
Triton interpreter (``TRITON_INTERPRET=1``); ``kernels.selective_scan_2d`` imports it on
first use.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from kernels.selective_scan.triton import _combine, _softplus  # the 1D kernel's affine-map combine and softplus
from kernels.selective_scan_2d.pytorch import selective_scan_2d_torch

MAX_ROW = 4096  # largest next_pow2(N) * next_pow2(Wdt) done in Triton (a tile holds whole rows)
FWD_TILE = 4096  # elements of one (BLOCK_N, BLOCK_H, BLOCK_W) register tile, forward
BWD_TILE = 2048  # the same for the backward, which keeps about twice as many tiles live
MAX_BLOCK_H = 64


@triton.jit
def _delta(ptr, offs, mask, bias, ACC: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(delta + bias, Δ) on a (BLOCK_H, BLOCK_W) tile; Δ = 0 outside ``mask``."""
    x = tl.load(ptr + offs, mask=mask, other=0.0).to(ACC) + bias
    dt = x
    if SOFTPLUS:
        dt = _softplus(x)
    return x, tl.where(mask, dt, 0.0)


@triton.jit
def _last_row(t, rows, BLOCK_H: tl.constexpr):
    """t (BLOCK_N, BLOCK_H, BLOCK_W) -> its last row (BLOCK_N, BLOCK_W)."""
    return tl.sum(tl.where((rows == BLOCK_H - 1)[None, :, None], t, 0.0), axis=1)


@triton.jit
def _first_row(t, rows):
    return tl.sum(tl.where((rows == 0)[None, :, None], t, 0.0), axis=1)


@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,  # inputs
    out_ptr, carry_ptr,  # (Bsz, D, H, W); (Bsz, D, n_tiles, N, W)
    Dm, H, W, N, G, n_tiles,
    ACC: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    d = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    group = d // (Dm // G)
    offs_n = tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_W)
    mask_n = offs_n < N
    A = tl.load(A_ptr + d * N + offs_n, mask=mask_n, other=0.0).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d).to(ACC)
    skip = 0.0
    if HAS_D:
        skip = tl.load(D_ptr + d).to(ACC)
    HW = H * W
    chan = (batch * Dm + d) * HW
    bc_base = (batch * G + group) * N * HW
    mask_nw = mask_n[:, None] & (cols < W)[None, :]
    carry_base = (batch * Dm + d) * n_tiles * N * W
    h_carry = tl.zeros([BLOCK_N, BLOCK_W], dtype=ACC)
    for k in range(n_tiles):
        i = k * BLOCK_H + rows
        mask = (i < H)[:, None] & (cols < W)[None, :]
        offs = i[:, None] * W + cols[None, :]
        if SAVE:
            tl.store(carry_ptr + carry_base + k * N * W + offs_n[:, None] * W + cols[None, :], h_carry, mask=mask_nw)
        u = tl.load(u_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
        _, dt = _delta(delta_ptr + chan, offs, mask, bias, ACC, SOFTPLUS)
        mask3 = mask_n[:, None, None] & mask[None, :, :]
        offs3 = offs_n[:, None, None] * HW + offs[None, :, :]
        Bt = tl.load(B_ptr + bc_base + offs3, mask=mask3, other=0.0).to(ACC)
        Ct = tl.load(C_ptr + bc_base + offs3, mask=mask3, other=0.0).to(ACC)
        a = tl.exp(dt[None, :, :] * A[:, None, None])
        b = (dt * u)[None, :, :] * Bt
        _, g = tl.associative_scan((a, b), 2, _combine)
        pa, q = tl.associative_scan((a, g), 1, _combine)
        h = q + pa * h_carry[:, None, :]
        h_carry = _last_row(h, rows, BLOCK_H)  # padded rows are identities: the last real row's state
        y = tl.sum(h * Ct, axis=0)
        if HAS_D:
            y += skip * u
        if HAS_Z:
            zz = tl.load(z_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out_ptr + chan + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, carry_ptr, dout_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
    Dm, H, W, N, G, n_tiles,
    ACC: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    d = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    group = d // (Dm // G)
    offs_n = tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_W)
    mask_n = offs_n < N
    A = tl.load(A_ptr + d * N + offs_n, mask=mask_n, other=0.0).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d).to(ACC)
    skip = 0.0
    if HAS_D:
        skip = tl.load(D_ptr + d).to(ACC)
    HW = H * W
    chan = (batch * Dm + d) * HW
    bc_base = (batch * G + group) * N * HW
    mask_nw = mask_n[:, None] & (cols < W)[None, :]
    carry_base = (batch * Dm + d) * n_tiles * N * W
    lam_carry = tl.zeros([BLOCK_N, BLOCK_W], dtype=ACC)  # λh at the first row of the tile below
    dA_acc = tl.zeros([BLOCK_N], dtype=ACC)
    dD_acc = tl.zeros([BLOCK_W], dtype=ACC)
    dbias_acc = tl.zeros([BLOCK_W], dtype=ACC)
    for kk in range(n_tiles):
        k = n_tiles - 1 - kk
        i = k * BLOCK_H + rows
        mask = (i < H)[:, None] & (cols < W)[None, :]
        offs = i[:, None] * W + cols[None, :]
        mask3 = mask_n[:, None, None] & mask[None, :, :]
        offs3 = offs_n[:, None, None] * HW + offs[None, :, :]
        h_carry = tl.load(carry_ptr + carry_base + k * N * W + offs_n[:, None] * W + cols[None, :], mask=mask_nw,
                          other=0.0)
        u = tl.load(u_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
        x, dt = _delta(delta_ptr + chan, offs, mask, bias, ACC, SOFTPLUS)
        mask_down = ((i + 1) < H)[:, None] & (cols < W)[None, :]
        _, dt_down = _delta(delta_ptr + chan, offs + W, mask_down, bias, ACC, SOFTPLUS)
        mask_right = (i < H)[:, None] & ((cols + 1) < W)[None, :]
        _, dt_right = _delta(delta_ptr + chan, offs + 1, mask_right, bias, ACC, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_base + offs3, mask=mask3, other=0.0).to(ACC)
        Ct = tl.load(C_ptr + bc_base + offs3, mask=mask3, other=0.0).to(ACC)
        a = tl.exp(dt[None, :, :] * A[:, None, None])
        dtu = dt * u
        b = dtu[None, :, :] * Bt
        _, g = tl.associative_scan((a, b), 2, _combine)
        pa, q = tl.associative_scan((a, g), 1, _combine)
        h = q + pa * h_carry[:, None, :]

        dy = tl.load(dout_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
        if HAS_Z:
            zz = tl.load(z_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
            sz = tl.sigmoid(zz)
            y = tl.sum(h * Ct, axis=0)
            if HAS_D:
                y += skip * u
            dz = dy * y * sz * (1.0 + zz * (1.0 - sz))
            tl.store(dz_ptr + chan + offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dy * zz * sz
        du = skip * dy
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=0)

        a_down = tl.exp(dt_down[None, :, :] * A[:, None, None])
        qa, qb = tl.associative_scan((a_down, Ct * dy[None, :, :]), 1, _combine, reverse=True)
        lam_h = qb + qa * lam_carry[:, None, :]
        a_right = tl.exp(dt_right[None, :, :] * A[:, None, None])
        _, lam_g = tl.associative_scan((a_right, lam_h), 2, _combine, reverse=True)

        w = lam_h * (h - g) + lam_g * (g - b)
        gB = tl.sum(lam_g * Bt, axis=0)
        du += dt * gB
        ddt = tl.sum(w * A[:, None, None], axis=0) + u * gB
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(x)
        ddt = tl.where(mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=0)
        dA_acc += tl.sum(tl.sum(w * dt[None, :, :], axis=2), axis=1)
        tl.store(du_ptr + chan + offs, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + chan + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
        tl.atomic_add(dB_ptr + bc_base + offs3, lam_g * dtu[None, :, :], mask=mask3, sem="relaxed")
        tl.atomic_add(dC_ptr + bc_base + offs3, h * dy[None, :, :], mask=mask3, sem="relaxed")
        lam_carry = _first_row(lam_h, rows)

    tl.store(dA_ptr + (batch * Dm + d) * N + offs_n, dA_acc, mask=mask_n)
    if HAS_D:
        tl.store(dD_ptr + batch * Dm + d, tl.sum(dD_acc, axis=0))
    if HAS_BIAS:
        tl.store(dbias_ptr + batch * Dm + d, tl.sum(dbias_acc, axis=0))


def _blocks(N: int, H: int, W: int, tile: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_H, BLOCK_W): all states, whole rows, as many rows as fit in ``tile``."""
    BLOCK_N = triton.next_power_of_2(N)
    BLOCK_W = triton.next_power_of_2(W)
    BLOCK_H = max(1, min(MAX_BLOCK_H, triton.next_power_of_2(H), tile // (BLOCK_N * BLOCK_W)))
    return BLOCK_N, BLOCK_H, BLOCK_W


def _num_warps(block_n: int, block_h: int, block_w: int) -> int:
    # as in kernels.selective_scan: 8 warps from 2048-element tiles on, against register spills
    return 8 if block_n * block_h * block_w >= 2048 else 4


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _forward(u, delta, A, B, C, D, z, delta_bias, softplus, save, block_h):
    """Launch the forward kernel: (out, tile-start carries or None, BLOCK_H)."""
    Bsz, Dm, H, W = u.shape
    N, G = A.shape[1], B.shape[1]
    tl_acc, acc = _acc(u.dtype)
    # with gradients the backward reuses these row tiles: size them for its budget
    BLOCK_N, BLOCK_H, BLOCK_W = _blocks(N, H, W, BWD_TILE if save else FWD_TILE)
    BLOCK_H = block_h or BLOCK_H
    n_tiles = triton.cdiv(H, BLOCK_H)
    out = torch.empty_like(u)
    carries = torch.empty(Bsz, Dm, n_tiles, N, W, dtype=acc, device=u.device) if save else None
    ph = u  # a placeholder pointer for absent tensors
    with _device_guard(u):
        _fwd_kernel[(Dm, Bsz)](
            u, delta, A, B, C, ph if D is None else D, ph if z is None else z,
            ph if delta_bias is None else delta_bias, out, out if carries is None else carries,
            Dm, H, W, N, G, n_tiles,
            ACC=tl_acc, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus, SAVE=save, BLOCK_N=BLOCK_N, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
            num_warps=_num_warps(BLOCK_N, BLOCK_H, BLOCK_W),
        )  # fmt: skip
    return out, carries, BLOCK_H


def _backward(u, delta, A, B, C, D, z, delta_bias, carries, softplus, block_h, dout):
    """Launch the backward kernel and reduce the per-batch-row partial sums: the gradients of
    (u, delta, A, B, C, D, z, delta_bias), None for absent inputs."""
    Bsz, Dm, H, W = u.shape
    N, G = A.shape[1], B.shape[1]
    tl_acc, acc = _acc(u.dtype)
    BLOCK_N, BLOCK_W = triton.next_power_of_2(N), triton.next_power_of_2(W)
    n_tiles = carries.shape[2]  # the forward's row tiles: the carries are per tile
    dev = u.device
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA = torch.empty(Bsz, Dm, N, dtype=acc, device=dev)
    dB = torch.zeros(B.shape, dtype=acc, device=dev)
    dC = torch.zeros(C.shape, dtype=acc, device=dev)
    dD = None if D is None else torch.empty(Bsz, Dm, dtype=acc, device=dev)
    dbias = None if delta_bias is None else torch.empty(Bsz, Dm, dtype=acc, device=dev)
    ph = du
    with _device_guard(u):
        _bwd_kernel[(Dm, Bsz)](
            u, delta, A, B, C, ph if D is None else D, ph if z is None else z,
            ph if delta_bias is None else delta_bias, carries, dout,
            du, ddelta, dA, dB, dC, dA if dD is None else dD, ph if dz is None else dz,
            dA if dbias is None else dbias,
            Dm, H, W, N, G, n_tiles,
            ACC=tl_acc, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus, BLOCK_N=BLOCK_N, BLOCK_H=block_h, BLOCK_W=BLOCK_W,
            num_warps=_num_warps(BLOCK_N, block_h, BLOCK_W),
        )  # fmt: skip
    return (
        du, ddelta, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
        None if D is None else dD.sum(0).to(D.dtype), dz,
        None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
    )


class _SelectiveScan2D(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, block_h):
        out, carries, BLOCK_H = _forward(u, delta, A, B, C, D, z, delta_bias, softplus, True, block_h)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, carries)
        ctx.softplus, ctx.block_h = softplus, BLOCK_H
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, carries = ctx.saved_tensors
        grads = _backward(u, delta, A, B, C, D, z, delta_bias, carries, ctx.softplus, ctx.block_h, dout.contiguous())
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None)


def selective_scan_2d_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             block_h: int | None = None):
    """Triton path of :func:`kernels.selective_scan_2d` on its canonical arguments: u, delta,
    z (Bsz, D, H, W); A (D, N) real; B, C (Bsz, G, N, H, W); D, delta_bias (D,).

        Δ = softplus(delta + delta_bias)              (softplus only with ``delta_softplus``)
        g[i, j] = exp(Δ A) g[i, j-1] + Δ u B          (row pass)
        h[i, j] = exp(Δ A) h[i-1, j] + g[i, j]        (column pass)
        out = (Σ_n C h + D u) · silu(z)

    Returns (Bsz, D, H, W) in u's dtype, differentiable in every tensor. ``block_h`` (a power
    of two) overrides the rows per tile (tests use it to get several tiles on small images).
    On CPU tensors it needs ``TRITON_INTERPRET=1`` set before this module is imported.
    """
    W, N = u.shape[3], A.shape[1]
    if u.numel() == 0 or N == 0 or triton.next_power_of_2(N) * triton.next_power_of_2(W) > MAX_ROW:
        return selective_scan_2d_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    args = [None if t is None else t.contiguous() for t in (u, delta, A, B, C, D, z, delta_bias)]
    softplus = bool(delta_softplus)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return _SelectiveScan2D.apply(*args, softplus, block_h)
    return _forward(*args, softplus, False, block_h)[0]
