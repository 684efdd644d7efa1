"""2D selective scan in Triton (same contract as :func:`selective_scan_2d_reference`).

Forward. One program per (channel d, batch row), program batch · D + d of a 1D grid (a grid
dimension of its own would cap the batch at CUDA's 65535). The program walks the image
in bands of BLOCK_H rows, top to bottom, and each band in tiles of BLOCK_W columns, left to
right (BLOCK_W = next power of two >= Wdt when a whole row of all states fits in MAX_ROW
elements, else MAX_ROW / BLOCK_N). A tile holds, for all N states at once,
(BLOCK_N, BLOCK_H, BLOCK_W) register tiles

    a = exp(Δ A),   b = Δ u B                          (padding: Δ = 0, i.e. a = 1, b = 0)

The row pass is ``tl.associative_scan`` along the width axis with the composition of affine
maps (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2), giving (Π a, g_local), and g = g_local +
Π a · g_carry, where g_carry (BLOCK_N, BLOCK_H) is g at the column left of the tile, kept in
registers along the band. The column pass scans (a, g) down the height axis, giving (P, q)
with h = q + P · h_carry, where h_carry (BLOCK_N, BLOCK_W) is the state of the row above the
band, at the tile's columns: the tile above it stored its last row into a band-carry buffer,
and a barrier between bands makes the stores visible to the whole program. When the backward
will run, the buffer keeps every band's carry, (Bsz, D, n_bands, N, Wdt); otherwise (no
gradient needed) it has two slots used by band parity, (Bsz, D, 2, N, Wdt): band k reads slot
k mod 2 and writes the other, which band k - 1 read before the barrier. So inference memory
does not grow with the number of bands. Slot 0 starts zeroed (nothing above the first band).
y = Σ_n C h is a reduction over the state axis; out = (y + D u) · silu(z) is stored in u's
dtype. Arithmetic is in float32 (float64 for float64 inputs).

Saved for the backward: the band carries h (Bsz, D, n_bands, N, Wdt) and the row carries g
at the start of every width tile, (Bsz, D, n_wtiles, N, Hgt).

Backward. Same grid and tiles, bands from the bottom up and tiles from right to left. A tile
recomputes g and h from its saved carries, then the adjoints

    λh[i, j] = C[i, j] dy[i, j] + a[i+1, j] λh[i+1, j]      (reverse scan down → up, carry: λh
                                                             at the first row of the band below,
                                                             in a two-slot buffer by band parity)
    λg[i, j] = λh[i, j] + a[i, j+1] λg[i, j+1]              (reverse scan along the row, carry:
                                                             λg at the column right of the tile)

with the shifted multipliers read one row / column further (1 past the image). With
a·h[i-1, j] = h - g and a·g[i, j-1] = g - b, the gradient with respect to Δ A is
w = λh (h - g) + λg (g - b) (mamba_ssm's form: no shifted tile is needed; where a << 1 the
differences cancel to rounding, so dA entries of states that decay within one step carry
an absolute error of about eps·|λ h|, which the torch path avoids by forming the products), and

    dΔ = Σ_n A w + u Σ_n λg B      du = Δ Σ_n λg B + D dy      dA = Σ_pixels Δ w
    dB = Σ_{d in group} λg Δ u     dC = Σ_{d in group} dy h

(then through softplus and the bias; dz and dy come from the gate). dB, dC are shared by the
channels of a group and added into buffers in the compute dtype with ``tl.atomic_add`` (in an
order that varies between runs: on a GPU they are reproducible only to float rounding); dA,
dD and d delta_bias are written per batch row and summed in PyTorch.

Empty inputs, and N beyond MAX_ROW states, go to the torch path (in the entry point,
:func:`kernels.selective_scan_2d.triton_op.selective_scan_2d_triton`).

Importing this module decorates the kernels, which fixes whether they run compiled or in the
Triton interpreter (``TRITON_INTERPRET=1``); the entry point imports it on first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels._autograd import first_order_only
from kernels.selective_scan.triton import (  # the 1D kernel's combine, grid decoding and softplus
    _combine,
    _program_block,
    _softplus,
    _softplus_slope,
)
from kernels.selective_scan_2d.triton_op import MAX_STATES

MAX_ROW = MAX_STATES  # largest next_pow2(N) * next_pow2(Wdt) done in Triton (a tile holds whole rows)
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
def _last_col(t, cols, BLOCK_W: tl.constexpr):
    """t (BLOCK_N, BLOCK_H, BLOCK_W) -> its last column (BLOCK_N, BLOCK_H)."""
    return tl.sum(tl.where((cols == BLOCK_W - 1)[None, None, :], t, 0.0), axis=2)


@triton.jit
def _first_col(t, cols):
    return tl.sum(tl.where((cols == 0)[None, None, :], t, 0.0), axis=2)


@triton.jit
def _channel(A_ptr, D_ptr, bias_ptr, d, batch, Dm, H, W, N, G, n_slots, n_wtiles, offs_n, mask_n,
             ACC: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """What a program needs of its (batch, channel d): A_d (BLOCK_N,), the Δ bias, the skip D_d,
    and the offsets of its image, of its group's B / C, of its band carries (n_slots, N, W)
    and of its row carries (n_wtiles, N, H)."""
    A = tl.load(A_ptr + d * N + offs_n, mask=mask_n, other=0.0).to(ACC)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d).to(ACC)
    skip = 0.0
    if HAS_D:
        skip = tl.load(D_ptr + d).to(ACC)
    channel = batch * Dm + d
    group = d // (Dm // G)
    chan = channel * H * W
    bc_base = (batch * G + group) * N * H * W
    carry_base = channel * n_slots * N * W
    row_carry_base = channel * n_wtiles * N * H
    return A, bias, skip, chan, bc_base, carry_base, row_carry_base


@triton.jit
def _tile(k, c, rows, cols, offs_n, mask_n, H, W, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Tile (band k, width tile c): its rows i and columns j, the (BLOCK_H, BLOCK_W) mask and
    offsets in the image, the same for (BLOCK_N, BLOCK_H, BLOCK_W) in B / C, for the
    (BLOCK_N, BLOCK_W) band carry and for the (BLOCK_N, BLOCK_H) row carry."""
    i = k * BLOCK_H + rows
    j = c * BLOCK_W + cols
    mask = (i < H)[:, None] & (j < W)[None, :]
    offs = i[:, None] * W + j[None, :]
    mask3 = mask_n[:, None, None] & mask[None, :, :]
    offs3 = (offs_n.to(tl.int64) * H * W)[:, None, None] + offs[None, :, :]  # N·H·W may pass 2^31
    mask_nw = mask_n[:, None] & (j < W)[None, :]
    nw = offs_n[:, None] * W + j[None, :]
    mask_nh = mask_n[:, None] & (i < H)[None, :]
    nh = offs_n[:, None] * H + i[None, :]
    return i, j, mask, offs, mask3, offs3, mask_nw, nw, mask_nh, nh


