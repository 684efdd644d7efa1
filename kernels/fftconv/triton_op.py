"""The Triton path of :func:`kernels.fftconv`: its entry point, and the pair of
``torch.library`` ops that stand for it under ``torch.compile``.

Eager calls run :class:`kernels.fftconv.triton.FFTConvTriton`. While TorchDynamo traces, the
same launches run as two opaque ops (forward; backward), so a model on the Triton backend
compiles to one graph (``fullgraph=True``) and exports with ``torch.export`` instead of
breaking the graph at every convolution. The calls that go to :func:`fftconv_torch` (long
sequences, float64, empty inputs) are traced as PyTorch code. This module does not import
triton: the kernel module is imported on the first launch, after the caller has settled
``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from kernels._compile import fake_gradients, placeholder, placeholders, wanted
from kernels.fftconv.pytorch import fftconv_torch

# The largest FFT length done in one fused kernel: 128 x 64. Compiled offline for sm_90,
# n = 16384 (128 x 128) needs 320 KB of shared memory per program, beyond an H100's 227 KB.
MAX_N = 8192
MAX_L = MAX_N // 2  # longer sequences go to fftconv_torch

_INPUTS = 3  # u, k, D


def _kernels():
    return importlib.import_module("kernels.fftconv.triton")


@torch.library.custom_op("ssm_kernels::fftconv_triton", mutates_args=())
def _forward_op(
    u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor], save: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, the kernel spectrum's real and imaginary parts): the spectrum, saved for the
    backward, is empty when ``save`` is off."""
    y, spec_r, spec_i = _kernels().forward(u, k, D, save)
    return y, placeholder(spec_r, y), placeholder(spec_i, y)


@_forward_op.register_fake
def _(u, k, D, save):
    if not save:
        return u.new_empty(u.shape), u.new_empty(0), u.new_empty(0)
    # the spectrum's (N1, N2) tile is the launcher's choice from L: sizes of their own to the compiler
    ctx = torch.library.get_ctx()
    N1, N2 = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    H = u.shape[1]
    return u.new_empty(u.shape), u.new_empty(H, N1, N2), u.new_empty(H, N1, N2)


@torch.library.custom_op("ssm_kernels::fftconv_triton_backward", mutates_args=())
def _backward_op(
    grad_y: torch.Tensor, u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor], spec_r: torch.Tensor,
    spec_i: torch.Tensor, needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of (u, k, D), each an empty placeholder where not needed."""
    grads = _kernels().gradients((u, k, D, spec_r, spec_i), grad_y, needs)
    return placeholders(grads, needs, u)


@_backward_op.register_fake
def _(grad_y, u, k, D, spec_r, spec_i, needs):
    return fake_gradients((u, k, D), needs, u)


def _setup(ctx, inputs, output):
    u, k, D, _ = inputs
    ctx.save_for_backward(u, k, D, output[1], output[2])


def _backward(ctx, grad_y, _grad_r, _grad_i):
    needs = list(ctx.needs_input_grad[:_INPUTS])
    grads = _backward_op(grad_y, *ctx.saved_tensors, needs)
    return (*wanted(grads, needs), None)


_forward_op.register_autograd(_backward, setup_context=_setup)


def fftconv_triton(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """FFT convolution by DFT matrix products in Triton (same contract as :func:`kernels.fftconv`).

    u (B, H, L); k (H, L) causal or (2, H, L) two-sided; D (H,) or None:

        y[b, h, t] = sum_{s<=t} k[h, s] u[b, h, t-s] + D[h] u[b, h, t]   (+ k[1]'s future taps)

    Computes in float32 and returns ``u``'s dtype. Sequences with L > 4096 (FFT length beyond
    8192), float64 inputs, empty inputs and FFT lengths whose kernels ran out of on-chip
    resources on this device are sent to :func:`fftconv_torch`. On CPU tensors it needs
    ``TRITON_INTERPRET=1`` set before the kernels are first used.
    """
    L = u.shape[-1]
    if L > MAX_L or u.dtype == torch.float64 or u.numel() == 0:
        return fftconv_torch(u, k, D)
    compiling = torch.compiler.is_compiling()
    # Eager calls skip the kernels of an FFT length that ran out of resources here before;
    # compiled, the forward op looks it up when it runs (L may be symbolic while tracing).
    if not compiling and _kernels().too_large(L, u.device):
        return fftconv_torch(u, k, D)
    out_dtype = u.dtype
    u_c = u.to(torch.float32).contiguous()
    k_c = k.to(torch.float32).contiguous()
    D_c = None if D is None else D.to(torch.float32).contiguous()
    if compiling:
        needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u_c, k_c, D_c))
        y, _, _ = _forward_op(u_c, k_c, D_c, needs_grad)
    else:
        y = _kernels().convolve(u_c, k_c, D_c)
        if y is None:  # the fused tiles do not fit this device's on-chip memory
            return fftconv_torch(u, k, D)
    return y.to(out_dtype)
