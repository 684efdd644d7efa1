"""Your own CSV through the forecasting experiments: `data.dataset=csv data.path=...` composes
and builds on each of them, a too-short series stops before the logger starts, and
`train.py` trains and tests on a CSV given by a path relative to where it runs."""

import os
import pathlib
import subprocess
import sys

import hydra
import numpy as np
import pytest
import torch
from config_helpers import compose_config

from ssm.training.run import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _write(path, n_rows):
    rng = np.random.default_rng(0)
    hours = np.datetime64("2021-01-01T00:00") + np.arange(n_rows).astype("timedelta64[h]")
    with open(path, "w") as f:
        f.write("timestamp,load,OT\n")
        f.writelines(f"{str(t).replace('T', ' ')},{rng.normal():.4f},{np.sin(2 * np.pi * k / 24):.4f}\n"
                     for k, t in enumerate(hours))


@pytest.mark.parametrize("experiment", ["chimera", "chimera/etth1", "spacetime", "spacetime/etth1", "spacetime/ecl"])
def test_every_forecasting_experiment_takes_a_csv(tmp_path, experiment):
    _write(tmp_path / "series.csv", 300)
    cfg = compose_config(f"experiment={experiment}", "data.dataset=csv", f"data.path={tmp_path / 'series.csv'}",
                         "data.target=OT", "data.lag=16", "data.horizon=4", "data.columns=[OT,load]",
                         "data.split_ratios=[0.6,0.2,0.2]")
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.name == "series.csv" and datamodule.columns[-1] == "OT"
    assert datamodule.ranges == [(0, 180), (180 - 16, 240), (240 - 16, 300)]
    net = build_model(cfg, datamodule)
    out = net(torch.randn(2, 16, datamodule.n_variates))
    forecast = out[0] if isinstance(out, tuple) else out
    assert forecast.shape == (2, 4, datamodule.n_targets)


def test_too_short_series_stops_the_run_before_the_logger_starts(tmp_path, monkeypatch):
    from ssm.training import loggers, run

    started = []
    monkeypatch.setattr(loggers, "wandb_logger", lambda *a, **k: started.append(1))
    _write(tmp_path / "series.csv", 100)
    cfg = compose_config("experiment=chimera", "data.dataset=csv", f"data.path={tmp_path / 'series.csv'}")
    with pytest.raises((ValueError, hydra.errors.InstantiationException), match="series.csv validation split has"):
        run.fit(cfg)
    assert not started


@pytest.mark.slow
def test_train_py_on_a_relative_csv_path(tmp_path):
    _write(tmp_path / "series.csv", 400)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=chimera", "data.dataset=csv", "data.path=series.csv",
           "data.target=OT", "data.lag=16", "data.horizon=4", "data.batch_size=8", "model.d_model=8",
           "model.layer.d_state=2", "model.layer.period=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
           "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.accelerator=cpu",
           "callbacks.progress=null", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    assert {"val/mse", "test/mse"} <= set(metrics.read_text().splitlines()[0].split(","))
