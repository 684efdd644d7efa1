"""Epoch-level metrics logged once per epoch instead of once per batch.

Passing a torchmetrics ``Metric`` to ``LightningModule.log`` at every step costs a few
milliseconds of bookkeeping per call, which dominates the step time of small models. The
tasks instead ``update`` their metrics in each step and log the value once, at the epoch's
end: ``compute`` reduces over every batch of the epoch (and across processes in a
distributed run), then ``reset`` clears it for the next epoch. :class:`EpochMetricsHooks`
wires a task's ``_log_metrics(split)`` to the three epoch-end hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import lightning as L
from torchmetrics import Metric


def log_epoch_metrics(module: L.LightningModule, metrics: Mapping[str, Metric], prog_bar: Iterable[str] = ()) -> None:
    """Log ``name -> metric.compute()`` for each metric updated this epoch, then reset it.

    Metrics without an update this epoch (a split that saw no batch) are skipped, not logged
    as NaN. Call it from an ``on_{train,validation,test}_epoch_end`` hook.
    """
    shown = set(prog_bar)
    for name, metric in metrics.items():
        if metric.update_count == 0:
            continue
        # compute() already reduced over processes; sync_dist only keeps Lightning from warning
        module.log(name, metric.compute(), prog_bar=name in shown, sync_dist=True)
        metric.reset()


class EpochMetricsHooks:
    """Mixin for a LightningModule that defines ``_log_metrics(split)``: calls it at the end of
    every training, validation and test epoch (put it before ``L.LightningModule`` in the bases)."""

    def _log_metrics(self, split: str) -> None:
        raise NotImplementedError

    def on_train_epoch_end(self) -> None:
        self._log_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
