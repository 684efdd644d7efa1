"""Epoch-level metrics logged once per epoch instead of once per batch.

Passing a torchmetrics ``Metric`` to ``LightningModule.log`` at every step costs a few
milliseconds of bookkeeping per call, which dominates the step time of small models. The
tasks instead ``update`` their metrics in each step and log the value once, at the epoch's
end: ``compute`` reduces over every batch of the epoch (and across processes in a
distributed run), then ``reset`` clears it for the next epoch. :class:`EpochMetricsHooks`
wires a task's ``_log_metrics(split)`` to the three epoch-end hooks; :class:`EpochMeans`
holds the example-weighted means of per-batch values such as the loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import MeanMetric, Metric

if TYPE_CHECKING:  # the spawned test workers import this module without Lightning
    import lightning as L


def _updates_on_any_process(module: L.LightningModule, metrics: Mapping[str, Metric]) -> list[int]:
    """Each metric's update count summed over the processes of a distributed run (the local
    count otherwise), so that every process makes the same skip-or-compute decision."""
    counts = [metric.update_count for metric in metrics.values()]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return counts
    total = torch.tensor(counts, dtype=torch.int64, device=getattr(module, "device", None))
    dist.all_reduce(total)
    return total.tolist()


def log_epoch_metrics(module: L.LightningModule, metrics: Mapping[str, Metric], prog_bar: Iterable[str] = ()) -> None:
    """Log ``name -> metric.compute()`` for each metric updated this epoch, then reset it.

    Metrics without an update this epoch on any process (a split that saw no batch) are
    skipped, not logged as NaN. In a distributed run ``compute`` is a collective, so a process
    that saw no batch still computes (its states are the identity of the reduction) when
    another process did; otherwise the others would wait for it forever. Call it from an
    ``on_{train,validation,test}_epoch_end`` hook.
    """
    shown = set(prog_bar)
    for (name, metric), updates in zip(metrics.items(), _updates_on_any_process(module, metrics)):
        if updates == 0:
            continue
        with warnings.catch_warnings():
            # a process without local updates warns that compute() precedes update()
            warnings.filterwarnings("ignore", message=r".*was called before the ``update`` method")
            value = metric.compute()
        # compute() already reduced over processes; sync_dist only keeps Lightning from warning
        module.log(name, value, prog_bar=name in shown, sync_dist=True)
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


class EpochMeans(nn.Module):
    """Example-weighted means of per-batch values (a loss, say) over an epoch, a
    ``MeanMetric`` per name: those given here, and any other on its first ``update`` (names
    such as a model's auxiliary losses are known only then).

    ``LightningModule.log(on_epoch=True, sync_dist=True)`` is not exact when the processes of a
    distributed run see different numbers of examples, as the evaluation loaders' shares do:
    Lightning averages the per-process example counts in an integer tensor, which truncates
    (9 examples on 2 processes count as 2 × 4). A ``MeanMetric`` sums value × weight and the
    weights over the processes instead.
    """

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.means = nn.ModuleDict({name: MeanMetric() for name in names})

    def update(self, name: str, value: torch.Tensor, weight: int) -> None:
        """Add a batch's mean ``value`` (a scalar) over ``weight`` examples to ``name``."""
        if name not in self.means:
            self.means[name] = MeanMetric().to(value.device)
        self.means[name].update(value.detach(), weight)

    def log(self, module: "L.LightningModule", split: str, name: str, value: torch.Tensor, batch_size: int,
            weight: int | None = None, prog_bar: bool = False) -> None:
        """``{split}/{name}``: in training, Lightning's per-step and epoch log over ``batch_size``
        examples; for validation and test (whose loaders split the data over the ranks) an
        update of this epoch mean, over ``weight`` examples (default ``batch_size``)."""
        if split == "train":
            module.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=prog_bar, batch_size=batch_size)
        else:
            self.update(f"{split}/{name}", value, batch_size if weight is None else weight)

    def of_split(self, split: str) -> dict[str, Metric]:
        """``{name: metric}`` of the names under ``{split}/``, for :func:`log_epoch_metrics`."""
        return {name: metric for name, metric in self.means.items() if name.startswith(f"{split}/")}
