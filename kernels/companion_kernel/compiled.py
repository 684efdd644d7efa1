"""The companion kernel's fast paths as a pair of ``torch.library`` ops, for ``torch.compile``.

:func:`companion_kernel_torch` (and the Triton path, which shares it) chooses an algorithm
per row from the values of ``a`` (rows near a singular root of unity, with a large ||a||_1,
or unstable ones take other formulas): TorchDynamo cannot trace that choice, and the graph
broke at every call. While TorchDynamo traces, the call runs instead as one opaque op whose
backward op takes the vector-Jacobian product of the same path by ``torch.func.vjp``, so
``CompanionSSM`` compiles to one graph and exports. That backward runs the forward again
(the op saves only a, b, c); eager calls keep the path's own autograd.
"""

from __future__ import annotations

import functools

import torch

from kernels._compile import fake_gradients, vjp_gradients, wanted
from kernels._dispatch import deferred
from kernels.companion_kernel.pytorch import companion_kernel_torch

PATHS = {
    "torch": companion_kernel_torch,
    "triton": deferred("kernels.companion_kernel.triton", "companion_kernel_triton"),
}


@torch.library.custom_op("ssm_kernels::companion_kernel", mutates_args=())
def _forward_op(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int, method: str, path: str) -> torch.Tensor:
    """K (n, L) in a's dtype, by ``PATHS[path]``."""
    return PATHS[path](a, b, c, L, method=method)


@_forward_op.register_fake
def _(a, b, c, L, method, path):
    return a.new_empty(a.shape[0], L)


@torch.library.custom_op("ssm_kernels::companion_kernel_backward", mutates_args=())
def _backward_op(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int, method: str, path: str,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of (a, b, c), each an empty placeholder where not needed."""
    kernel = functools.partial(PATHS[path], L=L, method=method)
    return vjp_gradients(kernel, (a, b, c), grad, needs, a)


@_backward_op.register_fake
def _(grad, a, b, c, L, method, path, needs):
    return fake_gradients((a, b, c), needs, a)


def _setup(ctx, inputs, output):
    a, b, c, ctx.L, ctx.method, ctx.path = inputs
    ctx.save_for_backward(a, b, c)


def _backward(ctx, grad):
    needs = list(ctx.needs_input_grad[:3])
    grads = _backward_op(grad, *ctx.saved_tensors, ctx.L, ctx.method, ctx.path, needs)
    return (*wanted(grads, needs), None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup)


def companion_kernel_compiled(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int, method: str,
                              path: str) -> torch.Tensor:
    """:func:`kernels.companion_kernel` on ``path`` ("torch" or "triton") as the op pair
    (while TorchDynamo traces): a, b, c (n, d), K (n, L)."""
    return _forward_op(a, b, c, L, method, path)
