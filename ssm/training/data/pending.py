"""Placeholder for the LRA tasks whose data loaders are not written yet.

The experiment configs for these tasks already carry the papers' hyperparameters and the
input/output shapes, so their models can be built and inspected; training stops with a
clear message before any data is read.
"""

from __future__ import annotations

from ssm.training.data.base import ClassificationDataModule


class PendingLRADataModule(ClassificationDataModule):
    """Shapes of an LRA task whose loader is not available yet; ``prepare_data`` raises."""

    def __init__(
        self,
        task: str,
        n_classes: int,
        n_tokens: int | None = None,
        d_input: int | None = None,
        l_max: int | None = None,
        batch_size: int = 32,
        **_: object,
    ) -> None:
        super().__init__(batch_size)
        self.task = task
        self.n_classes = n_classes
        self.n_tokens = n_tokens
        self.d_input = d_input
        self.l_max = l_max

    def prepare_data(self) -> None:
        raise NotImplementedError(
            f"the LRA {self.task} data loader is not implemented yet (only ListOps is: "
            "`python train.py experiment=lra/listops`); this config already holds the paper's "
            "model and optimizer settings"
        )

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
