"""Single step of the selective scan in PyTorch: a few broadcast elementwise ops over
(B, G, D/G, N), differentiable by autograd (the default path on CPU, and the path of any
call that needs a gradient)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_state_update_torch(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Same contract as :func:`selective_state_update_reference`, vectorized.

    The channels are viewed as (G, D/G) so that B and C (Bsz, G, N) broadcast over the
    channels of their group without being repeated.
    """
    wide = torch.float64 if torch.float64 in (x.dtype, state.dtype) else torch.float32
    Bsz, Dm, N = state.shape
    G = B.shape[1]
    delta = dt.to(wide)
    if dt_bias is not None:
        delta = delta + dt_bias.to(wide)
    if dt_softplus:
        delta = F.softplus(delta)
    u = x.to(wide)
    decay = torch.exp(delta[:, :, None] * A.to(wide))  # (Bsz, D, N)
    h = decay * state.to(wide)
    h = h.view(Bsz, G, Dm // G, N) + (delta * u).view(Bsz, G, Dm // G, 1) * B.to(wide)[:, :, None, :]
    y = (h * C.to(wide)[:, :, None, :]).sum(-1).reshape(Bsz, Dm)
    if D is not None:
        y = y + D.to(wide) * u
    if z is not None:
        y = y * F.silu(z.to(wide))
    return y.to(x.dtype), h.reshape(Bsz, Dm, N).to(state.dtype)
