"""End-to-end: `train.py` on a tiny generated ListOps, W&B offline, checkpoint, resume."""

import os
import pathlib
import subprocess
import sys

import pytest
from train_runner import ROOT, TINY, load_checkpoint, train


def global_step(checkpoint: pathlib.Path) -> int:
    return load_checkpoint(checkpoint)["global_step"]


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
    assert global_step(last) == 8  # continued from step 4, not restarted, in the same folder
    assert not (tmp_path / "resumed" / "checkpoints").exists()
    assert list((tmp_path / "resumed" / "wandb").glob("offline-run-*"))  # the resumed run logs in its own folder


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


@pytest.mark.slow
def test_train_with_a_compiled_model(tmp_path):
    """compile=<backend>: the model's forward runs under torch.compile (aot_eager here: no C++
    build), the run trains, and the checkpoint keeps the parameters' own names."""
    result = train(tmp_path, "compiled", "trainer.max_epochs=1", "logger=none", "test=false", "compile=aot_eager")
    assert "model: compiled with torch.compile (backend aot_eager)" in result.stdout + result.stderr
    checkpoint = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4
    assert checkpoint["state_dict"] and not any("_orig_mod" in key for key in checkpoint["state_dict"])
