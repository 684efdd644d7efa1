"""Lightning module for sequence classification."""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ssm.robustness import SSM_LAYERS, FourierModeNoise, inject_noise, spike_frequency
from ssm.transfer import has_transfer
from ssm.training.checks import require_finite_loss
from ssm.training.epoch_metrics import EpochMeans, EpochMetricsHooks, log_epoch_metrics
from ssm.training.model_shapes import RecordsModelShapes
from ssm.training.optim import scheduler_config


class SequenceClassificationTask(RecordsModelShapes, EpochMetricsHooks, L.LightningModule):
    """Cross-entropy training of a classifier ``model(x, lengths) -> logits (B, n_classes)``.

    Batches are ``(x, y, lengths)`` or ``(x, y)``, lengths (B,) marking right padding
    (None or absent: none). Logs ``{train,val,test}/loss``
    and ``{train,val,test}/acc``. Targets y may also be (B, K) with logits (B, K, n_classes)
    (K predictions per sequence, e.g. selective copying): the loss and ``acc`` are then per
    token, and ``{split}/seq_acc`` is the fraction of sequences with all K right.

    Args:
        model: the classifier.
        n_classes: number of classes (for the accuracy metrics).
        optimizer: ``optimizer(model) -> torch.optim.Optimizer``.
        scheduler: optional ``scheduler(optimizer, total_steps=...) -> LRScheduler``, stepped
            per optimizer step (or per epoch, with ``interval="epoch"``); ``total_steps``
            defaults to the run's length (``ssm.training.optim.scheduler_config``).
        test_noise: optional ``{"frequency": ω or "spike", "amplitude": a}``: the test split is
            also evaluated with Fourier-mode noise ``a·U·cos(ω Δ_h l)`` on the input of every
            SSM layer (``ssm.robustness``), logged as ``test/loss_noisy`` and
            ``test/acc_noisy``. ``"spike"`` takes ω where the transfer function of the first SSM
            layer that has one (S4D, S4PTD, S5) peaks. ``frequency: null`` (or no mapping) turns it off.
            With ``"every_epoch": True`` the test split is also evaluated, clean and noisy, after
            every validation (the PTD protocol's per-epoch curve), logged as
            ``test_epoch/{loss,acc}`` and ``test_epoch/{loss,acc}_noisy``; the final test on
            the best checkpoint is unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        n_classes: int,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable | None = None,
        test_noise: Mapping | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.test_noise = _check_test_noise(test_noise)
        _check_noise_fits_model(self.test_noise, model)
        self._noise: FourierModeNoise | None = None
        splits = ("train", "val", "test", "test_noisy")
        self.metrics = nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(n_classes, average="micro") for split in splits}
        )
        self.seq_metrics = nn.ModuleDict({f"{split}_seq_acc": MeanMetric() for split in splits})
        # validation and test losses (their loaders split the data over the ranks)
        self.eval_losses = EpochMeans("val/loss", "test/loss", "test/loss_noisy")
        # the per-epoch test pass of test_noise.every_epoch (its own states: it runs between
        # validation and the next training epoch, outside Lightning's logging of steps)
        self.epoch_test_metrics = nn.ModuleDict()
        for tag in ("", "_noisy"):
            self.epoch_test_metrics[f"acc{tag}"] = MulticlassAccuracy(n_classes, average="micro")
            self.epoch_test_metrics[f"loss{tag}"] = MeanMetric()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths)

    @staticmethod
    def _logits_and_loss(logits: torch.Tensor, y: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits with the class dim second, as cross_entropy and the metrics expect; the mean
        cross-entropy) for targets y (B,) or (B, K)."""
        if logits.shape[:-1] != y.shape:
            raise ValueError(
                f"{split}: the model gives logits of shape {tuple(logits.shape)} for targets of shape "
                f"{tuple(y.shape)}; targets (B, K) need logits (B, K, classes) (model.pooling=last_k)"
            )
        if y.dim() == 2:  # (B, K, C) -> (B, C, K)
            logits = logits.transpose(1, 2)
        return logits, F.cross_entropy(logits, y)

    @staticmethod
    def _unpack(batch) -> tuple:
        """(x, y, lengths) from a batch (x, y, lengths) or (x, y) (lengths None: no padding)."""
        if isinstance(batch, (list, tuple)) and len(batch) in (2, 3):
            return (*batch, None) if len(batch) == 2 else tuple(batch)
        got = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (list, tuple)) else type(batch).__name__
        raise ValueError(f"SequenceClassificationTask: batches must be (x, y) or (x, y, lengths), got {got}")

    def _shared_step(self, batch, split: str, tag: str = "") -> torch.Tensor:
        x, y, lengths = self._unpack(batch)
        per_token = y.dim() == 2
        logits, loss = self._logits_and_loss(self(x, lengths), y, split)
        require_finite_loss(loss, split, self.global_step)
        self.metrics[f"{split}{tag}_acc"].update(logits.detach(), y)
        if per_token:
            self.seq_metrics[f"{split}{tag}_seq_acc"].update((logits.argmax(1) == y).all(-1).float())
        # the eval mean weights every target (a token, for per-token labels) once
        self.eval_losses.log(self, split, f"loss{tag}", loss, y.shape[0], weight=y.numel(), prog_bar=True)
        return loss

    def _log_metrics(self, split: str) -> None:
        """``{split}/acc`` (and ``seq_acc``, and for validation and test ``loss``) over the epoch,
        with and without the test noise."""
        tags = ("", "_noisy") if split == "test" else ("",)
        metrics = self.eval_losses.of_split(split)
        for tag in tags:
            metrics[f"{split}/acc{tag}"] = self.metrics[f"{split}{tag}_acc"]
            metrics[f"{split}/seq_acc{tag}"] = self.seq_metrics[f"{split}{tag}_seq_acc"]
        log_epoch_metrics(self, metrics, prog_bar=() if split == "train" else (f"{split}/acc",))

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def on_test_start(self) -> None:
        self._noise = self._make_noise()
        if self._noise is not None:
            rank_zero_info(f"test: also evaluating with {self._noise} on every SSM layer input")

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.test_noise is not None and self.test_noise["every_epoch"] and not self.trainer.sanity_checking:
            self._test_epoch()

    def _test_epoch(self) -> None:
        """The whole test split, clean and with the noise, in eval mode without gradients;
        logs ``test_epoch/{loss,acc}{,_noisy}`` (exact over the split: batch-weighted loss,
        counted accuracy). Batches go through the trainer's device transfer and precision
        conversion, as in Lightning's own loops; the random state is restored afterwards, so
        the training run is the same with or without this pass. Each process of a
        distributed run evaluates its share of the split; the metrics sum over them."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "test_dataloader"):
            raise RuntimeError("task.test_noise.every_epoch needs a data module with a test_dataloader()")
        was_training = self.training
        self.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), \
                    self.trainer.precision_plugin.forward_context():
                noise = self._make_noise()
                for batch in datamodule.test_dataloader():
                    batch = self.trainer.precision_plugin.convert_input(self.trainer.strategy.batch_to_device(batch))
                    x, y, lengths = self._unpack(batch)
                    for tag in ("", "_noisy"):
                        with inject_noise(self.model, noise) if tag else contextlib.nullcontext():
                            logits, loss = self._logits_and_loss(self(x, lengths).float(), y, "test_epoch")
                        self.epoch_test_metrics[f"acc{tag}"].update(logits, y)
                        self.epoch_test_metrics[f"loss{tag}"].update(loss, weight=y.numel())
        finally:
            self.train(was_training)
        log_epoch_metrics(self, {f"test_epoch/{name}": metric for name, metric in self.epoch_test_metrics.items()})

    def _make_noise(self) -> FourierModeNoise | None:
        """The configured noise, its "spike" frequency read off the model as it is now."""
        if self.test_noise is None:
            return None
        frequency = self.test_noise["frequency"]
        if frequency == "spike":
            layer = _spike_layer(self.model)
            with torch.no_grad():
                frequency = spike_frequency(layer)
        return FourierModeNoise(float(frequency), float(self.test_noise.get("amplitude", 0.1)))

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")
        if self._noise is not None:
            with inject_noise(self.model, self._noise):
                self._shared_step(batch, "test", tag="_noisy")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config(self.scheduler_factory, optimizer, self.trainer)}


def _spike_layer(model: nn.Module) -> nn.Module | None:
    """The first layer whose transfer function gives test_noise's "spike" frequency."""
    return next((m for m in model.modules() if isinstance(m, SSM_LAYERS) and has_transfer(m)), None)


