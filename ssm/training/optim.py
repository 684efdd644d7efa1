"""Optimizer and learning-rate schedule builders used by the Hydra configs."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ssm.optim import param_groups

log = logging.getLogger(__name__)

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def build_optimizer(
    model: nn.Module, name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
    decay_norms_and_biases: bool = False, **kwargs
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over :func:`ssm.optim.param_groups` of ``model``.

    Tensors with their own hints (SSM Δ, A, B) keep their lr and weight decay; everything
    else uses ``lr`` and ``weight_decay`` (0 for biases, norms and embeddings unless
    ``decay_norms_and_biases``, as S5's code does).
    """
    check_optimizer_settings(name, lr, weight_decay, decay_norms_and_biases)
    return OPTIMIZERS[name](param_groups(model, weight_decay, decay_norms_and_biases), lr=lr, **kwargs)


def check_optimizer_settings(name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
                             decay_norms_and_biases: bool = False) -> None:
    """Raise ValueError for an unknown optimizer, lr <= 0, weight_decay < 0 or a
    non-boolean decay_norms_and_biases."""
    if not isinstance(decay_norms_and_biases, bool):
        raise ValueError(f"optimizer decay_norms_and_biases must be true or false, got {decay_norms_and_biases!r}")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if lr <= 0:
        raise ValueError(f"optimizer lr must be positive, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"optimizer weight_decay must be >= 0, got {weight_decay}")


def cosine_warmup(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    start_factor: float = 0.0,
    min_factor: float = 0.0,
    interval: str = "step",
    after_total: str = "hold",
    warmup_prefix: bool = True,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup_steps``, then cosine decay until ``total_steps``.

    factor(s) = f0 + (1 - f0) s / warmup                                  for s < warmup
              = fmin + (1 - fmin) (1 + cos(π p)) / 2,   p = (s - warmup)/(total - warmup)   afterwards
    with f0 = ``start_factor`` and fmin = ``min_factor``. ``warmup_prefix=False`` measures the
    cosine from step 0 instead, p = s / total, the warmup overlaying its start (timm's
    ``CosineLRScheduler`` default, which SpaceTime uses). Past ``total_steps`` (p > 1) the
    factor stays at fmin (``after_total="hold"``) or the cosine goes on and rises again
    (``"cosine"``: HF's ``get_cosine_schedule_with_warmup``, the s4 code's ``cosine_warmup``,
    for runs whose configs train past their schedule). Applied to every parameter group's
    own lr. ``interval`` says whether steps are optimizer steps ("step") or epochs ("epoch");
    the tasks step the scheduler accordingly (``scheduler_config``).
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    if not (0.0 <= start_factor <= 1.0 and 0.0 <= min_factor <= 1.0):
        raise ValueError(f"start_factor and min_factor must lie in [0, 1], got {start_factor}, {min_factor}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if after_total not in AFTER_TOTAL:
        raise ValueError(f"after_total must be one of {AFTER_TOTAL}, got {after_total!r}")
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start_factor + (1.0 - start_factor) * step / warmup_steps
        if warmup_prefix:
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        else:
            progress = step / total_steps
        if after_total == "hold":
            progress = min(1.0, progress)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    scheduler.interval = interval
    return scheduler


INTERVALS = ("step", "epoch")
AFTER_TOTAL = ("hold", "cosine")


def scheduler_config(scheduler_factory, optimizer: torch.optim.Optimizer, trainer) -> dict:
    """Lightning's ``lr_scheduler`` entry for ``scheduler_factory(optimizer, total_steps=...)``.

    ``total_steps`` is the factory's own when set, else the run's length in the factory's
    ``interval``: optimizer steps (``trainer.estimated_stepping_batches``) or epochs
    (``trainer.max_epochs``)."""
    keywords = getattr(scheduler_factory, "keywords", {})
    interval = keywords.get("interval", "step")
    total = keywords.get("total_steps")
    if not total:
        total = trainer.max_epochs if interval == "epoch" else stepping_batches(trainer)
    warmup = keywords.get("warmup_steps")
    min_factor = keywords.get("min_factor", 0.0)
    if isinstance(warmup, int) and warmup >= int(total) and min_factor != 1.0:
        log.warning(
            "scheduler.warmup_steps=%d is not shorter than the run (%d %ss): the lr warms up for the whole "
            "run and never decays; lower scheduler.warmup_steps", warmup, int(total), interval,
        )
    scheduler = scheduler_factory(optimizer, total_steps=max(1, int(total)))
    return {"scheduler": scheduler, "interval": getattr(scheduler, "interval", interval)}


def stepping_batches(trainer) -> int:
    """Optimizer steps of the whole run: max_steps, or epochs × ceil(batches / accumulation).

    Counted on a loader of its own: ``trainer.estimated_stepping_batches`` would make the
    trainer load its training loader before a resumed run restores the loader's position
    (and the run would restart the interrupted epoch from its first batch)."""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return int(trainer.estimated_stepping_batches)
    batches = len(datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * limit)
    per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
    return per_epoch * max(1, trainer.max_epochs or 1)
