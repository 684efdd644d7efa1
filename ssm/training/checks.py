"""Run-time checks of the training tasks, with messages that say what to do, and the value
predicates the config checks share."""

from __future__ import annotations

import torch


def require_finite_loss(loss: torch.Tensor, split: str, step: int) -> None:
    """Raise ``FloatingPointError`` when the loss is NaN or infinite (before any backward pass
    could carry it into the weights and the optimizer state)."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"the {split} loss is {loss.item() if loss.numel() == 1 else loss} at step {step}. Try a smaller "
            "optimizer.lr (and model.layer.lr), trainer.gradient_clip_val=1.0, a longer scheduler.warmup_steps "
            "or full precision (trainer.precision=32-true), and check the data for NaN/inf; to continue from "
            "before the divergence, resume with ckpt_path=<run dir>/checkpoints/last.ckpt and a smaller lr"
        )


def is_integer(value) -> bool:
    """An int that is not a bool (a config's ``true`` is not a step count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
