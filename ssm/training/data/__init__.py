"""Lightning data modules. Batches are ``(x, y, lengths)`` (or ``(x, y)`` without padding); each module exposes the shapes the
model needs: ``n_tokens`` (token inputs) or ``d_input`` (feature inputs), and ``n_classes``.
The forecasting module's batches are ``(x, y)`` and it exposes lag, horizon, n_variates and
n_targets."""

from ssm.training.data.base import ClassificationDataModule
from ssm.training.data.forecasting import ForecastingDataModule
from ssm.training.data.listops import ListOpsDataModule
from ssm.training.data.synthetic import SyntheticDataModule
from ssm.training.data.tensors import TensorDataModule

__all__ = ["ClassificationDataModule", "ForecastingDataModule", "ListOpsDataModule", "SyntheticDataModule",
           "TensorDataModule"]
