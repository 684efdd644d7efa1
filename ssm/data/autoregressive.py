"""Synthetic AR(p) processes for SpaceTime's expressivity claim:

    u_t = Σ_{j=1}^p φ_j u_{t-j} + ε_t,   ε_t ~ N(0, σ²)

with φ drawn so that the characteristic roots (the zeros of z^p - Σ φ_j z^{p-j}) lie inside
the unit circle: the process is stationary. The best one-step forecast is the finite filter
û_{t+1} = Σ_j φ_j u_{t+1-j}, with error variance σ².

The multi-step forecast from the last p values follows the same recursion without noise,
and its error variance at step i is σ² Σ_{j<=i} ψ_j², with ψ the impulse response of the
process (:func:`optimal_forecast_mse`).
"""

from __future__ import annotations

import numpy as np


def stable_ar_coefficients(
    p: int, rng: np.random.Generator, radius: tuple[float, float] = (0.5, 0.95)
) -> np.ndarray:
    """φ (p,) whose characteristic roots have moduli in ``radius``: floor(p/2) complex pairs
    r e^{±iθ} with θ ~ U(0.1π, 0.9π), and one real root ±r when p is odd."""
    if isinstance(p, bool) or int(p) != p or p < 1:
        raise ValueError(f"AR order p must be a positive integer, got {p!r}")
    low, high = radius
    if not 0 < low <= high < 1:
        raise ValueError(f"root moduli must satisfy 0 < low <= high < 1, got {radius}")
    roots = []
    for _ in range(p // 2):
        r, theta = rng.uniform(low, high), rng.uniform(0.1 * np.pi, 0.9 * np.pi)
        roots += [r * np.exp(1j * theta), r * np.exp(-1j * theta)]
    if p % 2:
        roots.append(rng.choice([-1.0, 1.0]) * rng.uniform(low, high))
    # z^p - φ_1 z^{p-1} - ... - φ_p = Π (z - root)
    return -np.real(np.poly(roots))[1:]


def _recursion(phi: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """u_t = Σ_j φ_j u_{t-j} + eps_t from u_{<0} = 0 (float64)."""
    phi = np.asarray(phi, dtype=np.float64)
    p = len(phi)
    u = np.zeros(len(eps) + p)
    reversed_phi = phi[::-1]
    for t, e in enumerate(eps):
        u[t + p] = reversed_phi @ u[t : t + p] + e
    return u[p:]


def simulate_ar(phi: np.ndarray, n: int, rng: np.random.Generator, sigma: float = 1.0, burn_in: int = 200) -> np.ndarray:
    """n steps (float64) of the AR process with coefficients phi after ``burn_in`` steps from 0."""
    return _recursion(phi, rng.normal(0.0, sigma, n + burn_in))[burn_in:]


def impulse_response(phi: np.ndarray, n: int) -> np.ndarray:
    """ψ_0 .. ψ_{n-1}: ψ_0 = 1, ψ_k = Σ_j φ_j ψ_{k-j} (the process driven by one unit shock)."""
    impulse = np.zeros(n)
    impulse[0] = 1.0
    return _recursion(phi, impulse)


def stationary_variance(phi: np.ndarray, sigma: float = 1.0, n_terms: int = 20_000) -> float:
    """Var(u_t) = σ² Σ_k ψ_k² (the series truncated at n_terms, ample for roots inside the circle)."""
    return float(sigma**2 * np.sum(impulse_response(phi, n_terms) ** 2))


def optimal_forecast_mse(phi: np.ndarray, horizon: int, sigma: float = 1.0) -> np.ndarray:
    """(horizon,) error variance of the best forecast of u_{n+i} from u_{<n}: σ² Σ_{j<=i} ψ_j²."""
    return sigma**2 * np.cumsum(impulse_response(phi, horizon) ** 2)


def ar_forecast(phi: np.ndarray, window: np.ndarray, horizon: int) -> np.ndarray:
    """The best forecast (the recursion without noise) of ``horizon`` steps after each window
    (batch, n) with n >= p: (batch, horizon)."""
    phi = np.asarray(phi, dtype=np.float64)
    p = len(phi)
    if window.shape[-1] < p:
        raise ValueError(f"ar_forecast: windows of length {window.shape[-1]} are shorter than the order {p}")
    history = np.array(window[..., -p:], dtype=np.float64)
    out = []
    for _ in range(horizon):
        nxt = history[..., ::-1] @ phi
        out.append(nxt)
        history = np.concatenate([history[..., 1:], nxt[..., None]], axis=-1)
    return np.stack(out, -1)
