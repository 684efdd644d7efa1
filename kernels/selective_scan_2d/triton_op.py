"""The Triton path of :func:`kernels.selective_scan_2d`: its entry point, and the pair of
``torch.library`` ops that stand for it under ``torch.compile``.

Eager calls run :class:`kernels.selective_scan_2d.triton.SelectiveScan2DTriton`. While
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
from kernels.selective_scan_2d.pytorch import selective_scan_2d_torch

# The kernels hold all N states of a pixel in one register tile (of at most MAX_ROW elements,
# kernels.selective_scan_2d.triton); more states go to the torch path.
MAX_STATES = 4096

_INPUTS = 8  # u, delta, A, B, C, D, z, delta_bias


def _kernels():
    return importlib.import_module("kernels.selective_scan_2d.triton")


@torch.library.custom_op("ssm_kernels::selective_scan_2d_triton", mutates_args=())
def _forward_op(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], softplus: bool,
    save: bool, block_h: Optional[int], block_w: Optional[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, band carries, row carries): the carries, saved for the backward, are empty when
    ``save`` is off."""
    out, carries, row_carries = _kernels().forward(u, delta, A, B, C, D, z, delta_bias, softplus, save,
                                                   block_h, block_w)
    nothing = u.new_empty(0, dtype=_kernels()._acc(u.dtype)[1])  # in the kernels' compute dtype
    return out, placeholder(carries, nothing), placeholder(row_carries, nothing)


@_forward_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, softplus, save, block_h, block_w):
    Bsz, Dm, H, W = u.shape
    N = A.shape[1]
    acc = _kernels()._acc(u.dtype)[1]  # the kernels' compute dtype, that of the carries
    if not save:
        return u.new_empty(u.shape), u.new_empty(0, dtype=acc), u.new_empty(0, dtype=acc)
    # the numbers of bands and width tiles are the launcher's choice: sizes of their own to the compiler
    ctx = torch.library.get_ctx()
    bands, width_tiles = ctx.new_dynamic_size(), ctx.new_dynamic_size()
    carries = u.new_empty(Bsz, Dm, bands, N, W, dtype=acc)
    row_carries = u.new_empty(Bsz, Dm, width_tiles, N, H, dtype=acc)
    return u.new_empty(u.shape), carries, row_carries


@torch.library.custom_op("ssm_kernels::selective_scan_2d_triton_backward", mutates_args=())
def _backward_op(
    dout: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], carries: torch.Tensor,
    row_carries: torch.Tensor, softplus: bool, block_h: Optional[int], block_w: Optional[int], needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor]:
    """The gradients of (u, delta, A, B, C, D, z, delta_bias), each an empty placeholder where
    not needed."""
    saved = (u, delta, A, B, C, D, z, delta_bias, carries, row_carries)
    grads = _kernels().gradients(saved, softplus, block_h, block_w, dout, needs)
    return placeholders(grads, needs, u)


@_backward_op.register_fake
def _(dout, u, delta, A, B, C, D, z, delta_bias, carries, row_carries, softplus, block_h, block_w, needs):
    return fake_gradients((u, delta, A, B, C, D, z, delta_bias), needs, u)


def _setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, ctx.softplus, _, ctx.block_h, ctx.block_w = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1], output[2])


def _backward(ctx, dout, *_):
    needs = list(ctx.needs_input_grad[:_INPUTS])
    grads = _backward_op(dout, *ctx.saved_tensors, ctx.softplus, ctx.block_h, ctx.block_w, needs)
    return (*wanted(grads, needs), None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup)


def selective_scan_2d_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             block_h: int | None = None, block_w: int | None = None):
    """Triton path of :func:`kernels.selective_scan_2d` on its canonical arguments: u, delta,
    z (Bsz, D, H, W); A (D, N) real; B, C (Bsz, G, N, H, W); D, delta_bias (D,).

        Δ = softplus(delta + delta_bias)              (softplus only with ``delta_softplus``)
        g[i, j] = exp(Δ A) g[i, j-1] + Δ u B          (row pass)
        h[i, j] = exp(Δ A) h[i-1, j] + g[i, j]        (column pass)
        out = (Σ_n C h + D u) · silu(z)

    Returns (Bsz, D, H, W) in u's dtype, differentiable in every tensor. ``block_h`` /
    ``block_w`` (powers of two) override the rows / columns per tile (tests use them to get
    several tiles on small images). On CPU tensors it needs ``TRITON_INTERPRET=1`` set before
    the kernels are first used.
    """
    N = A.shape[1]
    if u.numel() == 0 or N == 0 or N > MAX_STATES:
        return selective_scan_2d_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    args = [None if t is None else t.contiguous() for t in (u, delta, A, B, C, D, z, delta_bias)]
    softplus = bool(delta_softplus)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if torch.compiler.is_compiling():
        return _forward_op(*args, softplus, needs_grad, block_h, block_w)[0]
    if needs_grad:
        return _kernels().SelectiveScan2DTriton.apply(*args, softplus, block_h, block_w)
    return _kernels().forward(*args, softplus, False, block_h, block_w)[0]
