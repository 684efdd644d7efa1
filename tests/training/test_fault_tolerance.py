"""Fault tolerance: a run SIGKILLed mid-epoch resumes with the documented command from its
last step checkpoint and ends exactly where an uninterrupted run ends (same step count,
weights, optimizer state and metrics); a rerun with the same seed reproduces the metrics;
checkpoints load with ``weights_only=True``."""

import csv
import signal

import pytest
import torch
from train_runner import load_checkpoint, train

RUN = ["trainer.max_epochs=2", "checkpoint_every_n_steps=3", "logger=csv", "model.dropout=0.1"]


def metrics(run_dir):
    """Every logged value of the run's CSV log, by (step, name)."""
    (path,) = run_dir.glob("csv/**/metrics.csv")
    out = {}
    for row in csv.DictReader(path.open()):
        for name, value in row.items():
            if value and name not in ("epoch", "step"):
                out[(int(row["step"]), name)] = float(value)
    return out


def assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for name in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][name], b["state_dict"][name], rtol=0, atol=0, msg=name)
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for key in opt_a["state"]:
        for field, value in opt_a["state"][key].items():
            torch.testing.assert_close(value, opt_b["state"][key][field], rtol=0, atol=0)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The folder of one uninterrupted run of RUN (seed 0), shared by the tests."""
    root = tmp_path_factory.mktemp("uninterrupted")
    train(root, "full", *RUN)
    return root / "full"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    full = load_checkpoint(uninterrupted / "checkpoints" / "last.ckpt")
    assert full["global_step"] == 8  # 2 epochs of 64 / 16

    killed = train(tmp_path, "killed", *RUN, "+callbacks.kill._target_=kill_callback.KillAtStep",
                   "+callbacks.kill.step=7", check=False)  # step 7 is lost
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(last)
    assert saved["global_step"] == 6 and saved["epoch"] == 1  # mid-way through the second epoch
    assert "rng_states" in saved

    train(tmp_path, "resumed", *RUN, f"ckpt_path={last}")
    resumed = load_checkpoint(last)  # the resumed run continues in the folder of its checkpoint
    assert_same_training_state(resumed, full)
    full_metrics, resumed_metrics = metrics(uninterrupted), metrics(tmp_path / "resumed")
    # every value logged after the kill, but the epoch aggregates of training metrics (the
    # resumed run saw only the epoch's last batches)
    after = {k: v for k, v in full_metrics.items()
             if k[0] >= 6 and not k[1].endswith("_epoch") and k[1] != "train/acc"}
    assert {name for _, name in after} >= {"train/loss_step", "val/loss", "val/acc", "test/loss"}
    mismatched = {k: (v, resumed_metrics.get(k)) for k, v in after.items()
                  if resumed_metrics.get(k) != pytest.approx(v, rel=1e-6, abs=1e-7)}
    assert not mismatched
    assert resumed_metrics[(8, "test/acc")] == full_metrics[(8, "test/acc")]


@pytest.mark.slow
def test_rerun_with_the_same_seed_reproduces_the_metrics(tmp_path, uninterrupted):
    train(tmp_path, "b", *RUN)
    a, b = metrics(uninterrupted), metrics(tmp_path / "b")
    assert a.keys() == b.keys() and any(name == "val/acc" for _, name in a)
    assert all(a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7) for k in a)
    train(tmp_path, "c", *RUN, "seed=7")
    c = metrics(tmp_path / "c")
    assert any(c[k] != pytest.approx(a[k], rel=1e-6) for k in a if "loss" in k[1])  # the seed matters


@pytest.mark.slow
def test_resuming_with_another_model_size_says_the_checkpoint_does_not_fit(tmp_path, uninterrupted):
    result = train(tmp_path, "other", *RUN, "model.d_model=24",
                   f"ckpt_path={uninterrupted / 'checkpoints' / 'last.ckpt'}", check=False)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "does not fit the configured model" in log and "of another shape" in log
    assert not (tmp_path / "other" / "wandb").exists() and not (tmp_path / "other" / "csv").exists()
