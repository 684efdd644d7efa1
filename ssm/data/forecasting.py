"""Time series for forecasting: the Informer CSVs (ETT, ECL, Weather) with their standard
splits, and series that need no download: a documented synthetic multivariate series, an
AR(p) process, and Mauna Loa CO2 (bundled with statsmodels).

Conventions (Informer / SpaceTime, see the experiments reference):
- splits by rows: ETT-h 12/4/4 months (8640 / 2880 / 2880 rows), ETT-m the same at 4 rows
  per hour; other sets 70% / 10% / 20%;
- validation and test windows start ``lag`` rows early, so that their first target is the
  first row of the split;
- a z-score scaler fit on the training rows only; metrics are on this standardized scale;
- window s: x = data[s : s + lag], y = data[s + lag : s + lag + horizon].
"""

from __future__ import annotations

import csv
import math
import pathlib

import numpy as np
import torch
from torch.utils.data import Dataset

from ssm.data.autoregressive import simulate_ar, stable_ar_coefficients

INFORMER_SETS = {
    # name: (file, default target, rows per hour for the ETT month splits or None for 70/10/20)
    "ETTh1": ("ETTh1.csv", "OT", 1),
    "ETTh2": ("ETTh2.csv", "OT", 1),
    "ETTm1": ("ETTm1.csv", "OT", 4),
    "ETTm2": ("ETTm2.csv", "OT", 4),
    "ECL": ("ECL.csv", "MT_320", None),
    "WTH": ("WTH.csv", "WetBulbCelsius", None),
}
SOURCES = (
    "ETT*.csv: https://github.com/zhouhaoyi/ETDataset (ETT-small/); ECL.csv and WTH.csv: the "
    "Informer data links in https://github.com/zhouhaoyi/Informer2020"
)
FEATURES = ("M", "S", "MS")
# Univariate series that need no download (70/10/20 splits like the other non-ETT sets).
BUNDLED_SETS = {
    "co2": "Mauna Loa weekly atmospheric CO2 in ppm, March 1958 - December 2001 (2284 weeks), as "
           "bundled with statsmodels (statsmodels.datasets.co2); the 59 missing weeks are filled by "
           "linear interpolation",
}


def informer_path(data_root: str | pathlib.Path, name: str) -> pathlib.Path:
    """Where the CSV of ``name`` is expected: <data_root>/informer/<file>."""
    if name not in INFORMER_SETS:
        raise ValueError(f"unknown forecasting data set {name!r}; choose one of {sorted(INFORMER_SETS)} or 'synthetic'")
    return pathlib.Path(data_root).expanduser() / "informer" / INFORMER_SETS[name][0]


def read_csv(path: pathlib.Path) -> tuple[list[str], np.ndarray]:
    """(column names without the date column, values (rows, columns) float64)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"forecasting data: expected the CSV {path}, which does not exist. Download it ({SOURCES}) and "
            f"put it at that path, or set data_root (env DATA_PATH) to the folder that holds informer/"
        )
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    start = 1 if header and header[0].strip().lower() == "date" else 0
    if len(header) <= start:
        raise ValueError(f"forecasting data: {path} has no value columns (header {header})")
    try:
        values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(start, len(header)), ndmin=2)
    except ValueError as err:
        raise ValueError(f"forecasting data: {path} holds a non-numeric value or a short row ({err})") from err
    if values.shape[0] == 0:
        raise ValueError(f"forecasting data: {path} has no data rows")
    columns = [c.strip() for c in header[start:]]
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, col = bad[0]
        raise ValueError(
            f"forecasting data: {path} holds {len(bad)} non-finite values (NaN or inf), the first in data row "
            f"{row + 1} (line {row + 2}), column {columns[col]!r}: fill or drop them first"
        )
    return columns, values


def borders(name: str, n_rows: int, lag: int) -> list[tuple[int, int]]:
    """[(start, end)] row ranges of train / val / test, val and test starting ``lag`` early.

    ETT sets split 12 / 4 / 4 months of 30 days (ETT-h: 8640 / 2880 / 2880 rows, ETT-m 4x);
    any other name (the other Informer sets, "synthetic") 70% / 10% / 20% of ``n_rows``."""
    per_hour = INFORMER_SETS[name][2] if name in INFORMER_SETS else None
    if per_hour is not None:
        month = 30 * 24 * per_hour
        train, val = 12 * month, 4 * month
        ends = [train, train + val, min(train + 2 * val, n_rows)]
        if ends[2] <= ends[1]:
            raise ValueError(f"forecasting data: {name} has {n_rows} rows, fewer than the {train + val} of its splits")
    else:
        train, test = int(n_rows * 0.7), int(n_rows * 0.2)
        ends = [train, n_rows - test, n_rows]
    starts = [0, ends[0] - lag, ends[1] - lag]
    return [(max(s, 0), e) for s, e in zip(starts, ends)]


def select_features(columns: list[str], values: np.ndarray, features: str, target: str | None, name: str):
    """(inputs (rows, V_in), their column names, index of the target columns in the inputs).

    "M": all columns in and out; "S": the target alone; "MS": all in, the target out. As in
    Informer's loaders, the target column is moved last for "M" and "MS" (the ETT files
    already end with it), so a model that reads the variates in order sees Informer's order."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if target is None and features == "M":
        return values, list(columns), list(range(values.shape[1]))
    if target not in columns:
        raise ValueError(f"forecasting data {name}: target column {target!r} not among {columns}")
    k = columns.index(target)
    if features == "S":
        return values[:, k : k + 1], [target], [0]
    order = [i for i in range(values.shape[1]) if i != k] + [k]
    n = values.shape[1]
    return values[:, order], [columns[i] for i in order], list(range(n)) if features == "M" else [n - 1]


