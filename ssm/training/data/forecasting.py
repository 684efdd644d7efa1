"""Lightning data module for multivariate forecasting (Informer CSVs, your own CSV, generated series)."""

from __future__ import annotations

import numbers
import os

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from ssm.data import forecasting as fc
from ssm.training.data.loaders import ResumableLoader, evaluation_loader

SPLITS = ("train", "validation", "test")


class ForecastingDataModule(L.LightningDataModule):
    """Batches (x (B, lag, n_variates), y (B, horizon, n_targets)) float32 on the standardized
    scale (z-score fit on the training rows). The series is loaded and the split sizes checked
    when the module is built (before a logger or trainer starts), so ``n_variates`` (V_in),
    ``n_targets`` (V_out), ``lag`` and ``horizon`` are there for the model builder before
    ``setup``; ``d_input`` = n_variates, ``n_classes`` = ``n_tokens`` = None. ``columns``
    names the input series in order (the target last for "M" / "MS" when there is one);
    ``ranges`` holds the (start, end) rows of train / validation / test; ``mean`` and ``std``
    (V_in,) after ``setup`` undo the scaling.

    Args:
        dataset: no download: "synthetic" (:func:`ssm.data.forecasting.synthetic_multivariate`),
            "ar" (one AR(p) process, :func:`ssm.data.forecasting.ar_series`; its coefficients
            are ``ar_coefficients``) or "co2" (Mauna Loa weekly CO2, bundled with
            statsmodels); an Informer set: ETTh1, ETTh2, ETTm1, ETTm2, ECL, WTH (CSV under
            <data_root>/informer/); or "csv": your own CSV at ``path``
            (:func:`ssm.data.forecasting.read_csv` says what it reads).
        data_root: folder holding informer/.
        path: the CSV of dataset "csv"; a relative path is read from the working directory.
        lag, horizon: input and forecast lengths.
        features: "M" (all series in and out), "S" (the target alone), "MS" (all in, target out).
        target: target column: the only series for S, the output and last input for MS, the
            last series for M. Default: the set's (OT for ETT, the last series for synthetic,
            ar, co2), dropped under M when ``columns`` leaves it out; "csv" has none, so S and
            MS need it and M without it keeps the file's order.
        columns: use only these columns (by name, in this order; null: all).
        split_ratios: (train, validation, test) fractions of the rows, three positive numbers
            summing to 1 (null: the set's split, ETT 12/4/4 months, the others 0.7/0.1/0.2).
        n_steps, n_variates, seed: size and seed of the synthetic series (70/10/20 split);
            "ar" uses n_steps and seed, with ``ar_order`` p and ``ar_radius`` (the moduli of
            its characteristic roots).
        batch_size, eval_batch_size, num_workers: loaders.
    """

    n_classes = None  # not a classification set
    n_tokens = None

    def __init__(
        self,
        dataset: str = "synthetic",
        data_root: str | os.PathLike = "data",
        lag: int = 96,
        horizon: int = 24,
        features: str = "M",
        target: str | None = None,
        n_steps: int = 4000,
        n_variates: int = 7,
        seed: int = 0,
        ar_order: int = 4,
        ar_radius: tuple[float, float] = (0.8, 0.98),
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        path: str | os.PathLike | None = None,
        columns: list[str] | None = None,
        split_ratios: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        for arg, value in (("lag", lag), ("horizon", horizon), ("batch_size", batch_size), ("n_steps", n_steps),
                           ("n_variates", n_variates), ("eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"ForecastingDataModule: {arg} must be a positive integer, got {value!r}")
        if features not in fc.FEATURES:
            raise ValueError(f"ForecastingDataModule: features must be one of {fc.FEATURES}, got {features!r}")
        known = ["csv", "synthetic", "ar", *fc.BUNDLED_SETS, *fc.INFORMER_SETS]
        if dataset not in known:
            raise ValueError(f"ForecastingDataModule: unknown dataset {dataset!r}; choose one of {known}")
        if dataset == "ar" and (isinstance(ar_order, bool) or int(ar_order) != ar_order or ar_order < 1):
            raise ValueError(f"ForecastingDataModule: ar_order must be a positive integer, got {ar_order!r}")
        if path is not None and dataset != "csv":
            raise ValueError(f"ForecastingDataModule: path={str(path)!r} is read only with dataset=csv (got dataset "
                             f"{dataset!r}); set data.dataset=csv to train on that file")
        self.dataset, self.data_root = dataset, data_root
        self.path = fc.own_csv_path(path) if dataset == "csv" else None
        self.name = self.path.name if self.path is not None else dataset
        self.lag, self.horizon, self.features = int(lag), int(horizon), features
        self.split_ratios = fc.check_split_ratios(split_ratios)
        self.n_steps, self.seed = int(n_steps), int(seed)
        self.ar_order, self.ar_radius = int(ar_order), tuple(ar_radius)
        self.ar_coefficients = None
        self.batch_size, self.eval_batch_size = int(batch_size), int(batch_size if eval_batch_size is None else eval_batch_size)
        self.num_workers = num_workers
        names, values = fc.pick_columns(*self._raw(int(n_variates)), columns, self.name)
        self.target = target if target is not None else self._default_target(names)
        self.values, self.columns, self.targets = fc.select_features(names, values, features, self.target, self.name)
        self.n_variates = self.values.shape[1]
        self.n_targets = len(self.targets)
        self.d_input = self.n_variates
        self.ranges = self._split_ranges()
        self.splits = None

    def _raw(self, n_variates: int) -> tuple[list[str], np.ndarray]:
        """(column names, values (rows, columns)) of the whole series."""
        if self.dataset == "synthetic":
            values = fc.synthetic_multivariate(self.n_steps, n_variates, self.seed)
            return [f"x{v}" for v in range(n_variates)], values
        if self.dataset == "ar":
            self.ar_coefficients, values = fc.ar_series(self.ar_order, self.n_steps, self.seed, self.ar_radius)
            return ["ar"], values
        if self.dataset in fc.BUNDLED_SETS:
            return fc.bundled_series(self.dataset)
        if self.dataset == "csv":
            return fc.read_csv(self.path, missing_hint="Set data.path to your CSV file (a relative path is read "
                                                       "from the folder train.py runs in).")
        return fc.read_csv(fc.informer_path(self.data_root, self.dataset))

    def _default_target(self, names: list[str]) -> str | None:
        """The set's target when none is given: the Informer one, none for "csv", else the
        last series. Under "M" it only orders the series, so it is dropped when ``columns``
        left it out."""
        if self.dataset == "csv":
            return None
        default = fc.INFORMER_SETS[self.dataset][1] if self.dataset in fc.INFORMER_SETS else names[-1]
        return None if self.features == "M" and default not in names else default

    def _split_ranges(self) -> list[tuple[int, int]]:
        """Row ranges of the splits, each checked to hold at least one window."""
        ranges = fc.borders(self.dataset, self.values.shape[0], self.lag, self.split_ratios)
        for (a, b), split in zip(ranges, SPLITS):
            fc.check_split_rows(b - a, self.lag, self.horizon, f"{self.name} {split}")
        return ranges

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        train = self.values[self.ranges[0][0] : self.ranges[0][1]]
        self.mean, self.std = train.mean(0), train.std(0)
        self.std = np.where(self.std > 0, self.std, 1.0)
        scaled = (self.values - self.mean) / self.std
        self.splits = [
            fc.ForecastWindows(scaled[a:b], self.lag, self.horizon, self.targets, split=f"{self.name} {split}")
            for (a, b), split in zip(self.ranges, SPLITS)
        ]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return ResumableLoader(self.splits[0], self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return evaluation_loader(self.splits[1], self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return evaluation_loader(self.splits[2], self.eval_batch_size, num_workers=self.num_workers)
