"""Forecasting on your own CSV (dataset="csv"): windows equal the file's rows after the
train-only z-score, 70/10/20 or given splits with val/test starting lag rows early, column
selection, features M without a target; exact errors for bad CSVs and bad options."""

import numpy as np
import pytest

from ssm.data import forecasting as fc
from ssm.training.data import ForecastingDataModule


def _write(path, n_rows, columns=("load", "OT", "temp"), first="timestamp"):
    """A CSV with a first column of ISO timestamps named ``first``; returns the values (n_rows, columns)."""
    values = np.random.default_rng(1).normal(size=(n_rows, len(columns))) * 3 + np.arange(len(columns))
    with open(path, "w") as f:
        f.write(",".join([first, *columns]) + "\n")
        f.writelines(f"2021-03-{1 + k // 24:02d} {k % 24:02d}:00:00," + ",".join(f"{v:.6f}" for v in row) + "\n"
                     for k, row in enumerate(values))
    return values


def _scaled(values, train_rows):
    train = values[:train_rows]
    return (values - train.mean(0)) / train.std(0)


def test_own_csv_windows_are_the_scaled_rows_with_the_target_last(tmp_path):
    values = _write(tmp_path / "series.csv", 200)
    dm = ForecastingDataModule("csv", path=tmp_path / "series.csv", lag=8, horizon=4, target="OT", batch_size=4)
    assert dm.columns == ["load", "temp", "OT"] and dm.name == "series.csv"
    assert dm.ranges == [(0, 140), (140 - 8, 160), (160 - 8, 200)]  # 70/10/20, val and test lag rows early
    dm.setup()
    scaled = _scaled(values[:, [0, 2, 1]], 140)
    for split, (start, _) in enumerate(dm.ranges):
        x, y = dm.splits[split][5]
        np.testing.assert_allclose(x.numpy(), scaled[start + 5 : start + 13], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y.numpy(), scaled[start + 13 : start + 17], rtol=1e-5, atol=1e-5)
    assert [len(split) for split in dm.splits] == [140 - 12 + 1, 20 - 4 + 1, 40 - 4 + 1]
    assert (dm.n_variates, dm.n_targets) == (3, 3)


def test_split_ratios_columns_and_features_on_own_csv(tmp_path):
    values = _write(tmp_path / "series.csv", 200)
    dm = ForecastingDataModule("csv", path=tmp_path / "series.csv", lag=8, horizon=4, split_ratios=[0.5, 0.25, 0.25])
    assert dm.ranges == [(0, 100), (92, 150), (142, 200)]
    assert fc.borders("ETTh1", 1000, 5, (0.5, 0.3, 0.2)) == [(0, 500), (495, 800), (795, 1000)]  # any set
    assert dm.target is None and dm.columns == ["load", "OT", "temp"]  # M without a target: the file's order
    ms = ForecastingDataModule("csv", path=tmp_path / "series.csv", lag=8, horizon=4, features="MS", target="load",
                               columns=["temp", "load"])
    assert ms.columns == ["temp", "load"] and ms.targets == [1]
    ms.setup()
    x, y = ms.splits[0][0]
    scaled = _scaled(values[:, [2, 0]], 140)
    np.testing.assert_allclose(x.numpy(), scaled[:8], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), scaled[8:12, 1:], rtol=1e-5, atol=1e-5)
    s = ForecastingDataModule("csv", path=tmp_path / "series.csv", lag=8, horizon=4, features="S", target="temp")
    assert s.columns == ["temp"] and s.n_variates == 1


def test_relative_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    _write(tmp_path / "series.csv", 100)
    monkeypatch.chdir(tmp_path)
    dm = ForecastingDataModule("csv", path="series.csv", lag=4, horizon=2)
    assert dm.path == tmp_path / "series.csv"


