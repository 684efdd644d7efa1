"""Reference selective scan: one step per time index, autograd through the loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None):
    """The selective scan of Mamba, written out step by step (the test oracle).

    Takes the canonical shapes produced by :func:`kernels.selective_scan`:
    u, delta, z (Bsz, D, L); A (D, N) real or complex; B, C either (D, N) (the same at every
    step) or (Bsz, G, N, L) with G dividing D (channel d reads group d // (D // G)), complex
    when A is; D, delta_bias (D,); h0 (Bsz, D, N) or None.

        Δ = softplus(delta + delta_bias)  (softplus only with ``delta_softplus``)
        h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t,    h_{-1} = h0 (0 when None)
        y_t = Σ_n h_t[n] C_t[n]   (2·Re of it when A is complex)
        out = (y + D ⊙ u) · silu(z)

    Returns (out in u's dtype, last state h_{L-1} (Bsz, D, N)). Half-precision inputs are
    computed in float32, float64 stays float64.
    """
    out_dtype = u.dtype
    u = _widen(u)
    real = u.dtype  # every input is computed in u's (widened) precision
    delta, z = delta.to(real), None if z is None else z.to(real)
    A, B, C = _widen(A), _widen(B), _widen(C)
    cplx = A.is_complex()
    if cplx:
        ctype = torch.complex128 if real == torch.float64 else torch.complex64
        A, B, C = A.to(ctype), B.to(ctype), C.to(ctype)
    else:
        A, B, C = A.to(real), B.to(real), C.to(real)
    if delta_bias is not None:
        delta = delta + delta_bias.to(real)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bsz, Dm, L = u.shape
    N = A.shape[1]

    def per_channel(M, t):  # (D, N) or (Bsz, G, N, L) -> the value at step t, (Bsz|1, D, N)
        if M.dim() == 2:
            return M[None]
        G = M.shape[1]
        return M[:, :, :, t].repeat_interleave(Dm // G, dim=1)

    h = torch.zeros(Bsz, Dm, N, dtype=A.dtype, device=u.device) if h0 is None else h0.to(A.dtype)
    ys = []
    for t in range(L):
        dt = delta[:, :, t, None]  # (Bsz, D, 1)
        h = torch.exp(dt * A) * h + dt * u[:, :, t, None] * per_channel(B, t)
        y = (h * per_channel(C, t)).sum(-1)
        ys.append(2 * y.real if cplx else y)
    y = torch.stack(ys, dim=-1) if L else u.new_zeros(Bsz, Dm, 0)
    if D is not None:
        y = y + D.to(real)[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y.to(out_dtype), h


def _widen(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
