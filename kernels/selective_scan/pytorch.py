"""Selective scan in PyTorch: chunks of T = CHUNK steps, vectorized across chunks.

Per channel d and state n (shapes and options as in :func:`kernels.selective_scan`):

    a_t = exp(Δ_t A),   h_t = a_t ⊙ h_{t-1} + Δ_t u_t B_t,   y_t = Σ_n C_t[n] h_t[n]  (2·Re if complex)

L is padded to n chunks of T steps (Δ = 0 on the padding: a = 1 and no input, so the state
is carried unchanged to the end). Inside a chunk the recurrence runs from a zero state, one
step at a time but every chunk at once; over the chunk it is the affine map s_k = P_k s_{k-1} + e_k
with P_k = exp(A Σ_{t in k} Δ_t), so the chunk start states s_{k-1} are a linear scan of
length n (``kernels.linear_scan``'s chunked scan), and each step's state gets the start's
contribution (a_0 ⋯ a_j) s_{k-1} added by a second T-step loop. Only products of at most one
chunk's decays (or of several whole chunks, in the scan) are formed and nothing is divided
by a decay, so large Δ·|A| underflows harmlessly instead of overflowing.

Chunks are processed in groups whose (T, B, G, chunks, N, D/G) buffers hold about
GROUP_ELEMENTS entries (allocated once per call and reused; at least one chunk per group),
the group's end state carried into the next group, so the working memory is
O(GROUP_ELEMENTS + B·D·L + B·D·N·L/T): the forward saves only the chunk start states for
backward, never the B·D·N·L states. The channels of a group are the last dim of the buffers,
so every elementwise op runs over long contiguous rows.

Backward (PyTorch's complex convention) walks the groups from the last one, carrying the
adjoint entering the group's end (first the gradient of last_state). Per group it recomputes
a_t and h_t from the saved starts, then the adjoint λ_t = ∂loss/∂h_t,

    λ_t = c_t + conj(a_{t+1}) λ_{t+1},   c_t = g_t C_t (real A) or 2 g_t conj(C_t) (complex A),

with g_t the gradient of y_t, in the same chunked way in reverse (local reverse scan, scan of
chunk entries, second loop adding the entering adjoint). With q_t = λ_t conj(a_t h_{t-1}):

    grad Δ_t = Re Σ_n q_t conj(A) + u_t Re Σ_n λ_t conj(B_t),   grad A = Σ_{b,t} Δ_t q_t,
    grad B_t = Σ_{d in group} Δ_t u_t λ_t,   grad C_t = Σ_{d in group} g_t conj(h_t) (·2 if complex),
    grad h0 = conj(a_0) λ_0,

then the chain rule through softplus, delta_bias, D and the silu gate.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from kernels._autograd import first_order_only
from kernels._compile import FunctionContext, dense, fake_gradients, placeholder, placeholders, wanted
from kernels.linear_scan.pytorch import _scan

CHUNK = 16  # steps per chunk
GROUP_ELEMENTS = 1 << 20  # entries of one (T, B, G, chunks, N, D/G) buffer of a group of chunks
_SOFTPLUS_THRESHOLD = 20.0  # F.softplus returns x itself above this
_LOG2E = 1.4426950408889634



def _chunked(x: torch.Tensor, groups: int, n: int, T: int) -> torch.Tensor:
    """(B, D, L) -> (T, B, G, n, D/G), zero-padded to L = n·T: entry [j, b, g, k, i] is step
    k·T + j of channel g·D/G + i. Every step of every chunk is then a contiguous slice."""
    Bsz, Dm, L = x.shape
    if n * T != L:
        x = F.pad(x, (0, n * T - L))
    # two copies that each move contiguous runs are faster than one full transposition
    x = x.view(Bsz, groups, Dm // groups, n, T).transpose(2, 3).contiguous()
    return x.permute(4, 0, 1, 2, 3).clone(memory_format=torch.contiguous_format)  # never a view of x


def _unchunked(x: torch.Tensor, L: int) -> torch.Tensor:
    """Inverse of :func:`_chunked`: (T, B, G, n, D/G) -> (B, D, L)."""
    T, Bsz, G, n, Dg = x.shape
    x = x.permute(1, 2, 3, 4, 0).contiguous()
    x = x.transpose(2, 3).reshape(Bsz, G * Dg, n * T)
    return x if n * T == L else x[..., :L].contiguous()


def _chunked_var(M: torch.Tensor, n: int, T: int) -> torch.Tensor:
    """Variable B or C (B, G, N, L) -> (T, B, G, n, N), zero-padded like :func:`_chunked`."""
    Bsz, G, N, L = M.shape
    M = F.pad(M, (0, n * T - L))
    return M.view(Bsz, G, N, n, T).permute(4, 0, 1, 3, 2).contiguous()


def _unchunked_var(M: torch.Tensor, L: int) -> torch.Tensor:
    """Inverse of :func:`_chunked_var`: (T, B, G, n, N) -> (B, G, N, L)."""
    T, Bsz, G, n, N = M.shape
    M = M.permute(1, 2, 4, 3, 0).reshape(Bsz, G, N, n * T)
    return M if n * T == L else M[..., :L].contiguous()


def _per_state(M: torch.Tensor, groups: int) -> torch.Tensor:
    """A constant (D, N) tensor as (G, N, D/G), the layout of the state buffers."""
    Dm, N = M.shape
    return M.view(groups, Dm // groups, N).transpose(1, 2).contiguous()


def _from_per_state(M: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_per_state`: (..., G, N, D/G) -> (..., D, N)."""
    *lead, G, N, Dg = M.shape
    return M.transpose(-1, -2).reshape(*lead, G * Dg, N)


