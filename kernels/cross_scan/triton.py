"""Cross-scan / cross-merge in Triton, on 2D tiles of the image.

Program (r, ti, tj) handles image r = b·C + c of the (B·C, Hgt, Wdt) batch and the tile of
rows ti·TILE_H ... and columns tj·TILE_W ... . Pixel (i, j), row-major p = i·W + j, sits at
position p of k0, q = j·H + i of k1, L-1-p of k2 and L-1-q of k3 (L = H·W).

- scan: reads the tile once and writes it to the four sequences;
- merge: reads the tile's four entries and writes their sum once (accumulated in float32
  for half inputs, float64 for float64).

A tile keeps both k0 (along rows) and k1 (along columns) runs of contiguous addresses, so
the column-major reads and writes are coalesced too (the compiler transposes the tile
through shared memory). Any Hgt, Wdt >= 1 works: edge tiles are masked. Each op's
backward launches the other.

Importing this module decorates the kernels, which fixes whether they run compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); the entry points, in
:mod:`kernels.cross_scan.triton_op`, import it on first use.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels.cross_scan.pytorch import adjoint_pair

TILE = 64  # the side of a square tile; a thin image gets a longer, thinner tile
MAX_TILE_ELEMENTS = TILE * TILE


@triton.jit
def _tile_positions(H, W, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    i = tl.program_id(1) * TILE_H + tl.arange(0, TILE_H)[:, None]
    j = tl.program_id(2) * TILE_W + tl.arange(0, TILE_W)[None, :]
    mask = (i < H) & (j < W)
    return i * W + j, j * H + i, mask


@triton.jit
def _scan_kernel(x_ptr, y_ptr, C, H, W, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)  # b·C + c
    b = r // C
    c = r % C
    L = H * W
    p, q, mask = _tile_positions(H, W, TILE_H, TILE_W)
    v = tl.load(x_ptr + r * L + p, mask=mask)
    seq = b * 4 * C + c  # y[b, k, c] starts at (seq + k·C)·L; int64, as r is
    tl.store(y_ptr + seq * L + p, v, mask=mask)
    tl.store(y_ptr + (seq + C) * L + q, v, mask=mask)
    tl.store(y_ptr + (seq + 2 * C) * L + (L - 1 - p), v, mask=mask)
    tl.store(y_ptr + (seq + 3 * C) * L + (L - 1 - q), v, mask=mask)


@triton.jit
def _merge_kernel(y_ptr, x_ptr, C, H, W, ACC: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    b = r // C
    c = r % C
    L = H * W
    p, q, mask = _tile_positions(H, W, TILE_H, TILE_W)
    seq = b * 4 * C + c
    acc = tl.load(y_ptr + seq * L + p, mask=mask, other=0.0).to(ACC)
    acc += tl.load(y_ptr + (seq + C) * L + q, mask=mask, other=0.0).to(ACC)
    acc += tl.load(y_ptr + (seq + 2 * C) * L + (L - 1 - p), mask=mask, other=0.0).to(ACC)
    acc += tl.load(y_ptr + (seq + 3 * C) * L + (L - 1 - q), mask=mask, other=0.0).to(ACC)
    tl.store(x_ptr + r * L + p, acc.to(x_ptr.dtype.element_ty), mask=mask)


def tile_shape(H: int, W: int) -> tuple[int, int]:
    """(TILE_H, TILE_W): powers of two covering at most MAX_TILE_ELEMENTS pixels, square
    (TILE × TILE) on large images, as long as the image on thin ones."""
    tile_h = min(triton.next_power_of_2(H), TILE)
    tile_w = min(triton.next_power_of_2(W), MAX_TILE_ELEMENTS // tile_h)
    tile_h = min(triton.next_power_of_2(H), MAX_TILE_ELEMENTS // tile_w)
    return tile_h, tile_w


def _grid(B: int, C: int, H: int, W: int) -> tuple[tuple[int, int, int], int, int]:
    tile_h, tile_w = tile_shape(H, W)
    return (B * C, triton.cdiv(H, tile_h), triton.cdiv(W, tile_w)), tile_h, tile_w


def launch_scan(x: torch.Tensor) -> torch.Tensor:
    """Launch the scan kernel: x (B, C, H, W) -> (B, 4, C, H·W), with no autograd."""
    B, C, H, W = x.shape
    x = x.contiguous()
    y = torch.empty(B, 4, C, H * W, dtype=x.dtype, device=x.device)
    if y.numel():
        grid, tile_h, tile_w = _grid(B, C, H, W)
        with _launch.device_guard(x):
            _scan_kernel[grid](x, y, C, H, W, TILE_H=tile_h, TILE_W=tile_w)
    return y


def launch_merge(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Launch the merge kernel: y (B, 4, C, H·W) -> (B, C, H, W), with no autograd."""
    B, _, C, _ = y.shape
    y = y.contiguous()
    x = torch.empty(B, C, H, W, dtype=y.dtype, device=y.device)
    if x.numel():
        grid, tile_h, tile_w = _grid(B, C, H, W)
        acc = tl.float64 if y.dtype == torch.float64 else tl.float32
        with _launch.device_guard(y):
            _merge_kernel[grid](y, x, C, H, W, ACC=acc, TILE_H=tile_h, TILE_W=tile_w)
    return x


# Differentiable to any order in eager mode, each the other's backward (under torch.compile the
# same launches run as the ops of kernels.cross_scan.triton_op)
cross_scan, cross_merge = adjoint_pair(launch_scan, launch_merge)
