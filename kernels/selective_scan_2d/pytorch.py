"""2D selective scan on CPU: the row pass and the column pass are each one vectorized
``kernels.linear_scan`` (chunked, with its own backward) over all rows / columns at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.linear_scan import linear_scan


def selective_scan_2d_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Same contract as :func:`selective_scan_2d_reference`. Materializes the (Bsz, H, W,
    D, N) decays and inputs (the memory of a 1D scan over H·W steps), in float32 (float64
    for float64 inputs)."""
    out_dtype = u.dtype
    wide = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(wide) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(wide)[:, None, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bsz, Dm, H, W = u.shape
    N = A.shape[1]
    G = B.shape[1]
    if u.numel() == 0:
        return u.new_zeros(u.shape, dtype=out_dtype)

    def per_channel(M):  # (Bsz, G, N, H, W) -> (Bsz, H, W, G, 1, N), broadcast over the D/G channels of a group
        return M.permute(0, 3, 4, 1, 2)[:, :, :, :, None, :]

    dt = delta.permute(0, 2, 3, 1)  # (Bsz, H, W, D)
    a = torch.exp(dt[..., None] * A)  # (Bsz, H, W, D, N)
    bu = (dt * u.permute(0, 2, 3, 1)).view(Bsz, H, W, G, Dm // G, 1) * per_channel(B)
    g = linear_scan(a.reshape(Bsz * H, W, Dm * N), bu.reshape(Bsz * H, W, Dm * N))  # along rows
    a_cols = a.transpose(1, 2).reshape(Bsz * W, H, Dm * N)
    g_cols = g.view(Bsz, H, W, Dm * N).transpose(1, 2).reshape(Bsz * W, H, Dm * N)
    h = linear_scan(a_cols, g_cols).view(Bsz, W, H, G, Dm // G, N).transpose(1, 2)  # down columns
    y = (h * per_channel(C)).sum(-1).reshape(Bsz, H, W, Dm).permute(0, 3, 1, 2)
    if D is not None:
        y = y + D.to(wide)[:, None, None] * u
    if z is not None:
        y = y * F.silu(z.to(wide))
    return y.to(out_dtype)
