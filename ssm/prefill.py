"""Prefill for generation: run a prompt through a layer in one parallel pass and get the
recurrent state after its last step, from which ``step`` continues token by token.

    y, state = ssm.prefill.prefill(layer, prompt)      # y == layer(prompt)
    y_t, state = layer.step(next_input, state)         # as if step had run over the prompt

A module with its own ``prefill(x)`` method (``ssm.Mamba``, the diagonal SSMs S4D / S4PTD /
DSS ``exp``, S5 / S5PTD, ``ssm.ResidualBlock``, ``ssm.SequenceBackbone``) computes the state in parallel;
any other layer with ``init_state`` / ``step`` gets it from ``step`` over the prompt.
"""

from __future__ import annotations

import torch
from torch import nn


def prefill(module: nn.Module, x: torch.Tensor, **state_kwargs) -> tuple[torch.Tensor, object]:
    """(module(x), the state after x's last step) for x (B, L, H); ``state_kwargs`` go to
    ``init_state`` (e.g. DSS's ``length``). Layers without a parallel prefill step through x;
    the outputs are then the steps' outputs, which equal forward's up to rounding where the
    step reproduces forward: not for DSS softmax given a ``length`` other than L (its
    kernel is normalized over that length), nor for ``ClosedLoopCompanionSSM``, whose
    forward forecasts a horizon (its steps are the open-loop outputs, ``open_loop(x)[0]``)."""
    own = getattr(module, "prefill", None)
    if own is not None and not state_kwargs:
        return own(x)
    return prefill_by_steps(module, x, **state_kwargs)


def prefill_by_steps(module: nn.Module, x: torch.Tensor, **state_kwargs) -> tuple[torch.Tensor, object]:
    """The same by ``step`` from ``init_state``: (outputs (B, L, H), last state)."""
    if not torch.is_tensor(x) or x.dim() != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"prefill: expected x of shape (batch, length, channels), got {shape}")
    state = module.init_state(x.shape[0], **state_kwargs)
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = module.step(x[:, t], state)
        outputs.append(y_t)
    y = torch.stack(outputs, 1) if outputs else x.new_zeros(x.shape)
    return y, state


__all__ = ["prefill", "prefill_by_steps"]
