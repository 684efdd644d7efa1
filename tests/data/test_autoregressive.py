"""AR(p) processes: stable roots, the simulated recursion, and the optimal forecast error
against a Monte-Carlo estimate; the "ar" and "co2" forecasting data sets."""

import importlib.util

import numpy as np
import pytest

from ssm.data import forecasting as fc
from ssm.data.autoregressive import (
    ar_forecast,
    impulse_response,
    optimal_forecast_mse,
    simulate_ar,
    stable_ar_coefficients,
    stationary_variance,
)
from ssm.training.data import ForecastingDataModule


@pytest.mark.parametrize("p", [1, 2, 3, 6])
def test_characteristic_roots_lie_in_the_requested_annulus(p):
    phi = stable_ar_coefficients(p, np.random.default_rng(p), (0.6, 0.9))
    roots = np.roots(np.concatenate([[1.0], -phi]))
    assert phi.shape == (p,) and np.all((np.abs(roots) >= 0.6 - 1e-9) & (np.abs(roots) <= 0.9 + 1e-9))


def test_simulation_follows_the_recursion():
    phi = np.array([0.5, -0.3])
    u = simulate_ar(phi, 50, np.random.default_rng(1), sigma=2.0, burn_in=0)
    eps = np.random.default_rng(1).normal(0.0, 2.0, 50)
    expected = np.zeros(52)
    for t in range(50):
        expected[t + 2] = 0.5 * expected[t + 1] - 0.3 * expected[t] + eps[t]
    np.testing.assert_allclose(u, expected[2:], rtol=1e-12)


def test_impulse_response_and_stationary_variance():
    np.testing.assert_allclose(impulse_response(np.array([0.5]), 5), 0.5 ** np.arange(5))
    assert stationary_variance(np.array([0.5]), sigma=2.0) == pytest.approx(4.0 / (1 - 0.25))


def test_optimal_forecast_mse_scales_with_the_noise_variance():
    """AR(1) with φ = 0.5 and σ = 2: the step-i error variance is σ² Σ_{j<i} φ^{2j} = 4 · (1, 1.25, 1.3125)."""
    np.testing.assert_allclose(optimal_forecast_mse(np.array([0.5]), 3, sigma=2.0), [4.0, 5.0, 5.25])


def test_ar_forecast_runs_the_recursion_from_the_latest_values():
    """u_t = 0.5 u_{t-1} - 0.25 u_{t-2}, from a window ending ..., 4, 2: the next values are
    0.5·2 - 0.25·4 = 0, then 0.5·0 - 0.25·2 = -0.5, then 0.5·(-0.5) - 0.25·0 = -0.25."""
    window = np.array([[9.0, 4.0, 2.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(ar_forecast(np.array([0.5, -0.25]), window, 3),
                               [[0.0, -0.5, -0.25], [0.5, 0.0, -0.125]])


def test_optimal_forecast_mse_matches_monte_carlo():
    """Forecast each step by running the recursion without noise from the last p values; the
    error variance at step i is σ² Σ_{j<=i} ψ_j²."""
    phi = np.array([1.2, -0.6])
    rng = np.random.default_rng(2)
    errors = []
    for _ in range(3000):
        u = simulate_ar(phi, 40, rng, burn_in=50)
        history = list(u[:34])
        for _ in range(6):
            history.append(phi[0] * history[-1] + phi[1] * history[-2])
        errors.append(np.array(history[34:]) - u[34:])
    mc = np.mean(np.square(errors), axis=0)
    np.testing.assert_allclose(mc, optimal_forecast_mse(phi, 6), rtol=0.08)


def test_ar_data_module_exposes_its_coefficients():
    dm = ForecastingDataModule("ar", ar_order=3, n_steps=2000, lag=16, horizon=4, features="S")
    dm.setup()
    assert dm.ar_coefficients.shape == (3,) and (dm.n_variates, dm.n_targets) == (1, 1)
    again = ForecastingDataModule("ar", ar_order=3, n_steps=2000, lag=16, horizon=4)
    np.testing.assert_array_equal(dm.values, again.values)
    x, y = dm.splits[0][0]
    assert x.shape == (16, 1) and y.shape == (4, 1)
    with pytest.raises(ValueError, match="ar_order"):
        ForecastingDataModule("ar", ar_order=0)


@pytest.mark.skipif(importlib.util.find_spec("statsmodels") is None, reason="needs statsmodels")
def test_co2_series_is_complete_and_splits_70_10_20():
    columns, values = fc.bundled_series("co2")
    assert columns == ["co2"] and values.shape == (2284, 1) and np.isfinite(values).all()
    assert 310 < values[0, 0] < 320 and 360 < values[-1, 0] < 380  # ppm, 1958 and 2001
    dm = ForecastingDataModule("co2", lag=104, horizon=52, features="S")
    dm.setup()
    assert [len(s) for s in dm.splits] == [int(2284 * 0.7) - 156 + 1, 2284 - int(2284 * 0.2) - int(2284 * 0.7) - 52 + 1,
                                           int(2284 * 0.2) - 52 + 1]
    with pytest.raises(ValueError, match="unknown bundled"):
        fc.bundled_series("sunspots")
