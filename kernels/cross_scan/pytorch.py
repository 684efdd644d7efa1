"""Cross-scan / cross-merge with flips and transposes; each is the other's backward."""

from __future__ import annotations

from typing import Callable

import torch


def _scan(x: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    rows = x.reshape(B, C, H * W)
    cols = x.transpose(2, 3).reshape(B, C, H * W)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def _merge(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    B, _, C, _ = y.shape
    rows = y[:, 0] + y[:, 2].flip(-1)
    cols = y[:, 1] + y[:, 3].flip(-1)
    return rows.reshape(B, C, H, W) + cols.reshape(B, C, W, H).transpose(2, 3)


def adjoint_pair(scan: Callable, merge: Callable) -> tuple[Callable, Callable]:
    """Differentiable (cross_scan, cross_merge) from two plain functions scan(x) -> (B, 4, C, L)
    and merge(y, H, W) -> (B, C, H, W) that are each other's adjoint. Each op's backward is
    the other op (itself differentiable), so gradients of any order are exact."""

    class Scan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.hw = tuple(x.shape[-2:])
            return scan(x)

        @staticmethod
        def backward(ctx, grad):
            return Merge.apply(grad, *ctx.hw)

    class Merge(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y, H, W):
            return merge(y, H, W)

        @staticmethod
        def backward(ctx, grad):
            return Scan.apply(grad), None, None

    return Scan.apply, Merge.apply


_cross_scan, _cross_merge = adjoint_pair(_scan, _merge)


def cross_scan_torch(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, 4, C, H·W)."""
    return _cross_scan(x)


def cross_merge_torch(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """y (B, 4, C, H·W) -> (B, C, H, W)."""
    return _cross_merge(y, H, W)
