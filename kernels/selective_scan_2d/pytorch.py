"""2D selective scan in PyTorch: the row pass and the column pass as loops over columns and
rows, each step one vectorized update of every row (column) of a block of (batch, channel)
pairs at once, with a hand-written backward that recomputes the states.

The work goes block by block of (batch rows, channels of one group), the block's buffers
holding (Hgt, Wdt, batch rows, channels, N) = about BLOCK_ELEMENTS entries (at least one
channel of one batch row). Per block, with a = exp(Δ A) and b = Δ u B,

    g[:, j] = a[:, j] g[:, j-1] + b[:, j]       j = 1 .. Wdt-1   (in place over b)
    h[i]    = a[i] h[i-1] + g[i]                i = 1 .. Hgt-1   (in place over g)
    y = Σ_n C h

so the forward holds two block buffers and saves only its inputs. The backward recomputes
a, b, g, h per block and runs the adjoint recurrences in the opposite directions, with the
multipliers one row / column further on:

    λh[i] = C[i] dy[i] + a[i+1] λh[i+1]           (bottom to top)
    λg[:, j] = λh[:, j] + a[:, j+1] λg[:, j+1]    (right to left; db = λg)

The gradient with respect to Δ A is w = λh ⊙ a h[i-1] + λg ⊙ a g[:, j-1] (the products
formed directly, not as h - g and g - b, which cancel where a << 1), and

    dΔ = Σ_n A w + u Σ_n λg B    du = Δ Σ_n λg B    dA = Σ_pixels Δ w
    dB = Σ_{d in group} λg Δ u   dC = Σ_{d in group} dy h

Memory: the inputs, pixel-major copies of them, the output and five block buffers (no
(B, D, N, Hgt, Wdt) tensor).
The bias, softplus, skip and gate around the scan are ordinary differentiable torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._autograd import first_order_only
from kernels._compile import FunctionContext, dense, wanted

# Entries of one (Hgt, Wdt, batch rows, channels, N) block buffer. Measured on a 2-core CPU
# (N = 16, 32x32 to 56x56 images): 2^20 and 2^21 fastest, 2^18 1.5-2x and 2^16 4x slower.
BLOCK_ELEMENTS = 1 << 20


def _blocks(Bsz: int, Dm: int, G: int, N: int, H: int, W: int):
    """(batch slice, channel slice, group) per block; a block never straddles two groups."""
    cpg = Dm // G
    per_channel = max(1, H * W * N)
    dc = max([c for c in range(1, cpg + 1) if cpg % c == 0 and c * per_channel <= BLOCK_ELEMENTS] or [1])
    bc = max(1, min(Bsz, BLOCK_ELEMENTS // (dc * per_channel)))
    for b0 in range(0, Bsz, bc):
        for d0 in range(0, Dm, dc):
            yield slice(b0, b0 + bc), slice(d0, d0 + dc), d0 // cpg


def _pixel_major(t: torch.Tensor) -> torch.Tensor:
    """(Bsz, X, ..., H, W) -> (H, W, Bsz, X, ...), contiguous."""
    return t.permute(t.dim() - 2, t.dim() - 1, *range(t.dim() - 2)).contiguous()


def _channel_major(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_pixel_major`."""
    return t.permute(*range(2, t.dim()), 0, 1).contiguous()


def _scan_(a: torch.Tensor, s: torch.Tensor, dim: int, reverse: bool = False) -> torch.Tensor:
    """In place along ``dim``: s[k] += a[k] s[k-1] for k = 1, 2, ..., or with ``reverse``
    s[k] += a[k+1] s[k+1] for k = n-2, ..., 0 (the adjoint recurrence). Returns s."""
    n = s.shape[dim]
    steps = [(k, k, k - 1) for k in range(1, n)]
    if reverse:
        steps = [(k, k + 1, k + 1) for k in range(n - 2, -1, -1)]
    for k, k_a, k_prev in steps:
        s.select(dim, k).addcmul_(a.select(dim, k_a), s.select(dim, k_prev))
    return s


