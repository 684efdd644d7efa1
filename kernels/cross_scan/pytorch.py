"""Cross-scan / cross-merge with flips and transposes; each is the other's backward."""

from __future__ import annotations

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
    return rows.view(B, C, H, W) + cols.view(B, C, W, H).transpose(2, 3)


class _CrossScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape[-2:]
        return _scan(x)

    @staticmethod
    def backward(ctx, grad):
        return _merge(grad, *ctx.shape)


class _CrossMerge(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, H, W):
        return _merge(y, H, W)

    @staticmethod
    def backward(ctx, grad):
        return _scan(grad), None, None


def cross_scan_torch(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, 4, C, H·W)."""
    return _CrossScan.apply(x)


def cross_merge_torch(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """y (B, 4, C, H·W) -> (B, C, H, W)."""
    return _CrossMerge.apply(y, H, W)
