"""The Triton path of :func:`kernels.vandermonde`: its entry point, and the pair of
``torch.library`` ops that stand for it under ``torch.compile``.

Eager calls run :class:`kernels.vandermonde.triton.VandermondeTriton`. While TorchDynamo
traces, the same launches run as two opaque ops (forward; backward), so a model on the
Triton backend compiles to one graph (``fullgraph=True``) and exports with ``torch.export``
instead of breaking the graph at every kernel. The ops take the complex v and x as they
are; the launchers pass them to the kernels as real (re, im) views. This module does not
import triton: the kernel module is imported on the first launch, after the caller has
settled ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib

import torch

from kernels._compile import fake_gradients, placeholders, wanted

_INPUTS = 2  # v, x


def _kernels():
    return importlib.import_module("kernels.vandermonde.triton")


@torch.library.custom_op("ssm_kernels::vandermonde_triton", mutates_args=())
def _forward_op(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """K (C, H, L) in the real dtype of v."""
    return _kernels().forward(v, x, L)


@_forward_op.register_fake
def _(v, x, L):
    C, H, _ = v.shape
    return v.new_empty(C, H, L, dtype=v.real.dtype)


@torch.library.custom_op("ssm_kernels::vandermonde_triton_backward", mutates_args=())
def _backward_op(
    grad: torch.Tensor, v: torch.Tensor, x: torch.Tensor, needs: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of (v, x), each an empty placeholder where not needed."""
    return placeholders(_kernels().gradients(v, x, grad, needs), needs, v)


@_backward_op.register_fake
def _(grad, v, x, needs):
    return fake_gradients((v, x), needs, v)


def _setup(ctx, inputs, output):
    v, x, _ = inputs
    ctx.save_for_backward(v, x)


def _backward(ctx, grad):
    needs = list(ctx.needs_input_grad[:_INPUTS])
    return (*wanted(_backward_op(grad, *ctx.saved_tensors, needs), needs), None)


_forward_op.register_autograd(_backward, setup_context=_setup)


def vandermonde_triton(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """Triton path of :func:`kernels.vandermonde` (same contract).

    v (H, N) or (C, H, N) and x (H, N) complex:

        K[..., h, l] = 2 Re sum_n v[..., h, n] exp(x[h, n] l),   l = 0 .. L-1

    Returns K (H, L) or (C, H, L) in the real dtype of v, differentiable in v and x. On CPU
    tensors it needs ``TRITON_INTERPRET=1`` set before the kernels are first used.
    """
    run = _forward_op if torch.compiler.is_compiling() else _kernels().VandermondeTriton.apply
    if v.dim() == 2:
        return run(v.unsqueeze(0), x, L).squeeze(0)
    return run(v, x, L)
