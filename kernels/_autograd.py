"""Hand-written backward passes and second derivatives.

The fast paths' backward passes (Triton kernels, chunked PyTorch recurrences) compute first
derivatives only. ``torch.autograd.function.once_differentiable`` does not make that safe: its
error node is attached to detached copies of the gradients, so ``torch.autograd.grad`` with
respect to the inputs (``torch.func.hessian``, Hessian-vector products, gradient penalties
taken with ``autograd.grad``) never reaches it and silently returns second derivatives
without the op's terms. :func:`first_order_only` attaches the error to the inputs themselves.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch


def _message(op: str) -> str:
    return (
        f"{op}: second derivatives are not implemented on this backend (its backward is "
        "hand-written and first-order). Run the op on backend='reference' (or inside "
        "`with kernels.use_backend('reference'):`), whose gradients are plain autograd and "
        "differentiable to any order."
    )


class _SecondOrderError(torch.autograd.Function):
    """Passes gradients through unchanged; differentiating them raises."""

    @staticmethod
    def forward(ctx, op: str, n_out: int, *tensors: torch.Tensor):
        ctx.op = op
        return tuple(t.clone() for t in tensors[:n_out])  # not views: callers may modify them in place

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_message(ctx.op))


def first_order_only(op: str) -> Callable:
    """Decorator for an ``autograd.Function.backward`` that is not itself differentiable.

    Without ``create_graph`` it runs the backward as it is. With it (grad mode on inside the
    backward), the returned gradients are tied to the incoming gradients and the saved
    tensors, so any second derivative through them raises a RuntimeError that says what to do,
    instead of coming out without this op's contribution.
    """

    def decorate(backward: Callable) -> Callable:
        @functools.wraps(backward)
        def wrapper(ctx, *grads):
            if not torch.is_grad_enabled():
                return backward(ctx, *grads)
            with torch.no_grad():
                outputs = backward(ctx, *grads)
            sources = [t for t in (*grads, *ctx.saved_tensors) if isinstance(t, torch.Tensor) and t.requires_grad]
            if not sources:
                return outputs
            single = not isinstance(outputs, tuple)
            outputs = (outputs,) if single else outputs
            where = [i for i, g in enumerate(outputs) if isinstance(g, torch.Tensor)]
            tied = _SecondOrderError.apply(op, len(where), *(outputs[i] for i in where), *sources)
            outputs = list(outputs)
            for i, g in zip(where, tied):
                outputs[i] = g
            return outputs[0] if single else tuple(outputs)

        return wrapper

    return decorate
