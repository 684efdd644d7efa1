"""End-to-end: `train.py` on a tiny generated ListOps, W&B offline, checkpoint, resume."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = [
    "experiment=lra",
    "data.n_train=64",
    "data.n_val=16",
    "data.n_test=16",
    "data.min_length=10",
    "data.max_length=60",
    "data.batch_size=16",
    "data.workers=1",
    "model.n_layers=1",
    "model.d_model=16",
    "model.layer.d_state=8",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
]


def train(tmp_path: pathlib.Path, run: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), DATA_PATH=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, f"hydra.run.dir={tmp_path / run}", *overrides]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def global_step(checkpoint: pathlib.Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
def test_train_writes_checkpoint_and_offline_wandb_run_then_resumes(tmp_path):
    first = train(tmp_path, "first", "trainer.max_epochs=1")
    assert "generating 64/16/16" in first.stdout + first.stderr
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert global_step(last) == 4  # 64 samples / batch 16
    runs = list((tmp_path / "first" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert list((tmp_path / "data" / "listops_generated").glob("*/basic_train.tsv"))

    train(tmp_path, "resumed", "trainer.max_epochs=2", f"ckpt_path={last}")
    resumed = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert global_step(resumed) == 8  # continued from step 4, not restarted


@pytest.mark.slow
def test_train_with_csv_logger_and_missing_checkpoint_error(tmp_path):
    train(tmp_path, "csv", "trainer.max_epochs=1", "logger=csv", "test=false")
    assert list((tmp_path / "csv" / "csv").rglob("metrics.csv"))
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, f"hydra.run.dir={tmp_path / 'bad'}",
           f"data.data_root={tmp_path / 'data'}", "logger=none", "ckpt_path=/nonexistent.ckpt"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ckpt_path='/nonexistent.ckpt' does not exist" in result.stdout + result.stderr
