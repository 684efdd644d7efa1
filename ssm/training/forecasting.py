"""Lightning module for multivariate forecasting."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from ssm.losses import REGRESSION_LOSSES, regression_loss
from ssm.training.checks import require_finite_loss
from ssm.training.epoch_metrics import EpochMeans, EpochMetricsHooks, log_epoch_metrics
from ssm.training.model_shapes import RecordsModelShapes
from ssm.training.optim import scheduler_config

LOSSES = REGRESSION_LOSSES
TRANSFORMS = ("mean", "last", "none")
# the forecast's error metrics by name: each split logs ``{split}/<name>``
METRICS = {"mse": MeanSquaredError, "mae": MeanAbsoluteError, "rmse": lambda: MeanSquaredError(squared=False)}


class ForecastingTask(RecordsModelShapes, EpochMetricsHooks, L.LightningModule):
    """Train ``model(x) -> forecast`` on batches (x (B, lag, V_in), y (B, horizon, V_out)).

    With ``data_transform="mean"`` (SpaceTime's default) the lag window's mean is subtracted
    from x before the model and added back to its forecast, per series; "last" does the same
    with the last observed value (of the target series for V_out < V_in, which are the last
    V_out inputs); "none" leaves both alone. Logs ``{train,val,test}/loss`` and ``mse``, ``mae``
    and ``rmse`` on the standardized scale (as Informer reports them). At validation, with a
    W&B logger, the first window's forecast of the first target is logged as a plot
    (needs matplotlib; skipped without it).

    Auxiliary losses (e.g. SpaceTime's one-step-ahead loss on the lag window and its decoder
    input loss): the model may return ``(forecast, aux)`` or ``{"forecast": forecast, "aux":
    aux}`` with ``aux`` a mapping ``name -> scalar loss``. The model computes them from the
    input it sees (after the transform). Each is added to the loss with weight
    ``aux_weights[name]`` (default 1) and logged as ``{split}/aux/<name>``; ``{split}/loss``
    is the total, while ``mse`` / ``mae`` / ``rmse`` stay those of the forecast alone.

    Args:
        model: forecaster, (B, lag, V_in) -> (B, horizon, V_out), optionally with aux losses.
        optimizer: ``optimizer(model) -> Optimizer``; scheduler: optional
            ``scheduler(optimizer, total_steps=...)``, stepped per optimizer step or per epoch
            (its ``interval``).
        loss: "mse", "mae" or "rmse" (of the forecast).
        data_transform: "mean", "last" or "none".
        aux_weights: optional weight per aux loss name.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        scheduler: Callable | None = None,
        loss: str = "mse",
        data_transform: str = "mean",
        aux_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"ForecastingTask: loss must be one of {LOSSES}, got {loss!r}")
        if data_transform not in TRANSFORMS:
            raise ValueError(f"ForecastingTask: data_transform must be one of {TRANSFORMS}, got {data_transform!r}")
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.loss_name, self.data_transform = loss, data_transform
        self.aux_weights = {str(k): float(v) for k, v in (aux_weights or {}).items()}
        self.metrics = nn.ModuleDict(
            {f"{s}_{m}": make() for s in ("train", "val", "test") for m, make in METRICS.items()}
        )
        # validation and test loss and aux losses (their loaders split the data over the ranks)
        self.eval_means = EpochMeans("val/loss", "test/loss")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, lag, V_in) -> forecast (B, horizon, V_out) on the data's scale."""
        return self._forecast(x)[0]

    def _forecast(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(forecast (B, horizon, V_out) on the data's scale, aux losses by name)."""
        if self.data_transform == "none":
            return _unpack(self.model(x))
        level = x.mean(1, keepdim=True) if self.data_transform == "mean" else x[:, -1:]
        forecast, aux = _unpack(self.model(x - level))
        return forecast + level[..., level.shape[-1] - forecast.shape[-1]:], aux

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        pred, aux = self._forecast(x)
        if pred.shape != y.shape:
            raise ValueError(f"ForecastingTask: the model forecast {tuple(pred.shape)}, the targets are {tuple(y.shape)}")
        loss = regression_loss(pred, y, self.loss_name)
        batch_size = x.shape[0]
        for name, value in aux.items():
            loss = loss + self.aux_weights.get(name, 1.0) * value
            self.eval_means.log(self, split, f"aux/{name}", value, batch_size)
        require_finite_loss(loss, split, self.global_step)
        for m in METRICS:
            self.metrics[f"{split}_{m}"].update(pred.detach().reshape(-1), y.reshape(-1))
        self.eval_means.log(self, split, "loss", loss, batch_size, prog_bar=True)
        return loss

    def _log_metrics(self, split: str) -> None:
        """``{split}/mse``, ``mae``, ``rmse`` over the epoch (validation MSE on the progress bar),
        and for validation and test the epoch's ``loss`` and ``aux/<name>``."""
        metrics = {f"{split}/{m}": self.metrics[f"{split}_{m}"] for m in METRICS} | self.eval_means.of_split(split)
        log_epoch_metrics(self, metrics, prog_bar=() if split == "train" else (f"{split}/mse", f"{split}/loss"))

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        loss = self._step(batch, "val")
        if batch_idx == 0:
            self._plot(batch)
        return loss

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def _plot(self, batch) -> None:
        """Forecast vs truth of the first window and target, to W&B (skipped without it)."""
        from lightning.pytorch.loggers import WandbLogger

        if not isinstance(self.logger, WandbLogger) or self.trainer.sanity_checking:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            import wandb
        except ImportError:
            return
        x, y = batch
        with torch.no_grad():
            pred = self(x[:1])[0, :, 0].float().cpu()
        history = x[0, :, x.shape[-1] - y.shape[-1]].float().cpu()
        lag, horizon = history.shape[0], pred.shape[0]
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(range(lag), history, color="gray", label="input")
        ax.plot(range(lag, lag + horizon), y[0, :, 0].float().cpu(), label="truth")
        ax.plot(range(lag, lag + horizon), pred, label="forecast")
        ax.legend(loc="upper left")
        self.logger.experiment.log({"val/forecast": wandb.Image(fig), "trainer/global_step": self.global_step})
        plt.close(fig)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.model)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config(self.scheduler_factory, optimizer, self.trainer)}


def _unpack(output) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(forecast, aux losses) from a model output: a tensor, ``(forecast, aux)`` or
    ``{"forecast": forecast, "aux": aux}``, with ``aux`` a mapping name -> scalar tensor."""
    if isinstance(output, torch.Tensor):
        return output, {}
    if isinstance(output, Mapping) and "forecast" in output:
        forecast, aux = output["forecast"], output.get("aux") or {}
    elif isinstance(output, (tuple, list)) and len(output) == 2:
        forecast, aux = output
    else:
        raise TypeError(
            "ForecastingTask: the model must return a forecast tensor, (forecast, aux) or "
            f"{{'forecast': ..., 'aux': ...}}, got {type(output).__name__}"
        )
    if not isinstance(aux, Mapping):
        raise TypeError(f"ForecastingTask: aux losses must be a mapping name -> scalar tensor, got {type(aux).__name__}")
    for name, value in aux.items():
        if not (isinstance(value, torch.Tensor) and value.dim() == 0):
            raise ValueError(f"ForecastingTask: aux loss {name!r} must be a scalar tensor, got {value!r:.80}")
    return forecast, dict(aux)
