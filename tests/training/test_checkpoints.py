"""``last.ckpt`` carries the best-model and early-stopping bookkeeping of the epoch it was
written at, so a run resumed from it keeps one best checkpoint (save_top_k=1), the right one,
also when it resumes from before a best checkpoint that was already written."""

import shutil

import hydra
import lightning as L
import pytest
import torch
from config_helpers import compose_config
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from ssm.training.callbacks import LastCheckpoint

SCORES = [0.1, 0.5, 0.3, 0.7]  # val/acc by epoch: not monotone, so a stale best is visible


class ScheduledScore(L.LightningModule):
    """Trains one scalar; validation reports ``SCORES[epoch]`` as val/acc."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", SCORES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)


def fit(folder, epochs: int, last_first: bool, ckpt_path=None):
    best = ModelCheckpoint(dirpath=folder, filename="best-{epoch}", monitor="val/acc", mode="max", save_top_k=1)
    stopping = EarlyStopping(monitor="val/acc", mode="max", patience=10)
    last = LastCheckpoint(folder, every_n_steps=None)
    callbacks = [last, best, stopping] if last_first else [best, stopping, last]
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=callbacks, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(ScheduledScore(), ckpt_path=ckpt_path, weights_only=True)
    return best, stopping


def saved_state(path, kind):
    (state,) = [v for k, v in torch.load(path, weights_only=True)["callbacks"].items() if k.startswith(kind)]
    return state


@pytest.mark.parametrize("last_first", [False, True])
def test_last_checkpoint_carries_the_final_epochs_best_and_patience(tmp_path, last_first):
    best, stopping = fit(tmp_path, epochs=4, last_first=last_first)
    assert best.best_model_path.endswith("best-epoch=3.ckpt")
    saved = saved_state(tmp_path / "last.ckpt", "ModelCheckpoint")
    assert saved["best_model_path"] == best.best_model_path
    assert float(saved["best_model_score"]) == pytest.approx(0.7)
    saved = saved_state(tmp_path / "last.ckpt", "EarlyStopping")
    assert saved["wait_count"] == stopping.wait_count == 0
    assert float(saved["best_score"]) == pytest.approx(0.7)


@pytest.mark.parametrize("last_first", [False, True])
def test_a_resumed_run_keeps_one_best_checkpoint_the_right_one(tmp_path, last_first):
    fit(tmp_path, epochs=2, last_first=last_first)  # best: epoch 1 (0.5)
    best, _ = fit(tmp_path, epochs=3, last_first=last_first, ckpt_path=tmp_path / "last.ckpt")  # epoch 2: 0.3
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == ["best-epoch=1.ckpt"]
    assert best.best_model_path.endswith("best-epoch=1.ckpt")
    assert float(best.best_model_score) == pytest.approx(0.5)


class CopyLastAt(L.Callback):
    """Copies ``last.ckpt`` aside as the next batch starts after optimizer step ``step``: the
    state a run killed after writing later best checkpoints would resume from."""

    def __init__(self, folder, step: int) -> None:
        self.folder, self.step = folder, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            shutil.copy(self.folder / "last.ckpt", self.folder / "mid.ckpt")


def test_resuming_from_before_a_best_checkpoint_overwrites_it_without_a_stray_copy(tmp_path):
    cfg = compose_config("experiment=lra")

    def run(epochs, *extra, ckpt_path=None):
        best = hydra.utils.instantiate(cfg.callbacks.checkpoint, dirpath=str(tmp_path), filename="best-{epoch}")
        trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                            enable_model_summary=False,
                            callbacks=[best, LastCheckpoint(tmp_path, every_n_steps=1), *extra])
        trainer.fit(ScheduledScore(), ckpt_path=ckpt_path, weights_only=True)
        return best

    run(2, CopyLastAt(tmp_path, step=3))  # mid.ckpt: mid-way through epoch 1, best still epoch 0
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == ["best-epoch=1.ckpt"]
    best = run(2, ckpt_path=tmp_path / "mid.ckpt")  # epoch 1 again: best-epoch=1.ckpt once more
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == ["best-epoch=1.ckpt"]
    assert best.best_model_path == str(tmp_path / "best-epoch=1.ckpt")


def test_step_checkpoints_are_written_once_per_optimizer_step_with_gradient_accumulation(tmp_path):
    """every_n_steps counts optimizer steps: with two batches accumulated per step, last.ckpt
    is written after each step's last batch, not again after the next step's first batch
    (whose half-accumulated gradient a resumed run would not have), and once at the epoch's end."""
    last = LastCheckpoint(tmp_path, every_n_steps=1)
    saved = []  # the optimizer step of every write
    write = last._save
    last._save = lambda trainer: (saved.append(trainer.global_step), write(trainer))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, accumulate_grad_batches=2, callbacks=[last], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(ScheduledScore(), train_dataloaders=torch.utils.data.DataLoader(torch.zeros(8, 1), batch_size=1))
    assert saved == [1, 2, 3, 4, 4]  # 8 batches: 4 steps, then the epoch's end
    assert (tmp_path / "last.ckpt").exists()
