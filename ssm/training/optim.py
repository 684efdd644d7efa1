"""Optimizer and learning-rate schedule builders used by the Hydra configs."""

from __future__ import annotations

import math

import torch
from torch import nn

from ssm.optim import param_groups

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def build_optimizer(
    model: nn.Module, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0, **kwargs
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over :func:`ssm.optim.param_groups` of ``model``.

    Tensors with their own hints (SSM Δ, A, B) keep their lr and weight decay; everything
    else uses ``lr`` and ``weight_decay`` (0 for biases, norms and embeddings).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if lr <= 0:
        raise ValueError(f"optimizer lr must be positive, got {lr}")
    return OPTIMIZERS[name](param_groups(model, weight_decay), lr=lr, **kwargs)


def cosine_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``.

    factor(s) = s / warmup                                for s < warmup
              = (1 + cos(π (s - warmup)/(total - warmup))) / 2   afterwards (0 past total)
    Applied to every parameter group's own lr; step it once per optimizer step.
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
