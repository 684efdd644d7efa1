"""Lightning module for sequence classification."""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy


class SequenceClassificationTask(L.LightningModule):
    """Cross-entropy training of a classifier ``model(x, lengths) -> logits (B, n_classes)``.

    Batches are ``(x, y, lengths)`` with lengths optional (None). Logs ``{train,val,test}/loss``
    and ``{train,val,test}/acc``.

    Args:
        model: the classifier.
        n_classes: number of classes (for the accuracy metrics).
        optimizer: ``optimizer(model) -> torch.optim.Optimizer``.
        scheduler: optional ``scheduler(optimizer, total_steps=...) -> LRScheduler``, stepped
            per optimizer step; ``total_steps`` defaults to the trainer's estimate.
    """

    def __init__(
        self,
        model: nn.Module,
        n_classes: int,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.metrics = nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(n_classes, average="micro") for split in ("train", "val", "test")}
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths)

    def _shared_step(self, batch, split: str) -> torch.Tensor:
        x, y, lengths = batch
        logits = self(x, lengths)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{split} loss is {loss.item()} at step {self.global_step}: lower the learning "
                "rate, enable gradient clipping (trainer.gradient_clip_val) or check the inputs"
            )
        metric = self.metrics[f"{split}_acc"]
        metric(logits.detach(), y)
        on_step = split == "train"
        batch_size = y.shape[0]
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=on_step, batch_size=batch_size)
        self.log(f"{split}/acc", metric, on_step=False, on_epoch=True, prog_bar=not on_step, batch_size=batch_size)
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self._total_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        keywords = getattr(self.scheduler_factory, "keywords", {})
        if keywords.get("total_steps"):
            return int(keywords["total_steps"])
        return max(1, int(self.trainer.estimated_stepping_batches))
