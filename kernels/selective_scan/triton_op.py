"""The Triton path of :func:`kernels.selective_scan`: its entry point, and the pair of
``torch.library`` ops that stand for it under ``torch.compile``.

Eager calls run :class:`kernels.selective_scan.triton.SelectiveScanTriton`. While
TorchDynamo traces, the same launches run as two opaque ops (forward; backward), so a model
on the Triton backend compiles to one graph (``fullgraph=True``) and exports with
``torch.export`` instead of breaking the graph at every scan. This module does not import
triton: the kernel module is imported on the first launch, after the caller has settled
``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from kernels._compile import fake_gradients, placeholder, placeholders, wanted
from kernels.selective_scan.pytorch import selective_scan_torch
from kernels.selective_scan.reference import selective_scan_reference

_INPUTS = 9  # u, delta, A, B, C, D, z, delta_bias, h0


def _kernels():
    return importlib.import_module("kernels.selective_scan.triton")


@torch.library.custom_op("ssm_kernels::selective_scan_triton", mutates_args=())
def _forward_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
    h0: Optional[torch.Tensor], softplus: bool, save: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, last state, tile-start states): the states, saved for the backward, are empty
    when ``save`` is off."""
    out, last, states = _kernels().forward(u, delta, A, B, C, D, z, delta_bias, h0, softplus, save)
    return out, last, placeholder(states, last)


@_forward_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, h0, softplus, save):
    Bsz, Dm, _ = u.shape
    N = A.shape[1]
    acc = _kernels()._acc(u.dtype)[1]  # the kernels' compute dtype
    # the number of tiles along L is the launcher's choice: a size of its own to the compiler
    tiles = torch.library.get_ctx().new_dynamic_size() if save else None
    states = u.new_empty(Bsz, Dm, tiles, N, dtype=acc) if save else u.new_empty(0, dtype=acc)
    return u.new_empty(u.shape), u.new_empty(Bsz, Dm, N, dtype=acc), states


@torch.library.custom_op("ssm_kernels::selective_scan_triton_backward", mutates_args=())
def _backward_op(
    dout: Optional[torch.Tensor], dlast: Optional[torch.Tensor], u: torch.Tensor, delta: torch.Tensor,
    A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
    delta_bias: Optional[torch.Tensor], h0: Optional[torch.Tensor], states: torch.Tensor, softplus: bool,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor]:
    """The gradients of (u, delta, A, B, C, D, z, delta_bias, h0), each an empty placeholder
    where not needed."""
    saved = (u, delta, A, B, C, D, z, delta_bias, states)
    grads = _kernels().gradients(saved, softplus, None if h0 is None else h0.dtype, dout, dlast, needs)
    return placeholders(grads, needs, u)


@_backward_op.register_fake
def _(dout, dlast, u, delta, A, B, C, D, z, delta_bias, h0, states, softplus, needs):
    return fake_gradients((u, delta, A, B, C, D, z, delta_bias, h0), needs, u)


def _setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, h0, ctx.softplus, _ = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h0, output[2])


def _backward(ctx, dout, dlast, _):
    needs = list(ctx.needs_input_grad[:_INPUTS])
    grads = _backward_op(dout, dlast, *ctx.saved_tensors, ctx.softplus, needs)
    return (*wanted(grads, needs), None, None)


_forward_op.register_autograd(_backward, setup_context=_setup)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, h0=None):
    """Triton path of :func:`kernels.selective_scan` on its canonical arguments.

    u, delta, z (Bsz, D, L); A (D, N); B, C (D, N) or (Bsz, G, N, L); D, delta_bias (D,);
    h0 (Bsz, D, N) or None.

        Δ = softplus(delta + delta_bias)          (softplus only with ``delta_softplus``)
        h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t,   h_{-1} = h0 (0 when None)
        y_t = Σ_n C_t[n] h_t[n],   out = (y + D ⊙ u) · silu(z)

    Returns (out (Bsz, D, L) in u's dtype, last state (Bsz, D, N) in float32, float64 for
    float64 u); both are differentiable. On CPU tensors it needs ``TRITON_INTERPRET=1`` set
    before the kernels are first used.
    """
    Bsz, Dm, L = u.shape
    if A.is_complex():  # not in the Triton kernel: the chunked PyTorch path, on any device
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0)
    if L == 0 or Bsz == 0 or Dm == 0 or A.shape[1] == 0:  # nothing for a kernel to do
        return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0)
    args = [None if t is None else t.contiguous() for t in (u, delta, A, B, C, D, z, delta_bias, h0)]
    softplus = bool(delta_softplus)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if torch.compiler.is_compiling():
        out, last, _ = _forward_op(*args, softplus, needs_grad)
        return out, last
    if needs_grad:
        return _kernels().SelectiveScanTriton.apply(*args, softplus)
    out, last, _ = _kernels().forward(*args, softplus, False)
    return out, last