@triton.jit
def _tile_states(u_ptr, delta_ptr, B_ptr, C_ptr, chan, bc_base, offs, offs3, mask, mask3, A, bias,
                 g_carry, h_carry, ACC: tl.constexpr, SOFTPLUS: tl.constexpr):
    """One tile's inputs and states (the forward pass, rebuilt by the backward):

        b = Δ u B,  g_{i,j} = Ā_{i,j} g_{i,j-1} + b_{i,j}   (row pass, from g_carry on the left)
        h_{i,j} = Ā_{i,j} h_{i-1,j} + g_{i,j}               (column pass, from h_carry above)

    with Ā = exp(Δ A). Returns u, x = delta + bias and Δ (BLOCK_H, BLOCK_W), and B, C, Ā, b,
    g, h (BLOCK_N, BLOCK_H, BLOCK_W); Δ = 0 outside the image, so padding is the identity."""
    u = tl.load(u_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
    x, dt = _delta(delta_ptr + chan, offs, mask, bias, ACC, SOFTPLUS)
    Bt = tl.load(B_ptr + bc_base + offs3, mask=mask3, other=0.0).to(ACC)
    Ct = tl.load(C_ptr + bc_base + offs3, mask=mask3, other=0.0).to(ACC)
    a = tl.exp(dt[None, :, :] * A[:, None, None])
    b = (dt * u)[None, :, :] * Bt
    pr, g = tl.associative_scan((a, b), 2, _combine)
    g = g + pr * g_carry[:, :, None]
    pa, q = tl.associative_scan((a, g), 1, _combine)
    h = q + pa * h_carry[:, None, :]
    return u, x, dt, Bt, Ct, a, b, g, h


@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,  # inputs
    out_ptr, carry_ptr, row_carry_ptr,  # (Bsz, D, H, W); (Bsz, D, n_slots, N, W); (Bsz, D, n_wtiles, N, H)
    Dm, H, W, N, G, n_tiles, n_wtiles,
    n_slots,  # band-carry slots: n_tiles with SAVE (kept for the backward), else 2 (1 for one band)
    ACC: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    d, batch = _program_block(Dm, 1)  # program batch · D + d
    offs_n = tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_W)
    mask_n = offs_n < N
    A, bias, skip, chan, bc_base, carry_base, row_carry_base = _channel(
        A_ptr, D_ptr, bias_ptr, d, batch, Dm, H, W, N, G, n_slots, n_wtiles, offs_n, mask_n, ACC, HAS_D, HAS_BIAS)
    NW = tl.cast(N, tl.int64) * W  # int64 strides between band carries (N·W) and row carries (N·H)
    NH = tl.cast(N, tl.int64) * H
    # Band k reads the carry slot holding the row above it and writes its own last row into the
    # next one. With SAVE there is a slot per band (k, then k + 1); without, two slots whose roles
    # swap after each band (read at read_base, written at write_base): a band never writes the
    # slot it reads, and the slot it writes was last read by band k - 1, before its barrier.
    read_base = carry_base
    write_base = carry_base + NW
    for k in range(n_tiles):
        g_carry = tl.zeros([BLOCK_N, BLOCK_H], dtype=ACC)  # g at the column left of the tile
        for c in range(n_wtiles):
            i, j, mask, offs, mask3, offs3, mask_nw, nw, mask_nh, nh = _tile(k, c, rows, cols, offs_n, mask_n, H, W,
                                                                             BLOCK_H, BLOCK_W)
            # h at the last row of the band above (written by this program at band k - 1)
            if SAVE:
                carry_offs = carry_base + k * NW + nw
            else:
                carry_offs = read_base + nw
            h_carry = tl.load(carry_ptr + carry_offs, mask=mask_nw, other=0.0)  # slot 0 holds zeros
            if SAVE:
                row_offs = row_carry_base + c * NH + nh
                tl.store(row_carry_ptr + row_offs, g_carry, mask=mask_nh)
            u, _, _, _, Ct, _, _, g, h = _tile_states(u_ptr, delta_ptr, B_ptr, C_ptr, chan, bc_base, offs, offs3,
                                                     mask, mask3, A, bias, g_carry, h_carry, ACC, SOFTPLUS)
            g_carry = _last_col(g, cols, BLOCK_W)  # padded columns are identities
            if k + 1 < n_tiles:  # padded rows are identities: the last real row's state
                if SAVE:
                    tl.store(carry_ptr + carry_offs + NW, _last_row(h, rows, BLOCK_H), mask=mask_nw)
                else:
                    tl.store(carry_ptr + write_base + nw, _last_row(h, rows, BLOCK_H), mask=mask_nw)
            y = tl.sum(h * Ct, axis=0)
            if HAS_D:
                y += skip * u
            if HAS_Z:
                zz = tl.load(z_ptr + chan + offs, mask=mask, other=0.0).to(ACC)
                y = y * zz * tl.sigmoid(zz)
            tl.store(out_ptr + chan + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
        # the band's carries are stored before the next band loads them, and (two slots) its
        # loads are done before the next band overwrites the slot they read
        tl.debug_barrier()
        if not SAVE:
            read_base, write_base = write_base, read_base


@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, carry_ptr, row_carry_ptr, lam_ptr, dout_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dz_ptr, dbias_ptr,
    Dm, H, W, N, G, n_tiles, n_wtiles,
    ACC: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    d, batch = _program_block(Dm, 1)  # program batch · D + d
    offs_n = tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_W)
    mask_n = offs_n < N
    A, bias, skip, chan, bc_base, carry_base, row_carry_base = _channel(
        A_ptr, D_ptr, bias_ptr, d, batch, Dm, H, W, N, G, n_tiles, n_wtiles, offs_n, mask_n, ACC, HAS_D, HAS_BIAS)
    NW = tl.cast(N, tl.int64) * W  # int64 strides between band carries (N·W) and row carries (N·H)
    NH = tl.cast(N, tl.int64) * H
    lam_base = (batch * Dm + d) * 2 * N * W  # two slots: λh at the first row of the band below, by parity
    dA_acc = tl.zeros([BLOCK_N], dtype=ACC)
    dD_acc = tl.zeros([BLOCK_W], dtype=ACC)
    dbias_acc = tl.zeros([BLOCK_W], dtype=ACC)
    for kk in range(n_tiles):
        k = n_tiles - 1 - kk
        lam_g_carry = tl.zeros([BLOCK_N, BLOCK_H], dtype=ACC)  # λg at the column right of the tile
        for cc in range(n_wtiles):
            c = n_wtiles - 1 - cc
            i, j, mask, offs, mask3, offs3, mask_nw, nw, mask_nh, nh = _tile(k, c, rows, cols, offs_n, mask_n, H, W,
                                                                             BLOCK_H, BLOCK_W)
            carry_offs = carry_base + k * NW + nw
            h_carry = tl.load(carry_ptr + carry_offs, mask=mask_nw, other=0.0)
            row_offs = row_carry_base + c * NH + nh
            g_carry = tl.load(row_carry_ptr + row_offs, mask=mask_nh, other=0.0)
            # zeros below the last band: the slot it reads starts zeroed
            lam_carry = tl.load(lam_ptr + lam_base + ((k + 1) % 2) * N * W + nw, mask=mask_nw, other=0.0)
            u, x, dt, Bt, Ct, _, b, g, h = _tile_states(u_ptr, delta_ptr, B_ptr, C_ptr, chan, bc_base, offs, offs3,
                                                        mask, mask3, A, bias, g_carry, h_carry, ACC, SOFTPLUS)
            dtu = dt * u
            mask_down = ((i + 1) < H)[:, None] & (j < W)[None, :]
            _, dt_down = _delta(delta_ptr + chan, offs + W, mask_down, bias, ACC, SOFTPLUS)
            mask_right = (i < H)[:, None] & ((j + 1) < W)[None, :]
            _, dt_right = _delta(delta_ptr + chan, offs + 1, mask_right, bias, ACC, SOFTPLUS)

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
            ra, lam_g = tl.associative_scan((a_right, lam_h), 2, _combine, reverse=True)
            lam_g = lam_g + ra * lam_g_carry[:, :, None]
            lam_g_carry = _first_col(lam_g, cols)
            tl.store(lam_ptr + lam_base + (k % 2) * N * W + nw, _first_row(lam_h, rows), mask=mask_nw)

            w = lam_h * (h - g) + lam_g * (g - b)
            gB = tl.sum(lam_g * Bt, axis=0)
            du += dt * gB
            ddt = tl.sum(w * A[:, None, None], axis=0) + u * gB
            if SOFTPLUS:
                ddt = ddt * _softplus_slope(x)
            ddt = tl.where(mask, ddt, 0.0)
            dbias_acc += tl.sum(ddt, axis=0)
            dA_acc += tl.sum(tl.sum(w * dt[None, :, :], axis=2), axis=1)
            tl.store(du_ptr + chan + offs, du.to(du_ptr.dtype.element_ty), mask=mask)
            tl.store(ddelta_ptr + chan + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)
            tl.atomic_add(dB_ptr + bc_base + offs3, lam_g * dtu[None, :, :], mask=mask3, sem="relaxed")
            tl.atomic_add(dC_ptr + bc_base + offs3, h * dy[None, :, :], mask=mask3, sem="relaxed")
        tl.debug_barrier()  # the band's λh row is stored before the band above loads it

    tl.store(dA_ptr + (batch * Dm + d) * N + offs_n, dA_acc, mask=mask_n)
    if HAS_D:
        tl.store(dD_ptr + batch * Dm + d, tl.sum(dD_acc, axis=0))
    if HAS_BIAS:
        tl.store(dbias_ptr + batch * Dm + d, tl.sum(dbias_acc, axis=0))


