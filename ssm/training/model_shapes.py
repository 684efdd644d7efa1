"""The model's data-dependent constructor arguments, recorded in every checkpoint."""

from __future__ import annotations

KEY = "model_shapes"


class RecordsModelShapes:
    """Mixin for the Lightning tasks: ``model_shapes`` (set by ``run.fit`` from
    ``run.model_shapes``: token count, classes, lag, ...) is written into every checkpoint
    under ``"model_shapes"``, so that :func:`ssm.training.load_model` rebuilds the model from
    the run's config alone. A module hook, which Lightning calls also for weights-only
    checkpoints (callbacks' hooks are skipped there)."""

    model_shapes: dict | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.model_shapes is not None:
            checkpoint[KEY] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_shapes.items()}
