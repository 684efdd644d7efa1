"""Training stack: Lightning data modules and tasks, optimizer and scheduler builders,
loggers, and the ``run`` entry point used by ``train.py``. The only part of the package
that imports Lightning, Hydra and W&B."""

from ssm.training.inference import load_model

__all__ = ["load_model"]
