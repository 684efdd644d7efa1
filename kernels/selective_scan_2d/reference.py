"""Reference 2D selective scan: one pixel at a time, autograd through the loops."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_2d_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The row-then-column selective scan written out pixel by pixel (the test oracle).

    Canonical shapes (from :func:`kernels.selective_scan_2d`): u, delta, z (Bsz, D, H, W);
    A (D, N) real; B, C (Bsz, G, N, H, W) with G dividing D (channel d reads group
    d // (D // G)); D, delta_bias (D,).

        Δ = softplus(delta + delta_bias)  (softplus only with ``delta_softplus``)
        g[i, j] = exp(Δ[i, j] A) g[i, j-1] + Δ[i, j] u[i, j] B[i, j]       g[i, -1] = 0
        h[i, j] = exp(Δ[i, j] A) h[i-1, j] + g[i, j]                       h[-1, j] = 0
        out = (Σ_n C h + D ⊙ u) · silu(z)

    Returns out in u's dtype; half inputs are computed in float32.
    """
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
    Bc = B.repeat_interleave(Dm // G, dim=1)  # (Bsz, D, N, H, W)
    Cc = C.repeat_interleave(Dm // G, dim=1)
    zero = u.new_zeros(Bsz, Dm, N)
    g = [[zero] * W for _ in range(H)]
    h = [[zero] * W for _ in range(H)]
    y = [[None] * W for _ in range(H)]
    for i in range(H):
        for j in range(W):
            a = torch.exp(delta[:, :, i, j, None] * A)
            g[i][j] = a * (g[i][j - 1] if j else zero) + (delta[:, :, i, j] * u[:, :, i, j])[..., None] * Bc[:, :, :, i, j]
            h[i][j] = a * (h[i - 1][j] if i else zero) + g[i][j]
            y[i][j] = (h[i][j] * Cc[:, :, :, i, j]).sum(-1)
    out = torch.stack([torch.stack(row, dim=-1) for row in y], dim=-2) if H and W else u.new_zeros(u.shape)
    if D is not None:
        out = out + D.to(wide)[:, None, None] * u
    if z is not None:
        out = out * F.silu(z.to(wide))
    return out.to(out_dtype)
