"""Memory-aware batch size: the largest batch that fits on the GPU, up to the configured one,
with gradient accumulation making up the difference so the effective batch is unchanged."""

from __future__ import annotations

import logging
import math

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.tuner import Tuner

log = logging.getLogger(__name__)


def split_batch(target: int, fits: int) -> tuple[int, int]:
    """(per-step batch, accumulation steps) with batch <= fits and batch * steps >= target,
    using as few steps as possible and then the smallest batch for that many steps."""
    if target < 1 or fits < 1:
        raise ValueError(f"batch sizes must be >= 1, got target={target}, fits={fits}")
    steps = math.ceil(target / min(fits, target))
    return math.ceil(target / steps), steps


def fit_batch_to_memory(trainer: L.Trainer, task: L.LightningModule, datamodule) -> None:
    """On CUDA, find the largest batch that fits (Lightning's batch-size finder, binary search,
    starting from the configured size) and set ``datamodule.batch_size`` and the trainer's
    gradient accumulation so that batch * accumulation covers the configured batch."""
    target = datamodule.batch_size
    if not isinstance(trainer.accelerator, CUDAAccelerator):
        log.info("batch-size search needs a CUDA device; keeping batch_size=%d", target)
        return
    fits = Tuner(trainer).scale_batch_size(
        task, datamodule=datamodule, mode="binsearch", init_val=target, max_trials=25
    )
    batch, steps = split_batch(target, fits)
    datamodule.batch_size = batch
    trainer.accumulate_grad_batches = steps * trainer.accumulate_grad_batches
    log.info("batch %d fits in memory: using batch %d x %d accumulation steps (effective %d)",
             fits, batch, steps, batch * steps)
