"""Pointwise regression losses shared by the forecasting models and the forecasting task."""

from __future__ import annotations

import torch

REGRESSION_LOSSES = ("mse", "mae", "rmse")


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """mean((pred - target)²), mean|pred - target| or sqrt(mean((pred - target)²)) over all entries."""
    if kind not in REGRESSION_LOSSES:
        raise ValueError(f"loss must be one of {REGRESSION_LOSSES}, got {kind!r}")
    err = pred - target
    if kind == "mae":
        return err.abs().mean()
    mse = err.square().mean()
    return mse.sqrt() if kind == "rmse" else mse
