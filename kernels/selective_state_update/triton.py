"""Single step of the selective scan in Triton (forward only, for decoding).

One program per (block of channels, batch row), on a 1D grid of Bsz · cdiv(D, BLOCK_D)
programs with a row's channel blocks consecutive (a grid dimension of its own would cap the
batch at CUDA's 65535). The program loads its (BLOCK_D, N)
tile of the state into registers (N padded to a power of two), computes in float32
(float64 for float64 inputs) and writes the new state to a separate output tensor, so the
input state is left untouched:

    Δ = softplus(dt + dt_bias),    h' = exp(Δ A) ⊙ h + (Δ x) B[g],    y = (h' C[g] + D x) · silu(z)

with g = d // (D / G) looked up per channel row, so a block may straddle groups. Inputs and
outputs may be float16, bfloat16, float32 or float64 (each tensor keeps its own dtype).

Importing this module decorates the kernel, which fixes whether it runs compiled or in the
Triton interpreter (``TRITON_INTERPRET=1``); the entry point,
:func:`kernels.selective_state_update.triton_op.selective_state_update_triton`, imports it on
first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels.selective_scan.triton import (  # the 1D kernel's grid decoding and softplus
    _program_block,
    _softplus,
)

# Channels per program: about 512 state values per program (32 channels at N = 16, 4 at
# N >= 128), so the tile stays in registers for every state size.
TILE = 512
MIN_BLOCK_D, MAX_BLOCK_D = 4, 32


@triton.jit
def _selective_state_update_kernel(
    state_ptr,  # (B, D, N)
    x_ptr,  # (B, D)
    dt_ptr,  # (B, D)
    A_ptr,  # (D, N)
    B_ptr,  # (B, G, N)
    C_ptr,  # (B, G, N)
    D_ptr,  # (D,); unused without HAS_D
    z_ptr,  # (B, D); unused without HAS_Z
    dt_bias_ptr,  # (D,); unused without HAS_DT_BIAS
    y_ptr,  # (B, D) out
    new_state_ptr,  # (B, D, N) out
    dim,
    N,
    per_group,  # D / G
    stride_sb, stride_sd, stride_sn,
    stride_xb, stride_xd,
    stride_tb, stride_td,
    stride_ad, stride_an,
    stride_bb, stride_bg, stride_bn,
    stride_cb, stride_cg, stride_cn,
    stride_dd,
    stride_zb, stride_zd,
    stride_biasd,
    stride_yb, stride_yd,
    stride_ob, stride_od, stride_on,
    ACC: tl.constexpr,  # compute dtype: float32 or float64
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr,
    DT_SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    d0, batch = _program_block(dim, BLOCK_D)
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < N
    mask = mask_d[:, None] & mask_n[None, :]
    # indices that multiply strides, in int64: a channel or state stride times the index can
    # pass 2^31 (a state cache laid out (N, B, D), a large D·N) where the tensors still fit
    chan = offs_d.to(tl.int64)
    state_idx = offs_n.to(tl.int64)
    group = (offs_d // per_group).to(tl.int64)

    h = tl.load(
        state_ptr + batch * stride_sb + chan[:, None] * stride_sd + state_idx[None, :] * stride_sn,
        mask=mask, other=0.0,
    ).to(ACC)
    x = tl.load(x_ptr + batch * stride_xb + chan * stride_xd, mask=mask_d, other=0.0).to(ACC)
    dt = tl.load(dt_ptr + batch * stride_tb + chan * stride_td, mask=mask_d, other=0.0).to(ACC)
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + chan * stride_biasd, mask=mask_d, other=0.0).to(ACC)
    if DT_SOFTPLUS:
        dt = _softplus(dt)
    A = tl.load(A_ptr + chan[:, None] * stride_ad + state_idx[None, :] * stride_an, mask=mask, other=0.0).to(ACC)
    Bv = tl.load(
        B_ptr + batch * stride_bb + group[:, None] * stride_bg + state_idx[None, :] * stride_bn,
        mask=mask, other=0.0,
    ).to(ACC)
    Cv = tl.load(
        C_ptr + batch * stride_cb + group[:, None] * stride_cg + state_idx[None, :] * stride_cn,
        mask=mask, other=0.0,
    ).to(ACC)

    h = tl.exp(A * dt[:, None]) * h + (dt * x)[:, None] * Bv
    y = tl.sum(h * Cv, axis=1)
    if HAS_D:
        y += x * tl.load(D_ptr + chan * stride_dd, mask=mask_d, other=0.0).to(ACC)
    if HAS_Z:
        z = tl.load(z_ptr + batch * stride_zb + chan * stride_zd, mask=mask_d, other=0.0).to(ACC)
        y *= z / (1.0 + tl.exp(-z))

    tl.store(y_ptr + batch * stride_yb + chan * stride_yd, y.to(y_ptr.dtype.element_ty), mask=mask_d)
    tl.store(
        new_state_ptr + batch * stride_ob + chan[:, None] * stride_od + state_idx[None, :] * stride_on,
        h.to(new_state_ptr.dtype.element_ty),
        mask=mask,
    )


def forward(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    """Launch the step on canonical arguments (B, C (Bsz, G, N)): (y (Bsz, D) in x's dtype,
    new state (Bsz, D, N) in state's dtype), no gradient."""
    Bsz, Dm, N = state.shape
    y = torch.empty(Bsz, Dm, dtype=x.dtype, device=x.device)
    new_state = torch.empty(Bsz, Dm, N, dtype=state.dtype, device=state.device)
    if y.numel() == 0:
        return y, new_state
    acc = tl.float64 if torch.float64 in (x.dtype, state.dtype) else tl.float32
    block_n = triton.next_power_of_2(max(N, 1))
    block_d = min(max(MIN_BLOCK_D, min(MAX_BLOCK_D, TILE // block_n)), triton.next_power_of_2(Dm))
    G = B.shape[1]
    # Placeholders for absent optional tensors (never read: the flags compile the loads away).
    D_arg = x if D is None else D
    z_arg = x if z is None else z
    bias_arg = x if dt_bias is None else dt_bias
    grid = _launch.flat_grid(Bsz, triton.cdiv(Dm, block_d))
    with _launch.device_guard(x):
        _selective_state_update_kernel[grid](
            state, x, dt, A, B, C, D_arg, z_arg, bias_arg, y, new_state,
            Dm, N, Dm // G,
            *state.stride(),
            *x.stride(),
            *dt.stride(),
            *A.stride(),
            *B.stride(),
            *C.stride(),
            D_arg.stride(0),
            *z_arg.stride(),
            bias_arg.stride(0),
            *y.stride(),
            *new_state.stride(),
            ACC=acc,
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_DT_BIAS=dt_bias is not None,
            DT_SOFTPLUS=bool(dt_softplus),
            BLOCK_D=block_d,
            BLOCK_N=block_n,
        )
    return y, new_state