def test_named_set_under_m_needs_no_default_target(tmp_path):
    (tmp_path / "informer").mkdir()
    _write(tmp_path / "informer" / "ETTh1.csv", 11520 + 100, ("HUFL", "MULL", "OT"), first="date")
    dm = ForecastingDataModule("ETTh1", tmp_path, lag=8, horizon=4, columns=["MULL", "HUFL"])
    assert dm.target is None and dm.columns == ["MULL", "HUFL"]
    with pytest.raises(ValueError, match=r"target column 'OT' not among \['MULL', 'HUFL'\]"):
        ForecastingDataModule("ETTh1", tmp_path, lag=8, horizon=4, features="S", columns=["MULL", "HUFL"])


@pytest.mark.parametrize("kwargs, match", [
    ({"features": "S"}, r"features=S needs a target column: set data.target to one of \['load', 'OT', 'temp'\]"),
    ({"columns": ["OT", "rain"]}, r"columns \['rain'\] are not in the data; its columns are \['load', 'OT', 'temp'\]"),
    ({"columns": "OT"}, "columns must be a list of column names"),
    ({"columns": ["OT", "OT"]}, "names a column twice"),
    ({"split_ratios": [0.8, 0.2]}, "split_ratios must be three positive numbers"),
    ({"split_ratios": [0.7, 0.2, 0.2]}, r"summing to 1, such as \[0.7,0.1,0.2\]; got \[0.7, 0.2, 0.2\]"),
    ({"split_ratios": [1.0, 0, 0]}, "three positive numbers"),
    ({"split_ratios": 0.7}, r"three positive numbers .*; got 0.7"),
    ({"columns": 3}, "columns must be a list of column names such as \\[load,OT\\], got 3"),
    ({"lag": 30, "horizon": 10}, r"series.csv validation split has 38 rows \(lag included\), too few"),
    ({"path": None}, "dataset=csv reads the CSV at data.path; set data.path="),
])
def test_bad_options_for_own_csv(tmp_path, kwargs, match):
    _write(tmp_path / "series.csv", 80)
    with pytest.raises(ValueError, match=match):
        ForecastingDataModule("csv", **{"path": tmp_path / "series.csv", **kwargs})


def test_path_needs_dataset_csv_and_an_existing_file(tmp_path):
    with pytest.raises(ValueError, match=r"path='x.csv' is read only with dataset=csv \(got dataset 'ETTh1'\)"):
        ForecastingDataModule("ETTh1", tmp_path, path="x.csv")
    with pytest.raises(FileNotFoundError, match=rf"expected the CSV {tmp_path / 'nope.csv'}, .*Set data.path"):
        ForecastingDataModule("csv", path=tmp_path / "nope.csv")


