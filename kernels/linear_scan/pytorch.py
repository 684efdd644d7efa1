"""Linear scan in PyTorch: a chunked scan whose Python loops run O(CHUNK · log_CHUNK L) steps.

Split L into n chunks of T = CHUNK steps. Over one chunk the steps compose to one affine map

    s_k = A_k · s_{k-1} + e_k,    A_k = product of a over chunk k,  e_k = the chunk's scan from 0,

where s_k is the state after chunk k. So: (1) a T-step loop vectorized over (batch, chunk)
gives every A_k and e_k; (2) the chunk-end states s_k are a linear scan of length n, done by
the same routine (recursively); (3) a second T-step loop, vectorized the same way, runs
every chunk from its true start state s_{k-1} and writes h. Only products of at most T
values of a are formed and nothing is divided, so small |a| or long L cannot overflow;
the part of L that does not fill a chunk is finished by a plain loop. Reading a and b twice
and writing h once, memory O(B·L·P); ``reverse`` runs the same steps from the end.

Backward is a scan in the opposite direction (PyTorch complex convention, forward order):

    g[t] = grad_h[t] + conj(a[t+1]) · g[t+1],    grad_b[t] = g[t],
    grad_a[t] = g[t] · conj(h[t-1])  (h[-1] = h0),    grad_h0 = conj(a[0]) · g[0],

mirrored in time for ``reverse=True``; grad_a is summed over batch and time for a of shape (P,).
"""

from __future__ import annotations

from typing import Optional

import torch

from kernels._autograd import first_order_only
from kernels._compile import FunctionContext, dense, fake_gradients, placeholders, wanted

CHUNK = 16  # steps per chunk (measured on CPU: 8-32 are within ~20% for L in 256..65536)


def _steps(a, b, out, h, reverse: bool) -> None:
    """out[..., j, :] = a[..., j, :] · h_prev + b[..., j, :] for every j in scan order.

    Time is dim -2 (run from the end when ``reverse``); h_prev starts as h (None: 0). a may
    have size 1 along time (constant) and broadcasts over the leading dims.
    """
    const = a.shape[-2] == 1
    T = b.shape[-2]
    for j in range(T - 1, -1, -1) if reverse else range(T):
        if h is None:
            out[..., j, :] = b[..., j, :]
        else:
            torch.addcmul(b[..., j, :], a[..., 0 if const else j, :], h, out=out[..., j, :])
        h = out[..., j, :]


def _chunk_ends(a, b, reverse: bool):
    """For chunked a (B|1, n|1, T|1, P), b (B, n, T, P): per chunk, the product of a over
    it and the scan of b from a zero state at its last step (in scan order)."""
    const = a.shape[2] == 1
    T = b.shape[2]
    order = list(range(T - 1, -1, -1) if reverse else range(T))
    h = b[:, :, order[0]].clone()
    prod = None if const else a[:, :, order[0]].clone()
    for j in order[1:]:  # updated in place: no temporaries per step
        a_j = a[:, :, 0 if const else j]
        torch.addcmul(b[:, :, j], a_j, h, out=h)
        if not const:
            torch.mul(prod, a_j, out=prod)
    if const:
        # The same a^T multiplies every chunk end, so any rounding of it would add up
        # coherently along the carry scan (error ~ (L/T)·eps, not √L·eps): it is formed in
        # float64 and kept there, and the carry scan runs in float64 (see _scan_into).
        wide = a.to(_wide(a.dtype))[:, :, 0]
        prod = wide
        for _ in range(T - 1):
            prod = prod * wide
    return prod, h


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def _scan_into(a, b, h0, out, reverse: bool) -> None:
    """Scan b (B, L, P) with a (B|1, L|1, P) from h0 (B, P) or None into out (B, L, P)."""
    L = b.shape[1]
    n = L // CHUNK
    if n < 2:
        _steps(a, b, out, h0, reverse)
        return
    m = n * CHUNK
    # Whole chunks, aligned with the start of the scan; the rest is finished step by step.
    main, rest = (slice(L - m, L), slice(0, L - m)) if reverse else (slice(0, m), slice(m, L))
    const = a.shape[1] == 1
    a_c = a.unsqueeze(2) if const else a[:, main].unflatten(1, (n, CHUNK))
    b_c = b[:, main].unflatten(1, (n, CHUNK))
    prod, local_end = _chunk_ends(a_c, b_c, reverse)
    if const:  # the carry scan of a constant a in float64 (n = L/T steps: cheap)
        wide = _wide(out.dtype)
        h0_wide = None if h0 is None else h0.to(wide)
        ends = _scan(prod, local_end.to(wide), h0_wide, reverse).to(out.dtype)
    else:
        ends = _scan(prod, local_end, h0, reverse)  # (B, n, P): state after each chunk
    starts = torch.empty_like(ends)  # state before each chunk
    here, there, edge = _shift(reverse)
    starts[:, here] = ends[:, there]
    starts[:, edge] = 0 if h0 is None else h0
    _steps(a_c, b_c, out[:, main].unflatten(1, (n, CHUNK)), starts, reverse)
    if m < L:
        _steps(a if const else a[:, rest], b[:, rest], out[:, rest], ends[:, 0 if reverse else -1], reverse)


def _scan(a, b, h0, reverse: bool) -> torch.Tensor:
    out = torch.empty(b.shape, dtype=torch.promote_types(a.dtype, b.dtype), device=b.device)
    _scan_into(a, b, h0, out, reverse)
    return out


