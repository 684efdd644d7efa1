"""The Triton path of :func:`kernels.linear_scan`: its entry point, and the pair of
``torch.library`` ops that stand for it under ``torch.compile``.

Eager calls run :class:`kernels.linear_scan.triton.LinearScanTriton`. While TorchDynamo
traces, the same launches run as two opaque ops (forward; backward), so a model on the
Triton backend compiles to one graph (``fullgraph=True``) and exports with ``torch.export``
instead of breaking the graph at every scan. This module does not import triton: the kernel
module is imported on the first launch, after the caller has settled ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from kernels._compile import fake_gradients, placeholders, wanted

_INPUTS = 3  # a, b, h0


def _kernels():
    return importlib.import_module("kernels.linear_scan.triton")


@torch.library.custom_op("ssm_kernels::linear_scan_triton", mutates_args=())
def _forward_op(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool) -> torch.Tensor:
    """The states h (B, L, P) in the compute dtype (float32 for float16 / bfloat16 b): saved
    for the backward as they are, rounded to b's dtype outside the op."""
    return _kernels().forward(a, b, h0, reverse)


@_forward_op.register_fake
def _(a, b, h0, reverse):
    return b.new_empty(b.shape, dtype=torch.promote_types(b.dtype, torch.float32))


@torch.library.custom_op("ssm_kernels::linear_scan_triton_backward", mutates_args=())
def _backward_op(
    grad: torch.Tensor, a: torch.Tensor, h: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool,
    b_dtype: torch.dtype, needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of (a, b, h0), b's in ``b_dtype``, each an empty placeholder where not
    needed."""
    grads = _kernels().gradients(a, h, h0, reverse, b_dtype, grad, needs)
    return placeholders(grads, needs, h)


@_backward_op.register_fake
def _(grad, a, h, h0, reverse, b_dtype, needs):
    grad_a, grad_b, grad_h0 = fake_gradients((a, h, h0), needs, h)
    if needs[1]:  # b has the shape of h, in its own dtype
        grad_b = h.new_empty(h.shape, dtype=b_dtype)
    return grad_a, grad_b, grad_h0


def _setup(ctx, inputs, output):
    a, b, h0, ctx.reverse = inputs
    ctx.b_dtype = b.dtype
    ctx.save_for_backward(a, output, h0)


def _backward(ctx, grad):
    needs = list(ctx.needs_input_grad[:_INPUTS])
    a, h, h0 = ctx.saved_tensors
    grads = _backward_op(grad, a, h, h0, ctx.reverse, ctx.b_dtype, needs)
    return (*wanted(grads, needs), None)


_forward_op.register_autograd(_backward, setup_context=_setup)


def linear_scan_triton(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """Triton path of :func:`kernels.linear_scan` (same contract).

    a (B, L, P) or (P,), b (B, L, P), h0 (B, P) or None:

        h[:, t] = a[:, t] · h[:, t-1] + b[:, t],   h[:, -1] = h0 (0 when None)

    (from the end with ``reverse``). Returns h (B, L, P) in b's dtype, differentiable in a,
    b and h0; float16 / bfloat16 are computed in float32. On CPU tensors it needs
    ``TRITON_INTERPRET=1`` set before the kernels are first used.
    """
    a3 = a.reshape(1, 1, -1) if a.dim() == 1 else a
    if torch.compiler.is_compiling():
        return _forward_op(a3, b, h0, bool(reverse)).to(b.dtype)
    return _kernels().LinearScanTriton.apply(a3, b, h0, bool(reverse))
