"""Time series for forecasting: the Informer CSVs (ETT, ECL, Weather) with their standard
splits, any CSV of the same shape (a header, one row per time step), and series that need no
download: a documented synthetic multivariate series, an AR(p) process, and Mauna Loa CO2
(bundled with statsmodels).

Conventions (Informer / SpaceTime, see the experiments reference):
- splits by rows: ETT-h 12/4/4 months (8640 / 2880 / 2880 rows), ETT-m the same at 4 rows
  per hour; other sets and your own CSV 70% / 10% / 20% (or given ratios);
- validation and test windows start ``lag`` rows early, so that their first target is the
  first row of the split;
- a z-score scaler fit on the training rows only; metrics are on this standardized scale;
- window s: x = data[s : s + lag], y = data[s + lag : s + lag + horizon].
"""

from __future__ import annotations

import csv
import datetime
import math
import numbers
import os
import pathlib
from collections.abc import Sequence

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
DOWNLOAD_HINT = (
    f"Download it ({SOURCES}) and put it at that path, or set data_root (env DATA_PATH) to the folder "
    "that holds informer/"
)
# Informer's split of the non-ETT sets: train, validation, test fractions of the rows.
DEFAULT_RATIOS = (0.7, 0.1, 0.2)
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


def read_csv(path: pathlib.Path, missing_hint: str = DOWNLOAD_HINT) -> tuple[list[str], np.ndarray]:
    """(column names without the timestamp column, values (rows, columns) float64).

    One row per time step under a header of column names. The first column is skipped as
    timestamps when it is named ``date`` or its first value is an ISO date (2016-07-01,
    2016-07-01 00:00:00); every other field must be a number. Data rows count from 1 after the
    header (line 1); blank lines at the end of the file are ignored, a blank line before a data
    row is a row of one empty field. An empty field, NaN or inf stops with its row and line."""
    if not path.is_file():
        raise FileNotFoundError(f"forecasting data: expected the CSV {path}, which does not exist or is not a file. "
                                f"{missing_hint}")
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Excel's "CSV UTF-8") is not a name
        reader = csv.reader(f)
        header = [name.strip() for name in next(reader, [])]
        rows, lines = [], []
        start = None
        for row, line, fields in _data_rows(reader):
            if start is None:
                start = 1 if _is_timestamp_column(header, fields) else 0
                columns = _value_columns(path, header, start)
            rows.append(_row_values(path, fields, columns, start, row, line))
            lines.append(line)
    if not rows:
        raise ValueError(f"forecasting data: {path} has no data rows (header {header})")
    values = np.stack(rows)
    _check_finite(path, values, columns, lines)
    return columns, values


def _data_rows(reader):
    """(data row from 1, line, fields) for each row after the header; blank lines at the end
    are dropped, the others are a row of one empty field (what a missing value is in a
    one-column CSV)."""
    row, blank_lines = 0, []
    for fields in reader:
        if not fields:
            blank_lines.append(reader.line_num)
            continue
        for line in blank_lines:
            row += 1
            yield row, line, [""]
        blank_lines = []
        row += 1
        yield row, reader.line_num, fields


def _is_timestamp_column(header: list[str], first_row: list[str]) -> bool:
    """Whether the first column holds timestamps: named ``date``, or its first value an ISO
    date that is not a number."""
    if header and header[0].lower() == "date":
        return True
    text = first_row[0].strip()
    if _is_number(text):
        return False
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _value_columns(path: pathlib.Path, header: list[str], start: int) -> list[str]:
    """The header's value columns after ``start``, checked to be named and unique."""
    columns = header[start:]
    if not columns:
        raise ValueError(f"forecasting data: {path} has no value columns (header {header})")
    unnamed = [start + k + 1 for k, name in enumerate(columns) if not name]
    if unnamed:
        raise ValueError(
            f"forecasting data: {path}: header column(s) number {unnamed} have no name (an index written by pandas' "
            f"to_csv? write it with index=False); header {header}"
        )
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(f"forecasting data: {path}: the header repeats the column name(s) {repeated}")
    return columns


def _row_values(path: pathlib.Path, fields: list[str], columns: list[str], start: int, row: int, line: int):
    """(len(columns),) float64 of one data row; an empty field is NaN (reported as missing
    with the other non-finite values), any other non-number raises."""
    if len(fields) != start + len(columns):
        raise ValueError(
            f"forecasting data: {path}: data row {row} (line {line}) has {len(fields)} field(s), the header "
            f"{start + len(columns)} columns"
        )
    texts = fields[start:]
    try:
        return np.array(texts, dtype=np.float64)
    except ValueError:
        return np.array([_field_value(path, text, columns, j, start, row, line) for j, text in enumerate(texts)])


def _field_value(path: pathlib.Path, text: str, columns: list[str], j: int, start: int, row: int, line: int) -> float:
    if not text.strip():
        return math.nan
    try:
        return float(text)
    except ValueError:
        timestamps = (
            "; a first column is skipped as timestamps only when it is named 'date' or its first value is an "
            "ISO date such as 2016-07-01 00:00:00"
        ) if j == 0 and start == 0 else ""
        raise ValueError(
            f"forecasting data: {path} holds the non-numeric value {text!r} in data row {row} (line {line}), "
            f"column {columns[j]!r}{timestamps}"
        ) from None


