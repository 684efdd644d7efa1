"""Reference single step of the selective scan: one channel at a time, autograd through it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_state_update_reference(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """The decoding step of Mamba written channel by channel (the test oracle).

    Takes the shapes checked by :func:`kernels.selective_state_update`: state (Bsz, D, N);
    x, dt, z (Bsz, D); A (D, N); B, C (Bsz, G, N) with G dividing D; D, dt_bias (D,). For
    every channel d, with g = d // (D / G):

        Δ = softplus(dt[:, d] + dt_bias[d])       (softplus only with ``dt_softplus``)
        h'[:, d] = exp(Δ A[d]) ⊙ h[:, d] + Δ x[:, d] B[:, g]
        y[:, d] = (Σ_n C[:, g, n] h'[:, d, n] + D[d] x[:, d]) · silu(z[:, d])

    Returns (y in x's dtype, new state in state's dtype); half precision is computed in
    float32, float64 in float64. ``state`` itself is left unchanged.
    """
    wide = torch.float64 if torch.float64 in (x.dtype, state.dtype) else torch.float32
    Bsz, Dm, N = state.shape
    per_group = Dm // B.shape[1]
    ys, hs = [], []
    for d in range(Dm):
        g = d // per_group
        delta = dt[:, d].to(wide)
        if dt_bias is not None:
            delta = delta + dt_bias[d].to(wide)
        if dt_softplus:
            delta = F.softplus(delta)
        u = x[:, d].to(wide)
        decay = torch.exp(delta[:, None] * A[d].to(wide)[None, :])  # (Bsz, N)
        h = decay * state[:, d].to(wide) + (delta * u)[:, None] * B[:, g].to(wide)
        y = (h * C[:, g].to(wide)).sum(-1)
        if D is not None:
            y = y + D[d].to(wide) * u
        if z is not None:
            y = y * F.silu(z[:, d].to(wide))
        ys.append(y)
        hs.append(h)
    y = torch.stack(ys, dim=1) if Dm else x.new_zeros(Bsz, 0, dtype=wide)
    h = torch.stack(hs, dim=1) if Dm else state.new_zeros(Bsz, 0, N, dtype=wide)
    return y.to(x.dtype), h.to(state.dtype)