class _Workspace:
    """Buffers reused by every group of chunks of one call (fresh memory on every group would
    cost page faults comparable to the arithmetic)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            buf = self.buffers[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel].view(shape)


class _Inputs:
    """The chunked per-step inputs of one call, shared by forward and backward."""

    def __init__(self, u, delta, A, B, C, delta_bias, softplus, groups, T):
        Bsz, Dm, L = u.shape
        self.L, self.T, self.G = L, T, groups
        self.n = -(-L // T)
        self.dt = _chunked(delta, groups, self.n, T)
        if delta_bias is not None:
            self.dt += delta_bias.view(groups, 1, Dm // groups)
        self.pre = None  # the argument of the softplus, for its derivative
        if softplus:
            self.pre, self.dt = self.dt, F.softplus(self.dt)
        self.pad = self.n * T - L
        self.drop_padding(self.dt)  # Δ = 0 on the padding: a = 1, no input
        self.u = _chunked(u, groups, self.n, T)
        self.x = self.dt * self.u  # Δ u
        N = A.shape[1]
        self.complex = A.is_complex()
        self.A = _per_state(A, groups)
        # exp(Δ A) is computed as exp2(Δ A log2(e)): exp2 is the cheaper kernel on CPU
        self.A2 = (self.A.real if self.complex else self.A) * _LOG2E
        if self.complex:
            self.A_im = self.A.imag.contiguous()
        self.B = _per_state(B, groups) if B.dim() == 2 else _chunked_var(B, self.n, T)
        self.C = _per_state(C, groups) if C.dim() == 2 else _chunked_var(C, self.n, T)
        self.state_shape = (Bsz, groups, N, Dm // groups)  # per chunk; m chunks: (B, G, m, N, D/G)
        self.work = _Workspace(u.device)

    def drop_padding(self, x):
        """Zero the padded steps of a (T, B, G, n, D/G) tensor."""
        if self.pad:
            x[self.T - self.pad:, :, :, -1] = 0

    def groups_of_chunks(self):
        """(k0, k1) ranges of chunks whose buffers hold about GROUP_ELEMENTS entries."""
        per_chunk = max(1, self.T * math.prod(self.state_shape))  # 0 when N = 0 (or B, D = 0)
        size = max(1, GROUP_ELEMENTS // per_chunk)
        return [(k0, min(self.n, k0 + size)) for k0 in range(0, self.n, size)]

    def buffer(self, name, m, dtype):
        """A (T, B, G, m, N, D/G) workspace buffer."""
        Bsz, G, N, Dg = self.state_shape
        return self.work.get(name, (self.T, Bsz, G, m, N, Dg), dtype)

    def weight(self, M, k0, k1):
        """B or C for chunks k0:k1 as a factor of the state buffers: (G, 1, N, D/G) or (T, B, G, m, N, 1)."""
        return M[:, None] if M.dim() == 3 else M[:, :, :, k0:k1, :, None]

    def decays(self, dt, out, conj=False):
        """exp(Δ A) (or its conjugate) into out (..., m, N, D/G), Δ (..., m, D/G). Complex A
        goes through exp(Δ Re A)(cos + i sin)(Δ Im A) in real arithmetic (torch's complex exp
        is far slower on CPU)."""
        dt = dt.unsqueeze(-2)
        if not self.complex:
            return torch.exp2(torch.mul(dt, self.A2[:, None], out=out), out=out)
        parts = torch.view_as_real(out)
        radius = torch.mul(dt, self.A2[:, None])
        torch.exp2(radius, out=radius)
        angle = torch.mul(dt, self.A_im[:, None])
        torch.mul(radius, torch.cos(angle), out=parts[..., 0])
        torch.mul(radius, angle.sin_(), out=parts[..., 1])
        if conj:
            parts[..., 1].neg_()
        return out


def _local_states(a, x, Bw, h, start=None):
    """Fill h (T, B, G, m, N, D/G) with the states of every step of every chunk from ``start``
    (B, G, m, N, D/G) at each chunk's start, or from zero when None."""
    torch.mul(x.unsqueeze(-2), Bw, out=h)
    if start is not None:
        h[0].addcmul_(a[0], start)
    for j in range(1, h.shape[0]):
        h[j].addcmul_(a[j], h[j - 1])
    return h