def _blocks(N: int, H: int, W: int, tile: int, block_h: int | None = None,
            block_w: int | None = None) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_H, BLOCK_W): all states; up to MAX_ROW // BLOCK_N columns (the whole
    width when it fits); as many rows as fit in ``tile``. ``block_h`` / ``block_w`` override."""
    BLOCK_N = triton.next_power_of_2(N)
    BLOCK_W = block_w or min(triton.next_power_of_2(W), max(1, MAX_ROW // BLOCK_N))
    BLOCK_H = block_h or max(1, min(MAX_BLOCK_H, triton.next_power_of_2(H), tile // (BLOCK_N * BLOCK_W)))
    return BLOCK_N, BLOCK_H, BLOCK_W


def _num_warps(block_n: int, block_h: int, block_w: int) -> int:
    # as in kernels.selective_scan: 8 warps from 2048-element tiles on, against register spills
    return 8 if block_n * block_h * block_w >= 2048 else 4


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def forward(u, delta, A, B, C, D, z, delta_bias, softplus, save, block_h, block_w):
    """Launch the forward kernel: (out, band carries h (Bsz, D, n_bands, N, W), row carries g
    (Bsz, D, n_wtiles, N, H)), both carries None unless ``save`` (for the backward)."""
    Bsz, Dm, H, W = u.shape
    N, G = A.shape[1], B.shape[1]
    tl_acc, acc = _acc(u.dtype)
    # with gradients the backward reuses these tiles: size them for its budget
    BLOCK_N, BLOCK_H, BLOCK_W = _blocks(N, H, W, BWD_TILE if save else FWD_TILE, block_h, block_w)
    n_tiles, n_wtiles = triton.cdiv(H, BLOCK_H), triton.cdiv(W, BLOCK_W)
    out = torch.empty_like(u)
    # h at the row above each band (slot 0: zeros), one slot per band when the backward reads
    # them, else two used by band parity; g at the column left of each width tile
    n_slots = n_tiles if save else min(n_tiles, 2)
    carries = torch.empty(Bsz, Dm, n_slots, N, W, dtype=acc, device=u.device)
    carries[:, :, 0] = 0.0
    row_carries = torch.empty(Bsz, Dm, n_wtiles, N, H, dtype=acc, device=u.device) if save else None
    ph = u  # a placeholder pointer for absent tensors
    with _launch.device_guard(u):
        _fwd_kernel[_launch.flat_grid(Bsz, Dm)](
            u, delta, A, B, C, ph if D is None else D, ph if z is None else z,
            ph if delta_bias is None else delta_bias, out, carries, carries if row_carries is None else row_carries,
            Dm, H, W, N, G, n_tiles, n_wtiles, n_slots,
            ACC=tl_acc, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus, SAVE=save, BLOCK_N=BLOCK_N, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
            num_warps=_num_warps(BLOCK_N, BLOCK_H, BLOCK_W),
        )  # fmt: skip
    return (out, carries, row_carries) if save else (out, None, None)


def _backward(u, delta, A, B, C, D, z, delta_bias, carries, row_carries, softplus, blocks, dout):
    """Launch the backward kernel and reduce the per-batch-row partial sums: the gradients of
    (u, delta, A, B, C, D, z, delta_bias), None for absent inputs."""
    Bsz, Dm, H, W = u.shape
    N, G = A.shape[1], B.shape[1]
    tl_acc, acc = _acc(u.dtype)
    (BLOCK_H, BLOCK_W), BLOCK_N = blocks, triton.next_power_of_2(N)
    n_tiles, n_wtiles = carries.shape[2], row_carries.shape[2]  # the forward's tiles
    dev = u.device
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA = torch.empty(Bsz, Dm, N, dtype=acc, device=dev)
    dB = torch.zeros(B.shape, dtype=acc, device=dev)
    dC = torch.zeros(C.shape, dtype=acc, device=dev)
    dD = None if D is None else torch.empty(Bsz, Dm, dtype=acc, device=dev)
    dbias = None if delta_bias is None else torch.empty(Bsz, Dm, dtype=acc, device=dev)
    lam = torch.zeros(Bsz, Dm, 2, N, W, dtype=acc, device=dev)  # λh rows between bands, two slots
    ph = du
    with _launch.device_guard(u):
        _bwd_kernel[_launch.flat_grid(Bsz, Dm)](
            u, delta, A, B, C, ph if D is None else D, ph if z is None else z,
            ph if delta_bias is None else delta_bias, carries, row_carries, lam, dout,
            du, ddelta, dA, dB, dC, dA if dD is None else dD, ph if dz is None else dz,
            dA if dbias is None else dbias,
            Dm, H, W, N, G, n_tiles, n_wtiles,
            ACC=tl_acc, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus, BLOCK_N=BLOCK_N, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W,
            num_warps=_num_warps(BLOCK_N, BLOCK_H, BLOCK_W),
        )  # fmt: skip
    return (
        du, ddelta, dA.sum(0).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
        None if D is None else dD.sum(0).to(D.dtype), dz,
        None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
    )


def gradients(saved, softplus, block_h, block_w, dout, needs):
    """The backward from what the forward saved: ``saved`` = (u, delta, A, B, C, D, z,
    delta_bias, carries, row_carries), ``block_h`` / ``block_w`` the forward's overrides,
    ``needs`` which of (u, delta, A, B, C, D, z, delta_bias) want a gradient. The gradients
    of those eight, None where not needed."""
    u, delta, A, B, C, D, z, delta_bias, carries, row_carries = saved
    _, _, H, W = u.shape
    blocks = _blocks(A.shape[1], H, W, BWD_TILE, block_h, block_w)[1:]  # the forward's tiles
    grads = _backward(u, delta, A, B, C, D, z, delta_bias, carries, row_carries, softplus, blocks,
                      dout.contiguous())
    return tuple(g if need else None for g, need in zip(grads, needs))


class SelectiveScan2DTriton(torch.autograd.Function):
    """The Triton 2D scan with its hand-written backward (eager mode; under ``torch.compile``
    the same launches run as the ops of :mod:`kernels.selective_scan_2d.triton_op`)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, block_h, block_w):
        out, carries, row_carries = forward(u, delta, A, B, C, D, z, delta_bias, softplus, True, block_h, block_w)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, carries, row_carries)
        ctx.softplus, ctx.block_h, ctx.block_w = softplus, block_h, block_w
        return out

    @staticmethod
    @first_order_only("selective_scan_2d (triton)")
    def backward(ctx, dout):
        grads = gradients(ctx.saved_tensors, ctx.softplus, ctx.block_h, ctx.block_w, dout, ctx.needs_input_grad[:8])
        return (*grads, None, None, None)