def _error(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        fc.read_csv(path)
    return str(info.value).replace(str(path), "bad.csv")


def test_an_empty_field_is_a_missing_value_like_nan(tmp_path):
    empty = _error(tmp_path, "date,a,b\n2020-01-01,1,2\n2020-01-02,3,\n2020-01-03,5,6\n")
    nan = _error(tmp_path, "date,a,b\n2020-01-01,1,2\n2020-01-02,3,NaN\n2020-01-03,5,6\n")
    assert empty == nan == ("forecasting data: bad.csv holds 1 missing or non-finite values (empty fields, NaN or "
                            "inf), the first in data row 2 (line 3), column 'b': fill or drop them first")
    # one column: pandas writes a missing value as an empty line; blank lines at the end are ignored
    one_column = _error(tmp_path, "a\n1\n\n2\n \n3\n\n\n")
    assert "2 missing or non-finite values (empty fields, NaN or inf), the first in data row 2 (line 3), " in one_column


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    """Excel's "CSV UTF-8" starts the file with U+FEFF: 'date' must still be the date column."""
    path = tmp_path / "excel.csv"
    path.write_bytes("date,load,OT\n07/01/2016,1.5,2\n07/02/2016,2.5,3\n".encode("utf-8-sig"))
    columns, values = fc.read_csv(path)
    assert columns == ["load", "OT"] and values.tolist() == [[1.5, 2.0], [2.5, 3.0]]
    path.write_bytes("load,OT\n1.5,2\n".encode("utf-8-sig"))
    assert fc.read_csv(path)[0] == ["load", "OT"]


def test_timestamps_in_a_first_column_not_named_date(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("timestamp,a\n2020-01-01 00:00:00,1.5\n2020-01-01 01:00:00,2.5\n")
    columns, values = fc.read_csv(path)
    assert columns == ["a"] and values.tolist() == [[1.5], [2.5]]
    path.write_text("step,a\n0,1.5\n1,2.5\n")  # a numeric first column is a series
    assert fc.read_csv(path)[0] == ["step", "a"]
    assert _error(tmp_path, "timestamp,a\n01/02/2020,1\n") == (
        "forecasting data: bad.csv holds the non-numeric value '01/02/2020' in data row 1 (line 2), column "
        "'timestamp'; a first column is skipped as timestamps only when it is named 'date' or its first value is an "
        "ISO date such as 2016-07-01 00:00:00")


@pytest.mark.parametrize("text, message", [
    ("date,a,b\n2020-01-01,1,2\n2020-01-02,n/a,2\n",
     "bad.csv holds the non-numeric value 'n/a' in data row 2 (line 3), column 'a'"),
    ("a,b\n1,2\n3\n", "bad.csv: data row 2 (line 3) has 1 field(s), the header 2 columns"),
    ("a,b\n1,2\n3,4,5\n", "bad.csv: data row 2 (line 3) has 3 field(s), the header 2 columns"),
    (",a\n0,1\n", "bad.csv: header column(s) number [1] have no name (an index written by pandas' to_csv?"),
    ("a,b,a\n1,2,3\n", "bad.csv: the header repeats the column name(s) ['a']"),
    ("date,a\n", "bad.csv has no data rows"),
    ("date\n2020-01-01\n", "bad.csv has no value columns"),
])
def test_bad_csv_names_row_line_and_column(tmp_path, text, message):
    assert message in _error(tmp_path, text)


def test_a_split_of_exactly_lag_plus_horizon_rows_holds_one_window():
    """lag + horizon rows are enough for one window; one row fewer is too few."""
    fc.check_split_rows(10, 6, 4, "train")
    windows = fc.ForecastWindows(np.arange(10.0)[:, None], 6, 4, [0])
    assert len(windows) == 1
    x, y = windows[0]
    assert x[:, 0].tolist() == [0, 1, 2, 3, 4, 5] and y[:, 0].tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match=r"the train split has 9 rows \(lag included\), too few"):
        fc.check_split_rows(9, 6, 4, "train")


@pytest.mark.parametrize("name", ["Date", "DATE", "date"])
def test_a_first_column_named_date_in_any_case_is_the_timestamps(tmp_path, name):
    """'Date' (as pandas often writes it) holding US-style dates is skipped like 'date'."""
    path = tmp_path / "dates.csv"
    path.write_text(f"{name},a\n07/01/2016,1.5\n07/02/2016,2.5\n")
    columns, values = fc.read_csv(path)
    assert columns == ["a"] and values.tolist() == [[1.5], [2.5]]


def test_a_numeric_first_column_that_also_parses_as_an_iso_date_is_a_series(tmp_path):
    """20200101 is a number (and, to Python 3.11's fromisoformat, a date): it stays a column."""
    path = tmp_path / "steps.csv"
    path.write_text("step,a\n20200101,1\n20200102,2\n")
    columns, values = fc.read_csv(path)
    assert columns == ["step", "a"] and values.tolist() == [[20200101.0, 1.0], [20200102.0, 2.0]]


def test_an_empty_column_list_is_refused():
    """columns=[] would keep no variate; it is refused like any other non-list of names."""
    values = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"columns must be a list of column names such as \[a,b\], got \[\]"):
        fc.pick_columns(["a", "b"], values, [], "x.csv")


@pytest.mark.parametrize("path", ["", "  "])
def test_a_blank_csv_path_asks_for_data_path(path):
    """An empty or blank data.path is no file name: the error says to set data.path."""
    with pytest.raises(ValueError, match="dataset=csv reads the CSV at data.path; set data.path="):
        fc.own_csv_path(path)
