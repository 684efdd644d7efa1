"""A callback that SIGKILLs its own training process at the end of a given optimizer step: a
crash that cannot clean up. It runs before the checkpoint callbacks (Lightning calls those
last), so a checkpoint due at that very step is not written."""

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RaiseAtStart(L.Callback):
    """Fails the run as training starts (after the logger has started its run)."""

    def on_train_start(self, trainer, pl_module) -> None:
        raise RuntimeError("failing on purpose")