def _check_finite(path: pathlib.Path, values: np.ndarray, columns: list[str], lines: list[int]) -> None:
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        row, col = bad[0]
        raise ValueError(
            f"forecasting data: {path} holds {len(bad)} missing or non-finite values (empty fields, NaN or inf), "
            f"the first in data row {row + 1} (line {lines[row]}), column {columns[col]!r}: fill or drop them first"
        )


def own_csv_path(path: str | os.PathLike | None) -> pathlib.Path:
    """``data.path`` of ``dataset=csv`` as a path; a relative one is read from the working
    directory (where train.py runs, as for ``data_root``)."""
    if path is None or not str(path).strip():
        raise ValueError("forecasting data: dataset=csv reads the CSV at data.path; set data.path=/path/to/file.csv")
    return pathlib.Path(path).expanduser().absolute()


def pick_columns(columns: list[str], values: np.ndarray, wanted, name: str):
    """(``wanted`` column names, their values (rows, len(wanted))); ``wanted`` None keeps all."""
    if wanted is None:
        return columns, values
    if not _is_list(wanted) or not wanted or not all(isinstance(c, str) for c in wanted):
        raise ValueError(f"forecasting data {name}: columns must be a list of column names such as "
                         f"[{','.join(columns[:2])}], got {wanted!r}")
    wanted = list(wanted)
    unknown = [c for c in wanted if c not in columns]
    if unknown:
        raise ValueError(f"forecasting data {name}: columns {unknown} are not in the data; its columns are {columns}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"forecasting data {name}: columns {wanted} names a column twice")
    return wanted, values[:, [columns.index(c) for c in wanted]]


def check_split_ratios(ratios) -> tuple[float, float, float] | None:
    """``ratios`` (train, validation, test) as floats: three positive numbers summing to 1."""
    if ratios is None:
        return None
    positive = _is_list(ratios) and len(ratios) == 3 and all(
        isinstance(r, numbers.Real) and not isinstance(r, bool) and r > 0 for r in ratios)
    if not positive or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"split_ratios must be three positive numbers (train, validation, test) summing to 1, "
                         f"such as [0.7,0.1,0.2]; got {list(ratios) if _is_list(ratios) else ratios!r}")
    return tuple(float(r) for r in ratios)


def _is_list(value) -> bool:
    """A list, tuple or Hydra ListConfig; not a string."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def borders(
    name: str, n_rows: int, lag: int, ratios: tuple[float, float, float] | None = None
) -> list[tuple[int, int]]:
    """[(start, end)] row ranges of train / val / test, val and test starting ``lag`` early.

    With ``ratios`` (train, val, test): int(n_rows·train) training rows, int(n_rows·test)
    test rows, the rest validation (Informer's rule). Without: ETT sets split 12 / 4 / 4 months
    of 30 days (ETT-h: 8640 / 2880 / 2880 rows, ETT-m 4x); any other name (the other Informer
    sets, "csv", "synthetic") 70% / 10% / 20%."""
    per_hour = INFORMER_SETS[name][2] if name in INFORMER_SETS else None
    if per_hour is not None and ratios is None:
        month = 30 * 24 * per_hour
        train, val = 12 * month, 4 * month
        ends = [train, train + val, min(train + 2 * val, n_rows)]
        if ends[2] <= ends[1]:
            raise ValueError(f"forecasting data: {name} has {n_rows} rows, fewer than the {train + val} of its splits")
    else:
        train_ratio, _, test_ratio = ratios or DEFAULT_RATIOS
        train, test = int(n_rows * train_ratio), int(n_rows * test_ratio)
        ends = [train, n_rows - test, n_rows]
    starts = [0, ends[0] - lag, ends[1] - lag]
    return [(max(s, 0), e) for s, e in zip(starts, ends)]


def check_split_rows(n_rows: int, lag: int, horizon: int, split: str) -> None:
    """Raise ValueError when ``n_rows`` (lag included) hold no window of lag + horizon."""
    if n_rows < lag + horizon:
        raise ValueError(
            f"the {split} split has {n_rows} rows (lag included), too few for one window of lag {lag} "
            f"+ horizon {horizon}: lower lag / horizon or use a longer series"
        )


def select_features(columns: list[str], values: np.ndarray, features: str, target: str | None, name: str):
    """(inputs (rows, V_in), their column names, index of the target columns in the inputs).

    "M": all columns in and out; "S": the target alone; "MS": all in, the target out. As in
    Informer's loaders, the target column is moved last for "M" and "MS" (the ETT files
    already end with it), so a model that reads the variates in order sees Informer's order;
    "M" without a target keeps the file's order."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if target is None and features == "M":
        return values, list(columns), list(range(values.shape[1]))
    if target is None:
        raise ValueError(f"forecasting data {name}: features={features} needs a target column: set data.target to "
                         f"one of {columns}")
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
        check_split_rows(data.shape[0], lag, horizon, split)
        self.n = data.shape[0] - lag - horizon + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, s: int):
        x = self.data[s : s + self.lag]
        y = self.data[s + self.lag : s + self.lag + self.horizon, self.targets]
        return x, y