def _chunk_scan(P, e, carry, reverse):
    """Scan s_k = P_k s_{k±1} + e_k over the chunks (dim 2 of (B, G, m, N, D/G)) from carry
    (B, G, N, D/G) or None; returns every s_k in the same layout."""
    Bsz, G, m, N, Dg = e.shape
    flat = lambda t: t.reshape(Bsz * G, m, N * Dg)
    c = None if carry is None else carry.reshape(Bsz * G, N * Dg)
    return _scan(flat(P), flat(e), c, reverse).view(Bsz, G, m, N, Dg)


def _shift_in(s, edge, first):
    """s shifted by one chunk along dim 2, ``edge`` (or 0) entering at the front (``first``)
    or at the back."""
    out = torch.empty_like(s)
    inner, outer = (slice(1, None), slice(None, -1)) if first else (slice(None, -1), slice(1, None))
    out[:, :, inner] = s[:, :, outer]
    pos = 0 if first else -1
    if edge is None:
        out[:, :, pos] = 0
    else:
        out[:, :, pos] = edge
    return out


def _over_states(X, W, tmp):
    """Σ_n X[..., n, i] W[..., n, (i)]: X (T, B, G, m, N, D/G), W a :meth:`_Inputs.weight`
    factor of X's dtype -> (T, B, G, m, D/G)."""
    if W.dim() == 4:
        return torch.mul(X, W, out=tmp).sum(-2)
    return torch.einsum("tbgmni,tbgmn->tbgmi", X, W[..., 0])


def _over_channels(X, v, constant, tmp):
    """Σ_i X[..., n, i] v[..., i] over the channels of a group -> (T, B, G, m, N), or with
    ``constant`` over (T, B, m) instead, per channel -> (G, N, D/G)."""
    if constant:
        return torch.mul(X, v.unsqueeze(-2), out=tmp).sum((0, 1, 3))
    return torch.einsum("tbgmni,tbgmi->tbgmn", X, v.to(X.dtype))


