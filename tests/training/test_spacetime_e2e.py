"""SpaceTime end to end: the default experiment (CO2) and an Informer experiment on a small
CSV written here run a few steps through ``run(cfg)``; the AR(p) study, fast version,
reproduces the claim (the closed-loop companion recovers φ, S4D forecasts worse)."""

import importlib.util
import math

import numpy as np
import pytest
from config_helpers import compose_config

from ssm.training.run import run

FAST = ["logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.accelerator=cpu", "callbacks.progress=null"]
SMALL_MODEL = ["model.d_model=16", "model.d_state=8", "model.n_kernels=2", "model.max_avg_window=8"]


@pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None, reason="needs statsmodels (the CO2 series)")
def test_default_spacetime_experiment_runs(tmp_path):
    cfg = compose_config("experiment=spacetime", *FAST, *SMALL_MODEL, "data.lag=32", "data.horizon=8",
                         f"hydra.run.dir={tmp_path}", output_dir=str(tmp_path))
    metrics = run(cfg)
    assert {"val/rmse", "val/aux/lag", "val/aux/decoder_input", "test/mse", "test/mae"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_etth1_experiment_runs_on_a_small_csv(tmp_path):
    path = tmp_path / "informer" / "ETTh1.csv"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(12300)  # ETT splits: 8640 + 2880 rows, then a short test split of > 720 rows
    ot = np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=t.size)
    with open(path, "w") as f:
        f.write("date,HUFL,OT\n")
        f.writelines(f"2016-07-01 {k:05d},{rng.normal():.5f},{v:.5f}\n" for k, v in enumerate(ot))
    cfg = compose_config("experiment=spacetime/etth1", *FAST, *SMALL_MODEL, f"data_root={tmp_path}",
                         "data.batch_size=8", f"hydra.run.dir={tmp_path}", output_dir=str(tmp_path))
    assert (cfg.data.lag, cfg.data.horizon) == (336, 720)
    metrics = run(cfg)
    assert math.isfinite(metrics["test/mse"]) and math.isfinite(metrics["val/aux/lag"])


@pytest.mark.slow
def test_ar_study_fast_version_reproduces_the_claim(tmp_path, capsys):
    """AR(4) on 8,000 steps, 10 epochs of batch 32 (about 40 s on 2 cores)."""
    cfg = compose_config(
        "experiment=synthetic/arp", "logger=none", "trainer.accelerator=cpu", "callbacks.progress=null",
        "study.orders=[4]", "~study.models.companion_open", "data.n_steps=8000", "data.batch_size=32",
        "trainer.max_epochs=10",
        f"study.out_dir={tmp_path}", f"hydra.run.dir={tmp_path}", output_dir=str(tmp_path),
    )
    results = run(cfg)
    table = capsys.readouterr().out
    assert "| 4 | companion |" in table and (tmp_path / "ar_recovery.md").read_text().strip() in table
    assert results["p4/companion/coef_error"] < 0.15  # |φ| up to 2; the full run gets about 0.05
    assert results["p4/companion/mse_ratio"] < 1.03
    assert results["p4/s4d/mse_ratio"] > results["p4/companion/mse_ratio"] + 0.05
    assert math.isnan(results["p4/s4d/coef_error"])
    for name in ("companion", "s4d"):  # each fit keeps its own checkpoints
        folder = tmp_path / "checkpoints" / f"p4-{name}"
        assert (folder / "last.ckpt").is_file() and len(list(folder.glob("best-*.ckpt"))) == 1
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))
