"""Optimizer and learning-rate schedule builders used by the Hydra configs."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ssm.optim import param_groups
from ssm.training.checks import is_integer, is_number

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
    check_optimizer_settings(name, lr, weight_decay, decay_norms_and_biases, kwargs.get("betas"))
    return OPTIMIZERS[name](param_groups(model, weight_decay, decay_norms_and_biases), lr=lr, **kwargs)


def check_optimizer_settings(name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
                             decay_norms_and_biases: bool = False, betas=None) -> None:
    """Raise ValueError for an unknown optimizer, an lr that is not a number > 0, a
    weight_decay that is not a number >= 0, a non-boolean decay_norms_and_biases, or betas
    that are not two numbers in [0, 1) (Adam, AdamW; SGD takes none)."""
    if not isinstance(decay_norms_and_biases, bool):
        raise ValueError(f"optimizer decay_norms_and_biases must be true or false, got {decay_norms_and_biases!r}")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if not is_number(lr) or lr <= 0:
        raise ValueError(f"optimizer lr must be a number > 0, got {lr!r}")
    if not is_number(weight_decay) or weight_decay < 0:
        raise ValueError(f"optimizer weight_decay must be a number >= 0, got {weight_decay!r}")
    if betas is not None and name == "sgd":
        raise ValueError("optimizer name=sgd takes no betas: drop them with ~optimizer.betas (SGD takes momentum)")
    if betas is not None and not (len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"optimizer betas must be two numbers in [0, 1), got {list(betas)!r}")


def check_cosine_warmup_settings(
    warmup_steps: int = 0,
    total_steps: int | None = None,
    start_factor: float = 0.0,
    min_factor: float = 0.0,
    interval: str = "step",
    after_total: str = "hold",
    warmup_prefix: bool = True,
) -> None:
    """Raise ValueError, naming the setting, unless warmup_steps is an integer >= 0,
    total_steps None (the run's length) or an integer >= 1, both factors in [0, 1], interval
    and after_total known choices and warmup_prefix a boolean."""
    if not (is_integer(warmup_steps) and warmup_steps >= 0):
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if total_steps is not None and not (is_integer(total_steps) and total_steps >= 1):
        raise ValueError(f"total_steps must be an integer >= 1, or null for the run's length, got {total_steps!r}")
    for name, value in (("start_factor", start_factor), ("min_factor", min_factor)):
        if not (is_number(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if after_total not in AFTER_TOTAL:
        raise ValueError(f"after_total must be one of {AFTER_TOTAL}, got {after_total!r}")
    if not isinstance(warmup_prefix, bool):
        raise ValueError(f"warmup_prefix must be true or false, got {warmup_prefix!r}")


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
    with f0 = ``start_factor``, fmin = ``min_factor`` and warmup = min(``warmup_steps``,
    ``total_steps``): a warmup longer than the schedule is cut to it, reaching the full lr at
    ``total_steps`` (``scheduler_config`` warns of it). ``warmup_prefix=False`` measures the
    cosine from step 0 instead, p = s / total, the warmup overlaying its start (timm's
    ``CosineLRScheduler`` default, which SpaceTime uses). Past ``total_steps`` (p > 1) the
    factor stays at fmin (``after_total="hold"``) or the cosine goes on and rises again
    (``"cosine"``: HF's ``get_cosine_schedule_with_warmup``, the s4 code's ``cosine_warmup``,
    for runs whose configs train past their schedule). Applied to every parameter group's
    own lr. ``interval`` says whether steps are optimizer steps ("step") or epochs ("epoch");
    the tasks step the scheduler accordingly (``scheduler_config``).
    """
    check_cosine_warmup_settings(warmup_steps, total_steps, start_factor, min_factor, interval, after_total,
                                 warmup_prefix)
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
    if total is None:
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
