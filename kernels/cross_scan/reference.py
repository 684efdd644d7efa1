"""Cross-scan / cross-merge by explicit index maps (obviously correct, for tests)."""

from __future__ import annotations

import torch


def cross_scan_indices(H: int, W: int) -> torch.Tensor:
    """(4, H·W): entry [k, l] is the row-major pixel index at position l of direction k."""
    rows = [i * W + j for i in range(H) for j in range(W)]
    cols = [i * W + j for j in range(W) for i in range(H)]
    return torch.tensor([rows, cols, rows[::-1], cols[::-1]], dtype=torch.long)


def cross_scan_reference(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, 4, C, H·W): out[:, k, :, l] = x_flat[:, :, index[k, l]]."""
    B, C, H, W = x.shape
    index = cross_scan_indices(H, W).to(x.device)
    flat = x.reshape(B, C, H * W)
    return torch.stack([flat[:, :, index[k]] for k in range(4)], dim=1)


def cross_merge_reference(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """y (B, 4, C, H·W) -> (B, C, H, W): out_flat[:, :, index[k, l]] += y[:, k, :, l]."""
    B, _, C, _ = y.shape
    index = cross_scan_indices(H, W).to(y.device)
    out = y.new_zeros(B, C, H * W)
    for k in range(4):
        out = out.index_add(2, index[k], y[:, k])
    return out.view(B, C, H, W)
