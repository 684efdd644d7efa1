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
        f.writelines(f"2016-07-01 {k:05d}," + ",".join(f"{v:.6f}" for v in row) + "\n" for k, row in enumerate(values))
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
    order = [0, 2, 1]  # Informer's order: the target moved last
    assert dm.columns == ["a", "c", "WetBulbCelsius"]
    train = values[:140, order]
    mean, std = train.mean(0), train.std(0)
    x, y = dm.splits[0][3]
    np.testing.assert_allclose(x.numpy(), ((values[3:11, order] - mean) / std), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), ((values[11:15, order] - mean) / std), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack([dm.mean, dm.std]), np.stack([mean, std]), rtol=1e-5, atol=1e-6)
    # the first validation / test target is the first row of the split
    np.testing.assert_allclose(dm.splits[1][0][1][0].numpy(), (values[140, order] - mean) / std, rtol=1e-5, atol=1e-5)
    x, y = dm.splits[2][0]
    np.testing.assert_allclose(y[0].numpy(), (values[160, order] - mean) / std, rtol=1e-5, atol=1e-5)
    assert [len(split) for split in dm.splits] == [140 - 8 - 4 + 1, 20 - 4 + 1, 40 - 4 + 1]
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (5, 8, 3) and yb.shape == (5, 4, 3) and xb.dtype == yb.dtype == torch.float32
    assert (dm.n_variates, dm.n_targets, dm.lag, dm.horizon, dm.d_input) == (3, 3, 8, 4, 3)
    assert dm.n_classes is None and dm.n_tokens is None

    s = ForecastingDataModule("WTH", tmp_path, lag=8, horizon=4, features="S")
    s.setup()
    assert s.n_variates == 1 and s.splits[0][0][0].shape == (8, 1)
    np.testing.assert_allclose(s.splits[0][0][0][:, 0].numpy(), (values[:8, 1] - mean[2]) / std[2], rtol=1e-5, atol=1e-5)
    ms = ForecastingDataModule("WTH", tmp_path, lag=8, horizon=4, features="MS")
    ms.setup()
    x, y = ms.splits[0][0]
    assert x.shape == (8, 3) and y.shape == (4, 1) and ms.n_targets == 1
    torch.testing.assert_close(y[:, 0], ms.splits[0].data[8:12, 2])  # the target moved last
    np.testing.assert_allclose(x[:, 2].numpy(), (values[:8, 1] - mean[2]) / std[2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="target column 'OT' not among"):
        ForecastingDataModule("WTH", tmp_path, features="S", target="OT")


def test_etth1_csv_uses_the_month_splits(tmp_path):
    values = _write_csv(tmp_path / "informer" / "ETTh1.csv", 11520 + 100)  # test split cut short
    dm = ForecastingDataModule("ETTh1", tmp_path, lag=24, horizon=6, features="S")
    dm.setup()
    ot = values[:, 2]
    mean, std = ot[:8640].mean(), ot[:8640].std()
    assert dm.target == "OT" and dm.columns == ["OT"]
    assert [len(split) for split in dm.splits] == [8640 - 30 + 1, 2880 - 6 + 1, 100 - 6 + 1]
    for split, first in ((1, 8640), (2, 11520)):
        x, y = dm.splits[split][0]
        np.testing.assert_allclose(x[:, 0].numpy(), (ot[first - 24 : first] - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y[:, 0].numpy(), (ot[first : first + 6] - mean) / std, rtol=1e-5, atol=1e-5)


def test_short_split_and_bad_csv_fail_clearly(tmp_path):
    _write_csv(tmp_path / "informer" / "WTH.csv", 60, ("a", "WetBulbCelsius"))
    with pytest.raises(ValueError, match="WTH validation split has 14 rows"):
        ForecastingDataModule("WTH", tmp_path, lag=8, horizon=8)  # checked when built, before setup
    (tmp_path / "informer" / "ECL.csv").write_text("date,MT_320\n2012-01-01,1.5\n2012-01-02,n/a\n")
    with pytest.raises(ValueError, match="non-numeric"):
        ForecastingDataModule("ECL", tmp_path)
    (tmp_path / "informer" / "ECL.csv").write_text("date,a,MT_320\n2012-01-01,1,1.5\n2012-01-02,2,nan\n"
                                                  "2012-01-03,inf,3\n")
    with pytest.raises(ValueError, match=r"ECL.csv holds 2 missing or non-finite values.*data row 2 \(line 3\), "
                                         r"column 'MT_320'"):
        ForecastingDataModule("ECL", tmp_path)


def test_missing_file_names_the_path_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"informer/ETTh1\.csv.*ETDataset"):
        ForecastingDataModule("ETTh1", tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"dataset": "ETTx"}, "unknown dataset"), ({"lag": 0}, "lag"), ({"features": "X"}, "features"),
     ({"horizon": -1}, "horizon"), ({"lag": 2.5}, "lag"), ({"eval_batch_size": 0}, "eval_batch_size"),
     ({"target": "x9"}, "target column 'x9'")],
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
    x, y = dm.splits[0][0]
    assert x.shape == (24, 3) and y.shape == (6, 1) and len(dm.splits[0]) == 420 - 30 + 1
