"""Selective scan in Triton (same contract as :func:`selective_scan_reference`, real A).

Forward. One program per (block of BLOCK_D channels, batch row), on a 1D grid of
Bsz · cdiv(D, BLOCK_D) programs with a row's channel blocks consecutive (a grid dimension of
its own would cap the batch at CUDA's 65535).
The program holds the state h (BLOCK_D, BLOCK_N) in registers (N padded to a power of two,
padded states have A = 0 and B = C = 0, so they stay 0) and walks L in tiles of BLOCK_L steps.
For a tile it loads u, delta, z as (BLOCK_D, BLOCK_L) rows (contiguous along L) and variable
B, C as (BLOCK_N, BLOCK_L), forms per step

    a_t = exp(Δ_t A),  b_t = Δ_t u_t B_t                      (BLOCK_D, BLOCK_N, BLOCK_L)

and runs ``tl.associative_scan`` along time with the composition of affine maps

    (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2)                  (step 1 first, then step 2),

so h_t = P_t · h_carry + Q_t; the last column is the carry into the next tile (steps past L
have Δ = 0, i.e. the identity (1, 0)). y_t = Σ_n C_t[n] h_t[n] is a reduction over the state
axis; out = (y + D u) · silu(z) is stored in u's dtype. All arithmetic is in float32 (float64
for float64 inputs): half inputs are upcast right after the load.

Saved for the backward: the state at the start of every tile, (Bsz, D, n_tiles, N), in the
compute dtype (n_tiles = cdiv(L, BLOCK_L)), besides the inputs themselves.

Backward. Same grid and tiles, walked from the last tile to the first. Per tile the states
h_t are recomputed from the saved tile-start state (one forward scan), then the adjoint

    g_t = dL/dh_t = C_t dy_t + a_{t+1} g_{t+1},   g_{L-1} = C_{L-1} dy_{L-1} + dL/dh_{L-1}

is a second scan along time with ``reverse=True`` (same combine; the multiplier a_{t+1} is
read one step further along, 1 past the end) whose carry is g at the first step of the tile
after. With w_t = g_t ⊙ a_t h_{t-1} = g_t ⊙ (h_t - b_t) (as mamba_ssm's CUDA backward; where
a_t << 1 the difference cancels to rounding, so dA entries of states that decay within one
step carry an absolute error of about eps·|g h|):

    dΔ_t = Σ_n A w_t + u_t Σ_n g_t B_t     du_t = Δ_t Σ_n g_t B_t + D dy_t
    dA = Σ_t Δ_t w_t     dB_t = Σ_d g_t Δ_t u_t     dC_t = Σ_d dy_t h_t     dh0 = a_0 g_0

(then through softplus and the bias; dz and dy come from the gate). Per-(batch, channel)
sums over time (dA, dD, d delta_bias, constant dB / dC) are written as partials per batch row
and summed over the batch in PyTorch. Variable B / C (Bsz, G, N, L) are shared by the
channels of a group: every program adds its channel-summed (BLOCK_N, BLOCK_L) tile into a
buffer in the compute dtype with ``tl.atomic_add``. BLOCK_D divides the channels per group, so a program
never straddles two groups. The order of those adds varies between runs: on a GPU, variable dB / dC
are reproducible only to float rounding.

Importing this module decorates the kernels, which fixes whether they run compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); the entry point,
:func:`kernels.selective_scan.triton_op.selective_scan_triton`, imports it on first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels._autograd import first_order_only

BLOCK_L = 64  # time steps per tile (at most; short sequences use the next power of 2 >= L)
MIN_BLOCK_L = 16  # smallest tile along L
FWD_TILE = 4096  # elements of one (BLOCK_D, BLOCK_N, BLOCK_L) register tile, forward
BWD_TILE = 2048  # the same for the backward, which keeps about twice as many tiles live
MAX_BLOCK_D = 64  # channels per program (at most)


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # log(1 + e) computed as log(p) · e / (p - 1) with p = 1 + e: exact to rounding even where
    # e is below the precision of 1 (the rounding error of p cancels). Above 20, x itself. NaN
    # stays NaN (min.f32 would return the 20 and hide a diverged Δ).
    e = tl.exp(tl.minimum(x, 20.0, propagate_nan=tl.PropagateNan.ALL))
    p = 1.0 + e
    lp = tl.where(p == 1.0, e, tl.log(p) * (e / (p - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _softplus_slope(x):
    # d softplus / dx = sigmoid(x), and 1 above 20, where _softplus is x itself
    return tl.where(x > 20.0, 1.0, tl.sigmoid(x))


@triton.jit
def _program_block(Dm, BLOCK_D: tl.constexpr):
    """(first channel, batch row as int64) of this program on the 1D grid of Bsz · cdiv(Dm,
    BLOCK_D) programs, the channel blocks of a batch row consecutive."""
    pid = tl.program_id(0)
    n_dblocks = tl.cdiv(Dm, BLOCK_D)
    return (pid % n_dblocks) * BLOCK_D, (pid // n_dblocks).to(tl.int64)


@triton.jit
def _load_delta(ptr, offs, mask, bias, ACC: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(delta + bias, Δ) for a (BLOCK_D, BLOCK_L) tile; Δ = 0 outside ``mask``."""
    x = tl.load(ptr + offs, mask=mask, other=0.0).to(ACC)
    if HAS_BIAS:
        x = x + bias[:, None]
    dt = x
    if SOFTPLUS:
        dt = _softplus(x)
    return x, tl.where(mask, dt, 0.0)


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr,  # (Bsz, D, L)
    delta_ptr,  # (Bsz, D, L)
    A_ptr,  # (D, N)
    B_ptr,  # (Bsz, GB, N, L) or (D, N)
    C_ptr,  # (Bsz, GC, N, L) or (D, N)
    D_ptr,  # (D,)
    z_ptr,  # (Bsz, D, L)
    bias_ptr,  # (D,)
    h0_ptr,  # (Bsz, D, N)
    out_ptr,  # (Bsz, D, L), u's dtype
    last_ptr,  # (Bsz, D, N), compute dtype
    states_ptr,  # (Bsz, D, n_tiles, N), compute dtype
    Dm,
    L,
    N,
    GB,
    GC,
    cpg_B,  # channels per group of B
    cpg_C,
    n_tiles,
    ACC: tl.constexpr,
    B_VAR: tl.constexpr,
    C_VAR: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr,
    SAVE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    d0, batch = _program_block(Dm, BLOCK_D)
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < Dm
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]

    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(ACC)
    bias = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    skip = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    B_const = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    if not B_VAR:
        B_const = tl.load(B_ptr + dn, mask=mask_dn, other=0.0).to(ACC)
    C_const = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    if not C_VAR:
        C_const = tl.load(C_ptr + dn, mask=mask_dn, other=0.0).to(ACC)
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    if HAS_H0:
        h = tl.load(h0_ptr + batch * Dm * N + dn, mask=mask_dn, other=0.0).to(ACC)

    row = batch * Dm * L + offs_d[:, None].to(tl.int64) * L  # (BLOCK_D, 1)
    B_row = (batch * GB + d0 // cpg_B) * N * L + offs_n[:, None].to(tl.int64) * L  # (BLOCK_N, 1)
    C_row = (batch * GC + d0 // cpg_C) * N * L + offs_n[:, None].to(tl.int64) * L
    state_off = (batch * Dm + offs_d[:, None]) * n_tiles * N + offs_n[None, :]
    last_col = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]

    for k in range(n_tiles):
        if SAVE_STATES:
            tl.store(states_ptr + state_off + k * N, h, mask=mask_dn)
        offs_t = k * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_t = offs_t < L
        mask = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        offs = row + offs_t[None, :]

        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(ACC)
        _, dt = _load_delta(delta_ptr, offs, mask, bias, ACC, HAS_BIAS, SOFTPLUS)
        if B_VAR:
            Bt = tl.load(B_ptr + B_row + offs_t[None, :], mask=mask_nt, other=0.0).to(ACC)[None, :, :]
        else:
            Bt = B_const[:, :, None]
        if C_VAR:
            Ct = tl.load(C_ptr + C_row + offs_t[None, :], mask=mask_nt, other=0.0).to(ACC)[None, :, :]
        else:
            Ct = C_const[:, :, None]

        a = tl.exp(dt[:, None, :] * A[:, :, None])
        b = (dt * u)[:, None, :] * Bt
        pa, pb = tl.associative_scan((a, b), 2, _combine)
        hs = pa * h[:, :, None] + pb  # h_t for the tile's steps

        y = tl.sum(hs * Ct, axis=1)
        if HAS_D:
            y += skip[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
        h = tl.sum(tl.where(last_col, hs, 0.0), axis=2)

    tl.store(last_ptr + batch * Dm * N + dn, h, mask=mask_dn)


@triton.jit
def _selective_scan_bwd_kernel(
    u_ptr,
    delta_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    states_ptr,  # (Bsz, D, n_tiles, N) from the forward
    dout_ptr,  # (Bsz, D, L)
    dlast_ptr,  # (Bsz, D, N)
    du_ptr,  # (Bsz, D, L), u's dtype
    ddelta_ptr,  # (Bsz, D, L), delta's dtype
    dz_ptr,  # (Bsz, D, L), z's dtype
    dA_ptr,  # (Bsz, D, N) partial sums per batch row, compute dtype
    dB_ptr,  # variable: (Bsz, GB, N, L) accumulated with atomics; constant: (Bsz, D, N) partials
    dC_ptr,
    dD_ptr,  # (Bsz, D) partials
    dbias_ptr,  # (Bsz, D) partials
    dh0_ptr,  # (Bsz, D, N)
    Dm,
    L,
    N,
    GB,
    GC,
    cpg_B,
    cpg_C,
    n_tiles,
    ACC: tl.constexpr,
    B_VAR: tl.constexpr,
    C_VAR: tl.constexpr,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    HAS_DLAST: tl.constexpr,
    NEED_DH0: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    d0, batch = _program_block(Dm, BLOCK_D)
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < Dm
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    bdn = batch * Dm * N + dn

    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0).to(ACC)
    bias = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    skip = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_D:
        skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    B_const = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    if not B_VAR:
        B_const = tl.load(B_ptr + dn, mask=mask_dn, other=0.0).to(ACC)
    C_const = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    if not C_VAR:
        C_const = tl.load(C_ptr + dn, mask=mask_dn, other=0.0).to(ACC)
    g = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)  # g at the first step of the tile after
    if HAS_DLAST:
        g = tl.load(dlast_ptr + bdn, mask=mask_dn, other=0.0).to(ACC)

    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dB_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dC_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dD_acc = tl.zeros([BLOCK_D], dtype=ACC)
    dbias_acc = tl.zeros([BLOCK_D], dtype=ACC)
    a_first = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)

    row = batch * Dm * L + offs_d[:, None].to(tl.int64) * L
    B_row = (batch * GB + d0 // cpg_B) * N * L + offs_n[:, None].to(tl.int64) * L
    C_row = (batch * GC + d0 // cpg_C) * N * L + offs_n[:, None].to(tl.int64) * L
    state_off = (batch * Dm + offs_d[:, None]) * n_tiles * N + offs_n[None, :]
    first_col = (tl.arange(0, BLOCK_L) == 0)[None, None, :]

    for i in range(n_tiles):
        k = n_tiles - 1 - i
        offs_t = k * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_t = offs_t < L
        mask = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        offs = row + offs_t[None, :]

        # Recompute the tile's states from the saved tile-start state.
        h = tl.load(states_ptr + state_off + k * N, mask=mask_dn, other=0.0)
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(ACC)
        x, dt = _load_delta(delta_ptr, offs, mask, bias, ACC, HAS_BIAS, SOFTPLUS)
        mask_next = mask_d[:, None] & (offs_t + 1 < L)[None, :]
        _, dt_next = _load_delta(delta_ptr, offs + 1, mask_next, bias, ACC, HAS_BIAS, SOFTPLUS)
        if B_VAR:
            Bt = tl.load(B_ptr + B_row + offs_t[None, :], mask=mask_nt, other=0.0).to(ACC)[None, :, :]
        else:
            Bt = B_const[:, :, None]
        if C_VAR:
            Ct = tl.load(C_ptr + C_row + offs_t[None, :], mask=mask_nt, other=0.0).to(ACC)[None, :, :]
        else:
            Ct = C_const[:, :, None]
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        dtu = dt * u
        b = dtu[:, None, :] * Bt
        pa, pb = tl.associative_scan((a, b), 2, _combine)
        hs = pa * h[:, :, None] + pb

        # Through the gate and the skip connection.
        dy = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(ACC)
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
            sz = tl.sigmoid(z)
            y = tl.sum(hs * Ct, axis=1)
            if HAS_D:
                y += skip[:, None] * u
            dz = dy * y * sz * (1.0 + z * (1.0 - sz))
            tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dy * z * sz
        du = skip[:, None] * dy
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)

        # Adjoint scan, from the end of the tile; past L the multiplier is 1.
        a_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        beta = Ct * dy[:, None, :]
        qa, qb = tl.associative_scan((a_next, beta), 2, _combine, reverse=True)
        gs = qa * g[:, :, None] + qb  # g_t for the tile's steps

        w = gs * (hs - b)  # g_t · a_t h_{t-1}
        gB = tl.sum(gs * Bt, axis=1)
        du += dt * gB
        ddt = tl.sum(w * A[:, :, None], axis=1) + u * gB
        if SOFTPLUS:
            ddt = ddt * _softplus_slope(x)
        ddt = tl.where(mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        dA_acc += tl.sum(w * dt[:, None, :], axis=2)
        tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + offs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)

        dBt = gs * dtu[:, None, :]
        if B_VAR:
            tl.atomic_add(dB_ptr + B_row + offs_t[None, :], tl.sum(dBt, axis=0), mask=mask_nt, sem="relaxed")
        else:
            dB_acc += tl.sum(dBt, axis=2)
        dCt = hs * dy[:, None, :]
        if C_VAR:
            tl.atomic_add(dC_ptr + C_row + offs_t[None, :], tl.sum(dCt, axis=0), mask=mask_nt, sem="relaxed")
        else:
            dC_acc += tl.sum(dCt, axis=2)

        g = tl.sum(tl.where(first_col, gs, 0.0), axis=2)
        a_first = tl.sum(tl.where(first_col, a, 0.0), axis=2)

    tl.store(dA_ptr + bdn, dA_acc, mask=mask_dn)
    if not B_VAR:
        tl.store(dB_ptr + bdn, dB_acc, mask=mask_dn)
    if not C_VAR:
        tl.store(dC_ptr + bdn, dC_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + batch * Dm + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + batch * Dm + offs_d, dbias_acc, mask=mask_d)
    if NEED_DH0:
        tl.store(dh0_ptr + bdn, a_first * g, mask=mask_dn)


# ---------------------------------------------------------------------------------------------
# Launch heuristics


def _pow2_divisor(n: int) -> int:
    """The largest power of two dividing n (n >= 1)."""
    return n & -n


def _tile_sizes(N: int, L: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_L): BLOCK_N covers all states; BLOCK_L is at most BLOCK_L and small
    enough that a backward tile of one channel fits in BWD_TILE elements (forward and backward
    use the same tiles: the saved states are per tile)."""
    block_n = triton.next_power_of_2(N)
    block_l = min(BLOCK_L, max(MIN_BLOCK_L, triton.next_power_of_2(L)))
    return block_n, max(MIN_BLOCK_L, min(block_l, BWD_TILE // block_n))


def _block_d(Dm: int, block_n: int, block_l: int, cpgs: list[int], budget: int) -> int:
    """Channels per program: fills ``budget`` elements per (BLOCK_D, BLOCK_N, BLOCK_L) tile, at
    most MAX_BLOCK_D and the next power of two >= D, and divides the channels per group of a
    variable B / C (so that a program reads one group)."""
    cap = min(MAX_BLOCK_D, triton.next_power_of_2(Dm))
    for cpg in cpgs:
        cap = min(cap, _pow2_divisor(cpg))
    return max(1, min(cap, budget // (block_n * block_l)))


def _num_warps(block_d: int, block_n: int, block_l: int) -> int:
    # 8 warps from 2048-element tiles on: at 4 warps the backward needs ~255 registers per
    # thread and spills (ptxas, sm_90, N = 16, BLOCK_L = 64); at 8 it fits in ~216.
    return 8 if block_d * block_n * block_l >= 2048 else 4


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _groups(M: torch.Tensor, Dm: int) -> tuple[bool, int, int]:
    """(variable, G, channels per group) of a canonical B or C."""
    if M.dim() == 2:
        return False, 1, Dm
    G = M.shape[1]
    return True, G, Dm // G


def forward(u, delta, A, B, C, D, z, delta_bias, h0, softplus, save_states):
    """Launch the forward kernel: (out, last_state, tile-start states or None); the tiles are
    :func:`_tile_sizes`', which the backward recomputes."""
    Bsz, Dm, L = u.shape
    N = A.shape[1]
    tl_acc, acc = _acc(u.dtype)
    B_var, GB, cpg_B = _groups(B, Dm)
    C_var, GC, cpg_C = _groups(C, Dm)
    block_n, block_l = _tile_sizes(N, L)
    block_d = _block_d(Dm, block_n, block_l, [c for c, v in ((cpg_B, B_var), (cpg_C, C_var)) if v], FWD_TILE)
    n_tiles = triton.cdiv(L, block_l)
    out = torch.empty((Bsz, Dm, L), dtype=u.dtype, device=u.device)
    last = torch.empty((Bsz, Dm, N), dtype=acc, device=u.device)
    states = torch.empty((Bsz, Dm, n_tiles, N), dtype=acc, device=u.device) if save_states else None
    ph = u  # a placeholder pointer for absent tensors
    grid = _launch.flat_grid(Bsz, triton.cdiv(Dm, block_d))
    with _launch.device_guard(u):
        _selective_scan_fwd_kernel[grid](
            u, delta, A, B, C,
            ph if D is None else D,
            ph if z is None else z,
            ph if delta_bias is None else delta_bias,
            ph if h0 is None else h0,
            out, last,
            last if states is None else states,
            Dm, L, N, GB, GC, cpg_B, cpg_C, n_tiles,
            ACC=tl_acc,
            B_VAR=B_var,
            C_VAR=C_var,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus,
            HAS_H0=h0 is not None,
            SAVE_STATES=save_states,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            BLOCK_L=block_l,
            num_warps=_num_warps(block_d, block_n, block_l),
        )  # fmt: skip
    return out, last, states


def _backward(u, delta, A, B, C, D, z, delta_bias, states, block_l, softplus, dout, dlast, need_dh0):
    """Launch the backward kernel and reduce the partial sums: the gradients of
    (u, delta, A, B, C, D, z, delta_bias, h0), None for absent inputs."""
    Bsz, Dm, L = u.shape
    N = A.shape[1]
    tl_acc, acc = _acc(u.dtype)
    B_var, GB, cpg_B = _groups(B, Dm)
    C_var, GC, cpg_C = _groups(C, Dm)
    block_n = triton.next_power_of_2(N)
    block_d = _block_d(Dm, block_n, block_l, [c for c, v in ((cpg_B, B_var), (cpg_C, C_var)) if v], BWD_TILE)
    n_tiles = states.shape[2]
    dev = u.device
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA = torch.empty((Bsz, Dm, N), dtype=acc, device=dev)
    dB = torch.zeros(B.shape, dtype=acc, device=dev) if B_var else torch.empty((Bsz, Dm, N), dtype=acc, device=dev)
    dC = torch.zeros(C.shape, dtype=acc, device=dev) if C_var else torch.empty((Bsz, Dm, N), dtype=acc, device=dev)
    dD = None if D is None else torch.empty((Bsz, Dm), dtype=acc, device=dev)
    dbias = None if delta_bias is None else torch.empty((Bsz, Dm), dtype=acc, device=dev)
    dh0 = torch.empty((Bsz, Dm, N), dtype=acc, device=dev) if need_dh0 else None
    ph = du
    grid = _launch.flat_grid(Bsz, triton.cdiv(Dm, block_d))
    with _launch.device_guard(u):
        _selective_scan_bwd_kernel[grid](
            u, delta, A, B, C,
            ph if D is None else D,
            ph if z is None else z,
            ph if delta_bias is None else delta_bias,
            states, dout,
            ph if dlast is None else dlast,
            du, ddelta,
            ph if dz is None else dz,
            dA, dB, dC,
            dA if dD is None else dD,
            dA if dbias is None else dbias,
            dA if dh0 is None else dh0,
            Dm, L, N, GB, GC, cpg_B, cpg_C, n_tiles,
            ACC=tl_acc,
            B_VAR=B_var,
            C_VAR=C_var,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=softplus,
            HAS_DLAST=dlast is not None,
            NEED_DH0=need_dh0,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            BLOCK_L=block_l,
            num_warps=_num_warps(block_d, block_n, block_l),
        )  # fmt: skip
    grad_B = dB.to(B.dtype) if B_var else dB.sum(0).to(B.dtype)
    grad_C = dC.to(C.dtype) if C_var else dC.sum(0).to(C.dtype)
    return (
        du,
        ddelta,
        dA.sum(0).to(A.dtype),
        grad_B,
        grad_C,
        None if D is None else dD.sum(0).to(D.dtype),
        dz,
        None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
        dh0,
    )


def gradients(saved, softplus, h0_dtype, dout, dlast, needs):
    """The backward from what the forward saved: ``saved`` = (u, delta, A, B, C, D, z,
    delta_bias, states), ``needs`` which of (u, delta, A, B, C, D, z, delta_bias, h0) want a
    gradient (h0_dtype None when there was no h0). The gradients of those nine, None where
    not needed."""
    u, delta, A, B, C, D, z, delta_bias, states = saved
    dout = torch.zeros_like(u) if dout is None else dout.contiguous()
    dlast = None if dlast is None else dlast.contiguous()
    need_dh0 = h0_dtype is not None and needs[8]
    block_l = _tile_sizes(A.shape[1], u.shape[2])[1]  # the forward's tiles
    grads = list(_backward(u, delta, A, B, C, D, z, delta_bias, states, block_l, softplus, dout, dlast, need_dh0))
    if grads[8] is not None:
        grads[8] = grads[8].to(h0_dtype)
    return tuple(g if need else None for g, need in zip(grads, needs))


class SelectiveScanTriton(torch.autograd.Function):
    """The Triton scan with its hand-written backward (eager mode; under ``torch.compile`` the
    same launches run as the ops of :mod:`kernels.selective_scan.triton_op`)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, softplus):
        out, last, states = forward(u, delta, A, B, C, D, z, delta_bias, h0, softplus, True)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.softplus = softplus
        ctx.h0_dtype = None if h0 is None else h0.dtype
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    @first_order_only("selective_scan (triton)")
    def backward(ctx, dout, dlast):
        grads = gradients(ctx.saved_tensors, ctx.softplus, ctx.h0_dtype, dout, dlast, ctx.needs_input_grad[:9])
        return (*grads, None)
