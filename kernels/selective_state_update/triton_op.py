"""The Triton path of :func:`kernels.selective_state_update`: its entry point, and the
``torch.library`` op that stands for it under ``torch.compile``.

Eager calls launch :func:`kernels.selective_state_update.triton.forward`. While TorchDynamo
traces, the same launch runs as one opaque op, so a compiled decoding step on the Triton
backend is one graph (``fullgraph=True``, CUDA graphs) rather than a graph break per layer.
The op is forward-only, as the kernel is: calls that need a gradient take the PyTorch path
before reaching it. This module does not import triton: the kernel module is imported on the
first launch, after the caller has settled ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch


def _kernels():
    return importlib.import_module("kernels.selective_state_update.triton")


@torch.library.custom_op("ssm_kernels::selective_state_update_triton", mutates_args=())
def _step_op(
    state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: Optional[torch.Tensor], z: Optional[torch.Tensor], dt_bias: Optional[torch.Tensor], dt_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, new state); see :func:`selective_state_update_triton`."""
    return _kernels().forward(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


@_step_op.register_fake
def _(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    return x.new_empty(state.shape[:2]), state.new_empty(state.shape)


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Triton path of :func:`kernels.selective_state_update` on canonical arguments: state
    (Bsz, D, N); x, dt, z (Bsz, D); A (D, N); B, C (Bsz, G, N); D, dt_bias (D,).

        Δ = softplus(dt + dt_bias),   h' = exp(Δ A) ⊙ h + Δ x B[g],   y = (Σ_n C[g] h' + D x) · silu(z)

    Returns (y (Bsz, D) in x's dtype, h' (Bsz, D, N) in state's dtype). Forward only: the
    result carries no gradient. On CPU tensors it needs ``TRITON_INTERPRET=1`` set before the
    kernel is first used.
    """
    if torch.compiler.is_compiling():
        return _step_op(state, x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus))
    return _kernels().forward(state, x, dt, A, B, C, D, z, dt_bias, bool(dt_softplus))