def synthetic_multivariate(n_steps: int = 4000, n_variates: int = 7, seed: int = 0) -> np.ndarray:
    """A multivariate series with trend, two seasonal cycles and cross-variate coupling,
    (n_steps, n_variates) float64, deterministic in ``seed``:

        x_v[t] = 0.002·κ_v·t + α_v sin(2πt/24 + φ_v) + β_v sin(2πt/168 + ψ_v) + e_v[t]
        e[t] = 0.6·e[t-1] + 0.3·M e_shift[t-1] + ε[t],  ε ~ N(0, 0.2²)

    with e_shift the noise of the previous variate (variate v - 1, cyclically) and M a fixed
    random ±1 sign per variate: a "daily" (24) and "weekly" (168) cycle like hourly data,
    and a VAR(1) noise in which each variate drives the next, so the other variates help a
    forecast."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps, dtype=np.float64)[:, None]
    kappa = rng.uniform(-1, 1, n_variates)
    alpha, beta = rng.uniform(0.5, 1.5, n_variates), rng.uniform(0.2, 0.8, n_variates)
    phi, psi = rng.uniform(0, 2 * math.pi, n_variates), rng.uniform(0, 2 * math.pi, n_variates)
    signs = rng.choice([-1.0, 1.0], n_variates)
    e = np.zeros((n_steps, n_variates))
    eps = rng.normal(0, 0.2, (n_steps, n_variates))
    for k in range(1, n_steps):
        e[k] = 0.6 * e[k - 1] + 0.3 * signs * np.roll(e[k - 1], 1) + eps[k]
    return (0.002 * kappa * t + alpha * np.sin(2 * math.pi * t / 24 + phi)
            + beta * np.sin(2 * math.pi * t / 168 + psi) + e)


def bundled_series(name: str) -> tuple[list[str], np.ndarray]:
    """(column names, values (rows, 1)) of a series from ``BUNDLED_SETS``."""
    if name not in BUNDLED_SETS:
        raise ValueError(f"unknown bundled series {name!r}; choose one of {sorted(BUNDLED_SETS)}")
    try:
        from statsmodels.datasets import co2
    except ImportError as err:
        raise ImportError(
            f"the {name!r} series ships with statsmodels, which is not installed: pip install statsmodels"
        ) from err
    frame = co2.load_pandas().data
    return ["co2"], frame["co2"].interpolate(limit_direction="both").to_numpy(dtype=np.float64)[:, None]


def ar_series(p: int, n_steps: int, seed: int = 0, radius: tuple[float, float] = (0.8, 0.98)):
    """(φ (p,), series (n_steps, 1)) of a stationary AR(p) process with unit innovations and
    characteristic roots of moduli in ``radius`` (:mod:`ssm.data.autoregressive`)."""
    rng = np.random.default_rng([int(seed), int(p)])
    phi = stable_ar_coefficients(p, rng, tuple(radius))
    return phi, simulate_ar(phi, n_steps, rng)[:, None]


class ForecastWindows(Dataset):
    """Windows (x (lag, V_in), y (horizon, V_out)) float32 over the rows of one split:
    window s is x = data[s : s + lag], y = data[s + lag : s + lag + horizon, targets].

    Args:
        data: (rows, V_in) rows of the split (for val / test including the ``lag`` rows before it).
        targets: indices of the V_out target columns in ``data``.
        split: the split's name, for error messages.
    """

    def __init__(self, data: np.ndarray, lag: int, horizon: int, targets: list[int], split: str = "split") -> None:
        self.data = torch.as_tensor(data, dtype=torch.float32)
        self.lag, self.horizon, self.targets = lag, horizon, targets
        self.n = data.shape[0] - lag - horizon + 1
        if self.n < 1:
            raise ValueError(
                f"the {split} split has {data.shape[0]} rows (lag included), too few for one window of lag {lag} "
                f"+ horizon {horizon}: lower lag / horizon or use a longer series"
            )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: int):
        x = self.data[s : s + self.lag]
        y = self.data[s + self.lag : s + self.lag + self.horizon, self.targets]
        return x, y
