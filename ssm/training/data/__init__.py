"""Lightning data modules. Batches are ``(x, y, lengths)``; each module exposes the shapes the
model needs: ``n_tokens`` (token inputs) or ``d_input`` (feature inputs), and ``n_classes``."""

from ssm.training.data.base import ClassificationDataModule
from ssm.training.data.listops import ListOpsDataModule
from ssm.training.data.synthetic import SyntheticDataModule

__all__ = ["ClassificationDataModule", "ListOpsDataModule", "SyntheticDataModule"]
