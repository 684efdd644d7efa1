"""A callback that SIGKILLs its own training process at a given optimizer step (after the
callbacks listed before it, e.g. the step checkpoint, have run): a crash that cannot clean up."""

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
