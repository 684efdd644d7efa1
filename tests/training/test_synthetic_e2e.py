"""End-to-end: `train.py experiment=synthetic/selective_copy` at a tiny size, and the clear
error when the model does not predict the K final positions."""

import pathlib
import subprocess

import pytest
from train_runner import train

TINY = [
    "data.seq_len=16",
    "data.vocab_size=4",
    "data.n_train=32",
    "data.n_val=8",
    "data.n_test=8",
    "data.batch_size=8",
    "model.d_model=8",
    "model.n_layers=1",
    "model.layer.d_state=4",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
]


def run(tmp_path: pathlib.Path, name: str, *overrides: str) -> subprocess.CompletedProcess:
    return train(tmp_path, name, *overrides, *TINY, check=False, tiny=False)


@pytest.mark.slow
@pytest.mark.parametrize("experiment, model", [("synthetic/selective_copy", "mamba"),
                                               ("synthetic/induction_heads", "s4d")])
def test_synthetic_experiment_trains_and_tests(tmp_path, experiment, model):
    extra = ["data.n_memorize=2"] if experiment.endswith("selective_copy") else []
    result = run(tmp_path, "run", f"experiment={experiment}", f"model={model}", "logger=csv", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = list((tmp_path / "run").rglob("metrics.csv"))
    assert metrics
    header = metrics[0].read_text().splitlines()[0]
    assert "test/acc" in header and "test/seq_acc" in header


@pytest.mark.slow
def test_pooling_that_is_not_last_k_is_a_clear_error(tmp_path):
    result = run(tmp_path, "bad", "experiment=synthetic/selective_copy", "model.pooling=mean", "logger=none")
    assert result.returncode != 0
    assert "set model.pooling=last_k" in result.stdout + result.stderr
