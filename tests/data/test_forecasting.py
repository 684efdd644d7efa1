"""Forecasting data: Informer CSV splits, windows, train-only scaler and feature modes on a
small CSV written here; the synthetic series; clear errors for missing files and bad values."""

import numpy as np
import pytest
import torch

from ssm.data import forecasting as fc
from ssm.training.data import ForecastingDataModule


def _write_csv(path, n_rows, columns=("HUFL", "MULL", "OT")):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n_rows, len(columns))) + np.arange(len(columns))
    with open(path, "w") as f:
        f.write("date," + ",".join(columns) + "\n")
        for k, row in enumerate(values):
            f.write(f"2016-07-01 {k:05d}," + ",".join(f"{v:.6f}" for v in row) + "\n")
    return values


def test_ett_borders_are_12_4_4_months_with_lag_overlap():
    assert fc.borders("ETTh1", 17420, 96) == [(0, 8640), (8640 - 96, 11520), (11520 - 96, 14400)]
    assert fc.borders("ETTm1", 69680, 10) == [(0, 34560), (34550, 46080), (46070, 57600)]


def test_other_sets_split_70_10_20():
    assert fc.borders("WTH", 1000, 5) == [(0, 700), (695, 800), (795, 1000)]


def test_csv_windows_scaler_and_features(tmp_path):
    values = _write_csv(tmp_path / "informer" / "WTH.csv", 200, ("a", "WetBulbCelsius", "c"))
    dm = ForecastingDataModule("WTH", tmp_path, lag=8, horizon=4, features="M", batch_size=5)
    dm.setup()
    train = values[:140]
    mean, std = train.mean(0), train.std(0)
    x, y = dm.splits[0][3]
    np.testing.assert_allclose(x.numpy(), ((values[3:11] - mean) / std), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), ((values[11:15] - mean) / std), rtol=1e-5, atol=1e-5)
    # the first test target is the first test row
    x, y = dm.splits[2][0]
    np.testing.assert_allclose(y[0].numpy(), (values[160] - mean) / std, rtol=1e-5, atol=1e-5)
    assert len(dm.splits[0]) == 140 - 8 - 4 + 1
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (5, 8, 3) and yb.shape == (5, 4, 3) and xb.dtype == torch.float32
    assert (dm.n_variates, dm.n_targets, dm.lag, dm.horizon) == (3, 3, 8, 4)

    s = ForecastingDataModule("WTH", tmp_path, lag=8, horizon=4, features="S")
    s.setup()
    assert s.n_variates == 1 and s.splits[0][0][0].shape == (8, 1)
    ms = ForecastingDataModule("WTH", tmp_path, lag=8, horizon=4, features="MS")
    ms.setup()
    x, y = ms.splits[0][0]
    assert x.shape == (8, 3) and y.shape == (4, 1) and ms.n_targets == 1
    torch.testing.assert_close(y[:, 0], ms.splits[0].data[8:12, 2])  # the target moved last
    np.testing.assert_allclose(x[:, 2].numpy(), (values[:8, 1] - mean[1]) / std[1], rtol=1e-5, atol=1e-5)


def test_missing_file_names_the_path_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"informer/ETTh1\.csv.*ETDataset"):
        ForecastingDataModule("ETTh1", tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(dataset="ETTx"), "unknown dataset"), (dict(lag=0), "lag"), (dict(features="X"), "features"),
     (dict(horizon=-1), "horizon")],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForecastingDataModule(**kwargs)


def test_synthetic_series_is_deterministic_and_coupled():
    a = fc.synthetic_multivariate(500, 4, seed=1)
    assert a.shape == (500, 4)
    np.testing.assert_array_equal(a, fc.synthetic_multivariate(500, 4, seed=1))
    assert not np.allclose(a, fc.synthetic_multivariate(500, 4, seed=2))
    dm = ForecastingDataModule(n_steps=600, n_variates=3, lag=24, horizon=6, features="MS")
    dm.setup()
    assert dm.n_targets == 1 and dm.columns[-1] == "x2"