def _check_noise_fits_model(test_noise: dict | None, model: nn.Module) -> None:
    """Refuse, before training, a test_noise the model cannot take (it used to fail at test time)."""
    if test_noise is None:
        return
    if not any(isinstance(m, SSM_LAYERS) for m in model.modules()):
        names = ", ".join(cls.__name__ for cls in SSM_LAYERS)
        raise ValueError(f"task.test_noise needs a model with an SSM layer noise can be added to ({names} and their "
                         f"subclasses); {type(model).__name__} has none: set task.test_noise.frequency=null")
    if test_noise["frequency"] == "spike" and _spike_layer(model) is None:
        raise ValueError(
            "task.test_noise.frequency='spike' needs an S4D, S4PTD, S5 or S5PTD layer (its transfer "
            f"function gives the spike); {type(model).__name__} has none: give a frequency instead"
        )


def _check_test_noise(test_noise: Mapping | None) -> dict | None:
    if test_noise is None or test_noise.get("frequency") is None:
        return None
    frequency = test_noise["frequency"]
    if frequency != "spike" and not (isinstance(frequency, (int, float)) and frequency >= 0):
        raise ValueError(f"task.test_noise.frequency must be a number >= 0, 'spike' or null, got {frequency!r}")
    amplitude = test_noise.get("amplitude", 0.1)
    if not (isinstance(amplitude, (int, float)) and amplitude >= 0):
        raise ValueError(f"task.test_noise.amplitude must be a number >= 0, got {amplitude!r}")
    every_epoch = test_noise.get("every_epoch", False)
    if not isinstance(every_epoch, bool):
        raise ValueError(f"task.test_noise.every_epoch must be true or false, got {every_epoch!r}")
    return {"frequency": frequency, "amplitude": float(amplitude), "every_epoch": every_epoch}
