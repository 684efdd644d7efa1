"""Zero gradients for inputs that a degenerate call does not use.

At some sizes an op's output does not depend on an input at all: every output of an empty
sequence, or ``companion_kernel``'s K_0 = cᵀb at L = 1, which has no a. Autograd then gives
that input no gradient (None, or an error from ``torch.autograd.grad``) where the true
gradient is zero. :func:`with_zero_grads` ties such inputs to an output without touching
its values (unlike adding ``0 * t.sum()``, which turns an inf in t into NaN).
"""

from __future__ import annotations

import torch


class _ZeroGrads(torch.autograd.Function):
    """Identity on ``out``; the gradient of every other input is zeros of its shape."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.specs = [(t.shape, t.dtype, t.device) for t in inputs]
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        zeros = (torch.zeros(shape, dtype=dtype, device=device) if needed else None
                 for needed, (shape, dtype, device) in zip(ctx.needs_input_grad[1:], ctx.specs))
        return (grad if ctx.needs_input_grad[0] else None, *zeros)


def with_zero_grads(out: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
    """``out`` unchanged, with a zero gradient for each input tensor that requires one (None
    and tensors without grad are skipped; with grad mode off it is ``out`` itself)."""
    tracked = [t for t in inputs if torch.is_tensor(t) and t.requires_grad]
    if not tracked or not torch.is_grad_enabled():
        return out
    return _ZeroGrads.apply(out, *tracked)