def _forward(inp: _Inputs, h0, starts_out):
    """y (B, D, L) and the last state (B, G, N, D/G); fills starts_out (B, G, n, N, D/G)."""
    T = inp.T
    Bsz, G, N, Dg = inp.state_shape
    y = torch.empty(T, Bsz, G, inp.n, Dg, dtype=inp.x.dtype, device=inp.x.device)
    dtype = inp.A.dtype
    carry = h0
    for k0, k1 in inp.groups_of_chunks():
        m = k1 - k0
        dt, x = inp.dt[:, :, :, k0:k1], inp.x[:, :, :, k0:k1]
        a = inp.decays(dt, inp.buffer("a", m, dtype))
        h = _local_states(a, x, inp.weight(inp.B, k0, k1), inp.buffer("h", m, dtype))
        P = inp.decays(dt.sum(0), torch.empty(Bsz, G, m, N, Dg, dtype=dtype, device=dt.device))
        ends = _chunk_scan(P, h[-1], carry, reverse=False)
        starts = _shift_in(ends, carry, first=True)
        if starts_out is not None:
            starts_out[:, :, k0:k1] = starts
        # each step's state gets the start's contribution (a_0 ⋯ a_j) s_{k-1}
        for j in range(T):
            starts.mul_(a[j])
            h[j].add_(starts)
        yk = _over_states(h, inp.weight(inp.C, k0, k1), inp.buffer("tmp", m, dtype))
        y[:, :, :, k0:k1] = 2 * yk.real if inp.complex else yk
        carry = ends[:, :, -1]
    return _unchunked(y, inp.L), carry


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, softplus, groups):
        Bsz, Dm, L = u.shape
        N = A.shape[1]
        inp = _Inputs(u, delta, A, B, C, delta_bias, softplus, groups, min(CHUNK, L))
        carry = None if h0 is None else h0.reshape(Bsz, groups, Dm // groups, N).transpose(-1, -2)
        starts = None
        if any(ctx.needs_input_grad):
            starts = torch.empty(Bsz, groups, inp.n, N, Dm // groups, dtype=A.dtype, device=u.device)
        pre, last = _forward(inp, carry, starts)  # y, made y + D u in place
        if D is not None:
            pre.addcmul_(u, D[:, None])
        out = pre if z is None else F.silu(z).mul_(pre)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, pre if z is not None else None, starts)
        ctx.softplus, ctx.groups = softplus, groups
        ctx.h0_given = h0 is not None
        ctx.set_materialize_grads(False)
        return out, _from_per_state(last)

    @staticmethod
    @first_order_only("selective_scan (torch)")
    def backward(ctx, grad_out, grad_last):
        u, delta, A, B, C, D, z, delta_bias, pre, starts = ctx.saved_tensors
        need = ctx.needs_input_grad
        Bsz, Dm, L = u.shape
        N = A.shape[1]
        G = ctx.groups
        inp = _Inputs(u, delta, A, B, C, delta_bias, ctx.softplus, G, min(CHUNK, L))
        cplx = inp.complex
        if grad_out is None:
            grad_out = torch.zeros_like(u)
        # out = pre · silu(z), pre = y + D u
        grad_z = None
        if z is not None:
            sig = torch.sigmoid(z)
            if need[6]:  # silu'(z) = σ(z) (1 + z (1 - σ(z)))
                grad_z = torch.rsub(sig, 1).mul_(z).add_(1).mul_(sig).mul_(pre).mul_(grad_out)
            g = torch.mul(z, sig).mul_(grad_out)
        else:
            g = grad_out
        grad_D = None if D is None or not need[5] else (g * u).sum((0, 2))
        gc = _chunked(g, G, inp.n, inp.T)  # gradient of y

        const_B, const_C = B.dim() == 2, C.dim() == 2
        grad_dt = torch.empty_like(inp.dt)
        grad_x = torch.empty_like(inp.dt)
        grad_A = torch.zeros_like(inp.A) if need[2] else None
        grad_B = (torch.zeros_like(inp.B) if const_B else torch.empty_like(inp.B)) if need[3] else None
        grad_C = (torch.zeros_like(inp.C) if const_C else torch.empty_like(inp.C)) if need[4] else None
        # c_t = g_t C_t, or 2 g_t conj(C_t) for complex A
        Cc = 2 * torch.conj_physical(inp.C) if cplx else inp.C
        A_conj = torch.conj_physical(inp.A) if cplx else inp.A
        B_conj = torch.conj_physical(inp.B) if cplx else inp.B
        dtype = inp.A.dtype
        rho = None if grad_last is None else grad_last.reshape(Bsz, G, Dm // G, N).transpose(-1, -2)
        for k0, k1 in reversed(inp.groups_of_chunks()):
            m = k1 - k0
            dt, x = inp.dt[:, :, :, k0:k1], inp.x[:, :, :, k0:k1]
            s = starts[:, :, k0:k1]
            tmp = inp.buffer("tmp", m, dtype)
            a = inp.decays(dt, inp.buffer("a", m, dtype))
            h = _local_states(a, x, inp.weight(inp.B, k0, k1), inp.buffer("h", m, dtype), start=s)
            q = inp.buffer("q", m, dtype)  # conj(a_t h_{t-1}); times λ_t below
            torch.mul(a[1:], h[:-1], out=q[1:])
            torch.mul(a[0], s, out=q[0])
            if cplx:
                q.conj_physical_()
                a.conj_physical_()  # from here a holds conj(a)
            # adjoint: local reverse scan of every chunk from zero ...
            lam = torch.mul(gc[:, :, :, k0:k1].unsqueeze(-2), inp.weight(Cc, k0, k1), out=inp.buffer("lam", m, dtype))
            for j in range(inp.T - 2, -1, -1):
                lam[j].addcmul_(a[j + 1], lam[j + 1])
            # ... the adjoints entering each chunk's end, by a reverse scan over chunks ...
            P = inp.decays(dt.sum(0), torch.empty(Bsz, G, m, N, Dm // G, dtype=dtype, device=u.device), conj=True)
            entering = _chunk_scan(P, a[0] * lam[0], rho, reverse=True)  # [k]: into chunk k-1's end
            ends = _shift_in(entering, rho, first=False)  # into chunk k's end
            rho = entering[:, :, 0]
            # ... and their contribution conj(a_{j+1} ⋯ a_{T-1}) ρ_k to each step
            for j in range(inp.T - 1, -1, -1):
                lam[j].add_(ends)
                ends.mul_(a[j])
            q.mul_(lam)
            # gradients of this group's chunks
            gdt = _over_states(q, A_conj[:, None], tmp)
            grad_dt[:, :, :, k0:k1] = gdt.real if cplx else gdt
            gx = _over_states(lam, inp.weight(B_conj, k0, k1), tmp)
            grad_x[:, :, :, k0:k1] = gx.real if cplx else gx
            if grad_A is not None:
                grad_A += _over_channels(q, dt, True, tmp)
            if grad_B is not None:
                gB = _over_channels(lam, x, const_B, tmp)
                if const_B:
                    grad_B += gB
                else:
                    grad_B[:, :, :, k0:k1] = gB
            if grad_C is not None:
                gC = _over_channels(h, gc[:, :, :, k0:k1], const_C, tmp)
                gC = 2 * gC.conj() if cplx else gC
                if const_C:
                    grad_C += gC
                else:
                    grad_C[:, :, :, k0:k1] = gC

        grad_dt.addcmul_(grad_x, inp.u)  # x = Δ u
        grad_u = _unchunked(grad_x.mul_(inp.dt), L)
        if D is not None:
            grad_u.addcmul_(g, D[:, None])
        if ctx.softplus:
            slope = torch.sigmoid(inp.pre).masked_fill_(inp.pre > _SOFTPLUS_THRESHOLD, 1.0)
            grad_dt.mul_(slope)
        inp.drop_padding(grad_dt)
        grad_bias = None if delta_bias is None or not need[7] else grad_dt.sum((0, 1, 3)).reshape(Dm)
        grad_delta = _unchunked(grad_dt, L)
        grad_h0 = None
        if ctx.h0_given and need[8]:
            grad_h0 = torch.zeros(Bsz, Dm, N, dtype=A.dtype, device=u.device) if rho is None else _from_per_state(rho)
        if grad_A is not None:
            grad_A = _from_per_state(grad_A)
        if grad_B is not None:
            grad_B = _from_per_state(grad_B) if const_B else _unchunked_var(grad_B, L)
        if grad_C is not None:
            grad_C = _from_per_state(grad_C) if const_C else _unchunked_var(grad_C, L)
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_z, grad_bias, grad_h0, None, None


# Under torch.compile the Function above runs as a pair of opaque ops (its group loop would
# otherwise be unrolled into the graph, one copy per group of chunks).


@torch.library.custom_op("ssm_kernels::selective_scan_torch", mutates_args=())
def _selective_scan_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], softplus: bool, groups: int, save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`_SelectiveScan`'s forward: (out, last state, pre-gate output, chunk starts),
    the last two (saved for the backward) empty when not needed."""
    ctx = FunctionContext(needs_input_grad=(save,))
    out, last = _SelectiveScan.forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, softplus, groups)
    pre, starts = ctx.saved_tensors[-2:]
    return dense(out), dense(last), dense(placeholder(pre, u)), dense(placeholder(starts, A))


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, h0, softplus, groups, save):
    Bsz, Dm, L = u.shape
    N = A.shape[1]
    n = -(-L // min(CHUNK, L))
    starts = A.new_empty(Bsz, groups, n, N, Dm // groups) if save else A.new_empty(0)
    pre = u.new_empty(u.shape) if z is not None else u.new_empty(0)
    return u.new_empty(u.shape), A.new_empty(Bsz, Dm, N), pre, starts


@torch.library.custom_op("ssm_kernels::selective_scan_torch_backward", mutates_args=())
def _selective_scan_backward_op(
    grad_out: Optional[torch.Tensor], grad_last: Optional[torch.Tensor], u: torch.Tensor, delta: torch.Tensor,
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
    delta_bias: Optional[torch.Tensor], pre: Optional[torch.Tensor], starts: torch.Tensor,
    softplus: bool, groups: int, h0_given: bool, needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """:class:`_SelectiveScan`'s backward: the gradients of (u, delta, A, B, C, D, z,
    delta_bias, h0), each an empty placeholder where not needed."""
    saved = (u, delta, A, B, C, D, z, delta_bias, pre, starts)
    ctx = FunctionContext(saved, dict(softplus=softplus, groups=groups, h0_given=h0_given), (*needs, False, False))
    grads = _SelectiveScan.backward.__wrapped__(ctx, grad_out, grad_last)[:9]
    return placeholders(grads, needs, u)


@_selective_scan_backward_op.register_fake
def _(grad_out, grad_last, u, delta, A, B, C, D, z, delta_bias, pre, starts, softplus, groups, h0_given, needs):
    h0 = A.new_empty(u.shape[0], u.shape[1], A.shape[1]) if h0_given else None
    return fake_gradients((u, delta, A, B, C, D, z, delta_bias, h0), needs, u)


def _setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, h0, ctx.softplus, ctx.groups, _ = inputs
    pre, starts = output[2:]
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, pre if z is not None else None, starts)
    ctx.h0_given = h0 is not None


def _backward(ctx, grad_out, grad_last, *_):
    needs = list(ctx.needs_input_grad[:9])
    grads = _selective_scan_backward_op(
        grad_out, grad_last, *ctx.saved_tensors, ctx.softplus, ctx.groups, ctx.h0_given, needs
    )
    return (*wanted(grads, needs), None, None, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup)


def _run_compiled(u, delta, A, B, C, D, z, delta_bias, h0, softplus, groups):
    """:class:`_SelectiveScan` through the opaque ops (while torch.compile traces)."""
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, h0)
    )
    out, last, _, _ = _selective_scan_op(u, delta, A, B, C, D, z, delta_bias, h0, softplus, groups, save)
    return out, last


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None):
    """PyTorch path of :func:`kernels.selective_scan` on its canonical arguments.

    u, delta, z (B, D, L); A (D, N) real or complex; B, C (D, N) or (B, G, N, L) (complex when
    A is); D, delta_bias (D,) or None; h0 (B, D, N) or None.

        Δ = softplus(delta + delta_bias),   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t,
        y_t = Σ_n C_t[n] h_t[n]  (2·Re if complex),   out = (y + D u) · silu(z)

    Returns (out (B, D, L) in u's dtype, last state (B, D, N) in float32, float64 for float64
    u, complex when A is). Half-precision inputs are computed in float32. Every input gets a
    gradient, including through the last state.
    """
    out_dtype = u.dtype
    real = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    state = (torch.complex128 if real == torch.float64 else torch.complex64) if A.is_complex() else real
    u, delta = u.to(real), delta.to(real)
    z, D, delta_bias = (None if t is None else t.to(real) for t in (z, D, delta_bias))
    A, B, C = A.to(state), B.to(state), C.to(state)
    h0 = None if h0 is None else h0.to(state)
    Bsz, Dm, L = u.shape
    if L == 0:
        last = torch.zeros(Bsz, Dm, A.shape[1], dtype=state, device=u.device) if h0 is None else h0.clone()
        return u.to(out_dtype).clone(), last
    # Variable B and C with different numbers of groups are both spread over the finer grouping.
    groups = math.lcm(*(M.shape[1] for M in (B, C) if M.dim() == 4)) if B.dim() == 4 or C.dim() == 4 else 1
    B, C = (M if M.dim() == 2 else M.repeat_interleave(groups // M.shape[1], dim=1) for M in (B, C))
    run = _run_compiled if torch.compiler.is_compiling() else _SelectiveScan.apply
    out, last = run(u, delta, A, B, C, D, z, delta_bias, h0, bool(delta_softplus), groups)
    return out.to(out_dtype), last
