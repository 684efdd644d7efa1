"""Callbacks for runs that survive crashes.

- :class:`LastCheckpoint`: ``last.ckpt`` at every epoch end and every N optimizer steps,
  written atomically, so a killed run loses at most N steps and resumes mid-epoch (the
  training loaders are resumable, ``ssm.training.data.loaders``). It is written after every
  other checkpoint callback and early stopping have handled the epoch, so the best-model
  bookkeeping it carries is the epoch's own.
- :class:`RNGStateCheckpoint`: the Python, NumPy and torch RNG states travel in each
  checkpoint and are restored on resume, so the resumed run continues the same random
  stream (dropout masks) as an uninterrupted one.

Everything put into checkpoints is tensors, numbers and lists, so they load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import pathlib
import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint

from ssm.training.config_checks import ConfigError


class LastCheckpoint(Checkpoint):
    """Keep ``dirpath/filename`` (``last.ckpt``) current: written at the end of every training
    epoch and every ``every_n_steps`` optimizer steps (None: epoch ends only), each time to a
    temporary file renamed over the old one, so a kill never leaves a torn checkpoint.

    The epoch-end save must come after ``ModelCheckpoint`` (which records the epoch's best
    model at the end of the training epoch) and ``EarlyStopping`` have run, or ``last.ckpt``
    would carry the previous epoch's best path, best score and patience count, and a resumed
    run would keep a stale best checkpoint beside the new one. Lightning runs checkpoint
    callbacks after all others, in list order; :meth:`setup` moves this one to the very end.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int | None = 500, filename: str = "last.ckpt") -> None:
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or int(every_n_steps) != every_n_steps
                                          or every_n_steps < 1):
            raise ValueError(f"LastCheckpoint: every_n_steps must be a positive integer or null, got {every_n_steps!r}")
        self.path = pathlib.Path(dirpath) / filename
        self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
        self._saved_step = -1

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        # a new list: the hook loop calling this iterates over the old one
        trainer.callbacks = [callback for callback in trainer.callbacks if callback is not self] + [self]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0 and step != self._saved_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        self._saved_step = trainer.global_step
        tmp = self.path.with_name(self.path.name + ".tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # everything a resume needs
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class RNGStateCheckpoint(L.Callback):
    """Carry the RNG states of Python, NumPy, torch (CPU and CUDA) in checkpoints and put
    them back when a resumed run starts training (after the sanity check, whose loaders
    would otherwise move them). Exact for one process; in a distributed run every rank gets
    rank 0's states."""

    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached": float(cached)},
            "python": list(random.getstate()[1]),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get("rng_states")

    def on_train_start(self, trainer, pl_module) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        numpy_state = state["numpy"]
        np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                             numpy_state["has_gauss"], numpy_state["cached"]))
        random.setstate((3, tuple(state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class MonitoredMetricsExist(L.Callback):
    """After the sanity check, before any training: every ``val/`` metric that a
    ModelCheckpoint or EarlyStopping monitors must have been logged, else the run stops with
    the metrics that are (Lightning notices only after the first training epoch)."""

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        logged = set(trainer.callback_metrics)
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if (isinstance(callback, (ModelCheckpoint, EarlyStopping)) and isinstance(monitor, str)
                    and monitor.startswith("val/") and monitor not in logged):
                available = sorted(key for key in logged if key.startswith("val/"))
                raise ConfigError(f"callbacks: {type(callback).__name__} monitors {monitor!r}, which validation does "
                                  f"not log; it logs {available}")