class _Scan2D(torch.autograd.Function):
    """y = Σ_n C h for canonical u, dt (Bsz, D, H, W) (dt = Δ, after bias and softplus),
    A (D, N), B, C (Bsz, G, N, H, W), all in one floating dtype."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        ctx.save_for_backward(u, dt, A, B, C)
        Bsz, Dm, H, W = u.shape
        G, N = B.shape[1], A.shape[1]
        u_p, dt_p, B_p, C_p = (_pixel_major(t) for t in (u, dt, B, C))
        y = torch.empty(H, W, Bsz, Dm, dtype=u.dtype, device=u.device)
        for bs, ds, grp in _blocks(Bsz, Dm, G, N, H, W):
            dt_b = dt_p[:, :, bs, ds, None]  # (H, W, bc, dc, 1)
            a = torch.exp(dt_b * A[ds])  # (H, W, bc, dc, N)
            s = (dt_b * u_p[:, :, bs, ds, None]) * B_p[:, :, bs, grp, None, :]  # b
            _scan_(a, _scan_(a, s, 1), 0)  # g (rows, along j), then h (columns, along i)
            y[:, :, bs, ds] = torch.mul(s, C_p[:, :, bs, grp, None, :], out=a).sum(-1)
        return _channel_major(y)

    @staticmethod
    @first_order_only("selective_scan_2d (torch)")
    def backward(ctx, dy):
        u, dt, A, B, C = ctx.saved_tensors
        Bsz, Dm, H, W = u.shape
        G, N = B.shape[1], A.shape[1]
        u_p, dt_p, B_p, C_p, dy_p = (_pixel_major(t) for t in (u, dt, B, C, dy))
        du, ddt = torch.empty_like(u_p), torch.empty_like(dt_p)
        dA = torch.zeros_like(A)
        dB, dC = torch.zeros_like(B_p), torch.zeros_like(C_p)
        for bs, ds, grp in _blocks(Bsz, Dm, G, N, H, W):
            dt_b, u_b, dy_b = dt_p[:, :, bs, ds, None], u_p[:, :, bs, ds, None], dy_p[:, :, bs, ds, None]
            B_b, C_b = B_p[:, :, bs, grp, None, :], C_p[:, :, bs, grp, None, :]
            a = torch.exp(dt_b * A[ds])
            x = dt_b * u_b  # Δ u
            b = x * B_b
            g = _scan_(a, b.clone(), 1)
            h = _scan_(a, g.clone(), 0)
            lam = torch.mul(h, dy_b)
            dC[:, :, bs, grp] += lam.sum(3)
            # a h[i-1] and a g[:, j-1] as products, into the buffers b and h (b is no longer
            # needed): h - g and g - b would cancel to rounding where a << 1, and w (so dA)
            # of a fast-decaying state would be lost.
            ah, ag, spare = b, h, g
            torch.mul(a[1:], h[:-1], out=ah[1:])
            ah[:1] = 0
            torch.mul(a[:, 1:], g[:, :-1], out=ag[:, 1:])
            ag[:, :1] = 0
            _scan_(a, torch.mul(C_b, dy_b, out=lam), 0, reverse=True)  # λh
            ah *= lam
            _scan_(a, lam, 1, reverse=True)  # λg
            w = ah.addcmul_(lam, ag)
            dA[ds] += torch.mul(w, dt_b, out=ag).sum((0, 1, 2))
            sB = torch.mul(lam, B_b, out=spare).sum(-1)  # Σ_n λg B
            ddt[:, :, bs, ds] = torch.mul(w, A[ds], out=ag).sum(-1) + u_b[..., 0] * sB
            du[:, :, bs, ds] = dt_b[..., 0] * sB
            dB[:, :, bs, grp] += torch.mul(lam, x, out=spare).sum(3)
        return _channel_major(du), _channel_major(ddt), dA, _channel_major(dB), _channel_major(dC)


@torch.library.custom_op("ssm_kernels::selective_scan_2d_torch", mutates_args=())
def _scan_2d_op(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """:class:`_Scan2D`'s forward as one opaque op for ``torch.compile``."""
    return dense(_Scan2D.forward(FunctionContext(), u, dt, A, B, C))


@_scan_2d_op.register_fake
def _(u, dt, A, B, C):
    return u.new_empty(u.shape)


@torch.library.custom_op("ssm_kernels::selective_scan_2d_torch_backward", mutates_args=())
def _scan_2d_backward_op(
    dy: torch.Tensor, u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`_Scan2D`'s backward as one opaque op: the gradients of (u, dt, A, B, C)."""
    grads = _Scan2D.backward.__wrapped__(FunctionContext((u, dt, A, B, C), {}, (True,) * 5), dy)
    return tuple(dense(g) for g in grads)


@_scan_2d_backward_op.register_fake
def _(dy, u, dt, A, B, C):
    return tuple(t.new_empty(t.shape) for t in (u, dt, A, B, C))


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    return wanted(_scan_2d_backward_op(dy, *ctx.saved_tensors), ctx.needs_input_grad)


_scan_2d_op.register_autograd(_backward, setup_context=_setup)


def selective_scan_2d_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Same contract as :func:`selective_scan_2d_reference`: u, delta, z (Bsz, D, H, W);
    A (D, N) real; B, C (Bsz, G, N, H, W); D, delta_bias (D,). Returns (Bsz, D, H, W) in
    u's dtype, computed in float32 (float64 for float64 inputs)."""
    out_dtype = u.dtype
    wide = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(wide).contiguous() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(wide)[:, None, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y = (_scan_2d_op if torch.compiler.is_compiling() else _Scan2D.apply)(u, delta, A, B, C)
    if D is not None:
        y = y + D.to(wide)[:, None, None] * u
    if z is not None:
        y = y * F.silu(z.to(wide))
    return y.to(out_dtype)
