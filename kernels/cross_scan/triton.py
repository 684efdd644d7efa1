"""Cross-scan / cross-merge in Triton: one program per (image row of the batch·channel
grid, block of BLOCK pixels). The scan reads each pixel once and writes it to its four
positions (row-major p, column-major j·H + i, and both mirrored L-1-·); the merge reads the
four entries of each pixel and writes their sum once (in float32 for half inputs, float64
for float64). Each op's backward launches the other.

Importing this module decorates the kernels, which fixes whether they run compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); ``kernels.cross_scan`` imports it on
first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.cross_scan.pytorch import adjoint_pair

BLOCK = 1024  # pixels per program (at most)


@triton.jit
def _scan_kernel(x_ptr, y_ptr, C, H, W, BLOCK: tl.constexpr):
    row = tl.program_id(0)  # b·C + c
    b = row // C
    c = row % C
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    L = H * W
    mask = p < L
    v = tl.load(x_ptr + row.to(tl.int64) * L + p, mask=mask)
    q = (p % W) * H + p // W  # column-major position of pixel p
    stride_k = C.to(tl.int64) * L
    out = y_ptr + (b.to(tl.int64) * 4 * C + c) * L
    tl.store(out + p, v, mask=mask)
    tl.store(out + stride_k + q, v, mask=mask)
    tl.store(out + 2 * stride_k + (L - 1 - p), v, mask=mask)
    tl.store(out + 3 * stride_k + (L - 1 - q), v, mask=mask)


@triton.jit
def _merge_kernel(y_ptr, x_ptr, C, H, W, ACC: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    b = row // C
    c = row % C
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    L = H * W
    mask = p < L
    q = (p % W) * H + p // W
    stride_k = C.to(tl.int64) * L
    src = y_ptr + (b.to(tl.int64) * 4 * C + c) * L
    acc = tl.load(src + p, mask=mask, other=0.0).to(ACC)
    acc += tl.load(src + stride_k + q, mask=mask, other=0.0).to(ACC)
    acc += tl.load(src + 2 * stride_k + (L - 1 - p), mask=mask, other=0.0).to(ACC)
    acc += tl.load(src + 3 * stride_k + (L - 1 - q), mask=mask, other=0.0).to(ACC)
    tl.store(x_ptr + row.to(tl.int64) * L + p, acc.to(x_ptr.dtype.element_ty), mask=mask)


def _block(L: int) -> int:
    return min(BLOCK, triton.next_power_of_2(L))


def _launch_scan(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    x = x.contiguous()
    y = torch.empty(B, 4, C, H * W, dtype=x.dtype, device=x.device)
    if y.numel():
        blk = _block(H * W)
        _scan_kernel[(B * C, triton.cdiv(H * W, blk))](x, y, C, H, W, BLOCK=blk)
    return y


def _launch_merge(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    B, _, C, L = y.shape
    y = y.contiguous()
    x = torch.empty(B, C, H, W, dtype=y.dtype, device=y.device)
    if x.numel():
        blk = _block(L)
        acc = tl.float64 if y.dtype == torch.float64 else tl.float32
        _merge_kernel[(B * C, triton.cdiv(L, blk))](y, x, C, H, W, ACC=acc, BLOCK=blk)
    return x


_cross_scan, _cross_merge = adjoint_pair(_launch_scan, _launch_merge)


def cross_scan_triton(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, 4, C, H·W)."""
    return _cross_scan(x)


def cross_merge_triton(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """y (B, 4, C, H·W) -> (B, C, H, W)."""
    return _cross_merge(y, H, W)
