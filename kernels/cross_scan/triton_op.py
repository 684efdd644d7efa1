"""The Triton paths of :func:`kernels.cross_scan` and :func:`kernels.cross_merge`: their entry
points, and the two ``torch.library`` ops that stand for them under ``torch.compile``.

Eager calls run the autograd pair of :mod:`kernels.cross_scan.triton`. While TorchDynamo
traces, the same launches run as two opaque ops, each the other's backward (they are exact
adjoints, so nothing is saved and gradients of any order are exact), so a model on the
Triton backend compiles to one graph (``fullgraph=True``) and exports with
``torch.export`` instead of breaking the graph at every scan and merge. This module does not
import triton: the kernel module is imported on the first launch, after the caller has
settled ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib

import torch


def _kernels():
    return importlib.import_module("kernels.cross_scan.triton")


@torch.library.custom_op("ssm_kernels::cross_scan_triton", mutates_args=())
def _scan_op(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> its four scan orders (B, 4, C, H·W)."""
    return _kernels().launch_scan(x)


@_scan_op.register_fake
def _(x):
    B, C, H, W = x.shape
    return x.new_empty(B, 4, C, H * W)


@torch.library.custom_op("ssm_kernels::cross_merge_triton", mutates_args=())
def _merge_op(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """y (B, 4, C, H·W) -> the sum of its four orders on the image (B, C, H, W)."""
    return _kernels().launch_merge(y, H, W)


@_merge_op.register_fake
def _(y, H, W):
    B, _, C, _ = y.shape
    return y.new_empty(B, C, H, W)


def _setup_scan(ctx, inputs, output):
    _, _, ctx.H, ctx.W = inputs[0].shape


def _scan_backward(ctx, grad):
    return _merge_op(grad, ctx.H, ctx.W)


def _merge_backward(ctx, grad):
    return _scan_op(grad), None, None


_scan_op.register_autograd(_scan_backward, setup_context=_setup_scan)
_merge_op.register_autograd(_merge_backward)


def cross_scan_triton(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) -> (B, 4, C, H·W): [:, 0] row-major, [:, 1] column-major, [:, 2] and
    [:, 3] the same two reversed. On CPU tensors it needs ``TRITON_INTERPRET=1`` set before
    the kernels are first used."""
    if torch.compiler.is_compiling():
        return _scan_op(x)
    return _kernels().cross_scan(x)


def cross_merge_triton(y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """y (B, 4, C, H·W) -> (B, C, H, W), each pixel the sum of its four entries (the adjoint
    of :func:`cross_scan_triton`)."""
    if torch.compiler.is_compiling():
        return _merge_op(y, H, W)
    return _kernels().cross_merge(y, H, W)