def _shifted_conj(a: torch.Tensor, reverse: bool) -> torch.Tensor:
    """conj(a[t+1]) at t (conj(a[t-1]) for reverse), 0 past the end: the backward multiplier."""
    if a.shape[1] == 1:
        return a.conj()
    c = torch.empty_like(a)
    here, there, edge = _shift(reverse)
    c[:, there] = a[:, here].conj()  # the gradient flows back from step `here` to `there`
    c[:, -1 - edge] = 0  # the last step in scan order
    return c


def _shift(reverse: bool) -> tuple[slice, slice, int]:
    """(here, there, edge): step t in ``here`` follows step t' in ``there`` in scan order
    (forward: t' = t - 1), and ``edge`` is the first step, the one that follows h0."""
    if reverse:
        return slice(None, -1), slice(1, None), -1
    return slice(1, None), slice(None, -1), 0


def _grad_a(g: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """g[t] · conj(h_prev[t]), h_prev the state that step t multiplies (h0 at the first)."""
    out = torch.empty_like(g)
    here, there, edge = _shift(reverse)
    torch.mul(g[:, here], h[:, there].conj(), out=out[:, here])
    if h0 is None:
        out[:, edge] = 0
    else:
        torch.mul(g[:, edge], h0.conj(), out=out[:, edge])
    return out


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse):
        h = _scan(a, b, h0, reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse = reverse
        return h

    @staticmethod
    @first_order_only("linear_scan (torch)")
    def backward(ctx, grad):
        a, h, h0 = ctx.saved_tensors
        reverse = ctx.reverse
        need_a, need_b, need_h0, _ = ctx.needs_input_grad
        if h.shape[1] == 0:
            zeros = (torch.zeros_like(a), torch.zeros_like(h), None if h0 is None else torch.zeros_like(h0))
            return (*(z if need else None for z, need in zip(zeros, ctx.needs_input_grad)), None)
        g = _scan(_shifted_conj(a, reverse), grad.to(h.dtype), None, not reverse)
        grad_a, grad_h0 = grads_of_a_and_h0(g, a, h, h0, reverse, need_a, need_h0)
        return grad_a, (g if need_b else None), grad_h0, None


def grads_of_a_and_h0(
    g: torch.Tensor,
    a: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor | None,
    reverse: bool,
    need_a: bool,
    need_h0: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad a, grad h0) from g, the gradient of every state (= grad b), in a's and h0's dtypes:

        grad a[t] = g[t] · conj(h_prev[t])   (summed over what a broadcast over)
        grad h0   = conj(a[first]) · g[first]
    """
    grad_a = grad_h0 = None
    if need_a:
        grad_a = _grad_a(g, h.to(g.dtype), None if h0 is None else h0.to(g.dtype), reverse)
        grad_a = _sum_to(grad_a if a.is_complex() else grad_a.real, a.shape).to(a.dtype)
    if need_h0:
        _, _, edge = _shift(reverse)
        grad_h0 = (a[:, 0 if a.shape[1] == 1 else edge].conj() * g[:, edge]).to(h0.dtype)
    return grad_a, grad_h0


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum grad over the dims that a (of ``shape``) broadcast over."""
    dims = tuple(d for d, (n, m) in enumerate(zip(shape, grad.shape)) if n == 1 and m != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


@torch.library.custom_op("ssm_kernels::linear_scan_torch", mutates_args=())
def _linear_scan_op(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool) -> torch.Tensor:
    """:class:`_LinearScan`'s forward as one opaque op for ``torch.compile``."""
    return dense(_scan(a, b, h0, reverse))


@_linear_scan_op.register_fake
def _(a, b, h0, reverse):
    return b.new_empty(b.shape, dtype=torch.promote_types(a.dtype, b.dtype))


@torch.library.custom_op("ssm_kernels::linear_scan_torch_backward", mutates_args=())
def _linear_scan_backward_op(
    grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool,
    need_a: bool, need_b: bool, need_h0: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:class:`_LinearScan`'s backward as one opaque op: (grad a, grad b, grad h0), each an
    empty placeholder where not needed."""
    ctx = FunctionContext((a, h, h0), dict(reverse=reverse), (need_a, need_b, need_h0, False))
    return placeholders(_LinearScan.backward.__wrapped__(ctx, grad)[:3], (need_a, need_b, need_h0), h)


@_linear_scan_backward_op.register_fake
def _(grad, a, h, h0, reverse, need_a, need_b, need_h0):
    return fake_gradients((a, h, h0), (need_a, need_b, need_h0), h)


def _setup(ctx, inputs, output):
    a, b, h0, reverse = inputs
    ctx.save_for_backward(a, output, h0)
    ctx.reverse = reverse


def _backward(ctx, grad):
    a, h, h0 = ctx.saved_tensors
    grads = _linear_scan_backward_op(grad, a, h, h0, ctx.reverse, *ctx.needs_input_grad[:3])
    return (*wanted(grads, ctx.needs_input_grad[:3]), None)


_linear_scan_op.register_autograd(_backward, setup_context=_setup)


def linear_scan_torch(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """PyTorch path of :func:`kernels.linear_scan` (same contract).

    Half-precision inputs are computed in float32 and cast back.
    """
    out_dtype = b.dtype
    widen = torch.float32 if b.dtype in (torch.float16, torch.bfloat16) else None
    if widen is not None:
        a, b = a.to(widen), b.to(widen)
        h0 = None if h0 is None else h0.to(widen)
    a3 = a.reshape(1, 1, -1) if a.dim() == 1 else a
    run = _linear_scan_op if torch.compiler.is_compiling() else _LinearScan.apply
    h = run(a3, b, h0, bool(reverse))
    return h.to(out_dtype)
