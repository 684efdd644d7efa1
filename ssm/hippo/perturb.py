"""Perturb-then-diagonalize (PTD): a well-conditioned approximate diagonalization.

The eigenvector matrix of HiPPO-LegS is exponentially ill-conditioned (κ₂ > 1e22 at
N = 32), so LegS cannot be diagonalized in floating point. ``ptd`` diagonalizes ``A + E``
instead, for a small ``E`` chosen so that the eigenvectors are well conditioned;
``ptd_legs`` caches the result for LegS per size (on disk and in memory).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import math
import operator
import os
import tempfile
import time
import warnings

import torch

from ssm.hippo.matrices import _C128, _F64, _check, transition

__all__ = ["ptd", "ptd_stats", "ptd_legs"]


# Bump whenever ``ptd`` can return something different for the same arguments: it keys the
# on-disk cache of ``ptd_legs``.
PTD_VERSION = 1

# Stability penalty schedule, one (fraction of the step budget, p) per phase: Re λ is
# measured in units of ||A||_2 / N^p (see ``ptd``).
_PTD_PHASES = ((0.7, 1), (0.3, 2))
_PTD_STAB_WEIGHT = 10.0
_PTD_HISTORY = 20


@contextlib.contextmanager
def _single_thread():
    """Run on one thread: the result does not depend on the caller's thread count, and the
    eigensolver is barely slower (N = 256: 0.10 s against 0.09 s on two threads) while
    immune to oversubscribed cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_square(A: torch.Tensor, fn: str) -> torch.Tensor:
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        shape = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"{fn}: expected a square matrix A of shape (N, N), got {shape}")
    if not torch.isfinite(A).all():
        raise ValueError(f"{fn}: A has non-finite entries")
    return A.detach().cpu().to(_C128 if A.is_complex() else _F64)


def _unit_columns(V: torch.Tensor) -> torch.Tensor:
    """Unit 2-norm columns; the first entry of magnitude >= half the column max made real > 0."""
    V = V / torch.linalg.vector_norm(V, dim=0)
    mag = V.abs()
    pivot = (mag >= 0.5 * mag.amax(dim=0, keepdim=True)).to(torch.int64).argmax(dim=0)
    entry = V[pivot, torch.arange(V.shape[1])]
    return V * (entry.conj() / entry.abs())


def _eig_sorted(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of ``M`` in the layout documented in :func:`ptd`.

    For real ``M`` the real eigensolver returns conjugate pairs exactly; they are laid out
    as ``[Im > 0 sorted by Im, real sorted by decreasing Re, conjugates of the first block]``.
    For complex ``M`` all eigenvalues are sorted by Im (ties by decreasing Re).
    """
    lam, V = torch.linalg.eig(M)
    if M.is_complex():
        order = torch.argsort(-lam.real, stable=True)
        order = order[torch.argsort(lam.imag[order], stable=True)]
        return lam[order], _unit_columns(V[:, order])
    upper = torch.nonzero(lam.imag > 0).flatten()
    upper = upper[torch.argsort(lam.imag[upper], stable=True)]
    real = torch.nonzero(lam.imag == 0).flatten()
    real = real[torch.argsort(-lam.real[real], stable=True)]
    V_up, V_real = _unit_columns(V[:, upper]), _unit_columns(V[:, real].real.to(_C128))
    lam = torch.cat([lam[upper], lam[real].real.to(_C128), lam[upper].conj()])
    return lam, torch.cat([V_up, V_real, V_up.conj()], dim=1)


def _ptd_loss(A: torch.Tensor, Z: torch.Tensor, rho: float, margin: float | None, scale: float) -> torch.Tensor:
    """log mean κ(λ_i)² of A + E plus the stability term (described in ``ptd``)."""
    lam, V = torch.linalg.eig(A + rho * Z / torch.linalg.matrix_norm(Z, 2))
    V = V / torch.linalg.vector_norm(V, dim=0)
    # With unit columns, |row i of V^-1| is the condition number of λ_i.
    loss = torch.log(torch.linalg.inv(V).abs().square().sum() / A.shape[0])
    if margin is not None:
        loss = loss + _PTD_STAB_WEIGHT * torch.relu(lam.real + margin).div(scale).square().mean()
    return loss


def _lbfgs(Z: torch.Tensor, loss_fn, budget: int) -> torch.Tensor:
    """Minimize ``loss_fn()`` over the leaf ``Z`` with ``budget`` evaluations; the best Z seen."""
    optimizer = torch.optim.LBFGS(
        [Z], lr=1.0, max_iter=budget, max_eval=budget, history_size=_PTD_HISTORY,
        tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe",
    )
    best = [math.inf, Z.detach().clone()]

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        if torch.isfinite(loss) and loss.item() < best[0]:
            best[0], best[1] = loss.item(), Z.detach().clone()
        loss.backward()
        return loss

    optimizer.step(closure)
    return best[1]


def _ptd_perturbation(
    A: torch.Tensor, rho: float, steps: int, margin: float | None, complex_perturbation: bool, seed: int
) -> torch.Tensor:
    """The optimized E with ||E||_2 = rho (the loss and schedule are described in ``ptd``)."""
    N = A.shape[0]
    dtype = _C128 if complex_perturbation else _F64
    Z = torch.randn(N, N, dtype=dtype, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    A = A.to(dtype)
    norm_A = torch.linalg.matrix_norm(A, 2).item()
    best = Z.detach()
    for fraction, power in _PTD_PHASES:
        loss_fn = functools.partial(_ptd_loss, A, Z, rho, margin, norm_A / N**power)
        best = _lbfgs(Z, loss_fn, max(1, round(fraction * steps)))
    return rho * best / torch.linalg.matrix_norm(best, 2)


def ptd(
    A: torch.Tensor,
    rel_size: float = 0.05,
    *,
    seed: int = 0,
    steps: int | None = None,
    margin: float | None = 0.5,
    complex_perturbation: bool = False,
    force_stable: bool = False,
    return_info: bool = False,
):
    """Perturb-then-diagonalize: a well-conditioned eigenbasis of ``A + E`` for a small ``E``.

    Finds ``E`` with ``||E||_2 = rel_size · ||A||_2`` such that

        A + E = V diag(Lambda) V⁻¹,     V with unit-norm columns and small κ₂(V),

    then, only if ``force_stable`` (off by default: the identity above with a small ``E`` is
    the contract for any ``A``), reflects unstable eigenvalues (``Re λ ← -|Re λ|``) and
    redefines ``E = V diag(Lambda) V⁻¹ - A`` so that the identity still holds; that repair
    is the layers' initialization step (the paper's ``Re Λ ← -|Re Λ|``), which
    :func:`ptd_legs` applies, and for an unstable ``A`` it can make ``E`` as large as ``A``.

    Algorithm. ``E = rho Z / ||Z||_2`` with ``rho = rel_size ||A||_2``, so the size is met
    exactly and only the direction ``Z`` is optimized (no penalty weight to calibrate or
    bisect); ``Z`` starts as a seeded standard Gaussian, which alone brings κ₂ of LegS down
    to 20-300 for N = 8 .. 256 (a random perturbation of size ε regularizes the
    pseudospectrum). The loss

        log( (1/N) ||V⁻¹||_F² ) + w · mean_i relu(Re λ_i + margin)² / s²

    is minimized by L-BFGS (strong Wolfe line search) with gradients through the
    eigendecomposition. With unit columns ``||V⁻¹||_F² = sum_i κ(λ_i)²`` (eigenvalue
    condition numbers), a smooth proxy of κ₂(V) that, unlike κ₂ itself, never depends on
    a single singular value. The second term keeps the eigenvalues left of ``-margin``
    (w = 10): the first 70% of the budget uses the loose scale ``s = ||A||_2 / N``
    (conditioning first; without the term about half of the eigenvalues of LegS + E end
    up in the right half-plane, with Re λ up to about ||E||_2 / 2), the rest ``s = ||A||_2 / N²`` (≈ 0.64
    for LegS), after which the eigenvalues sit at ``Re λ <= -margin`` and the repair is
    rarely needed. The paper's loss ``κ₂(V)² + λ||E||_F`` with Adam stalls at κ₂ ≈ 37 for
    LegS N = 64; this one reaches κ₂ ≈ 6 with the same ||E||_2 in about a second.

    ``E`` is real by default (``complex_perturbation=False``): for a real ``A`` the spectrum
    then stays closed under conjugation (a real perturbed system), the real eigensolver is
    about 2.5x faster, and the conditioning reached is the same as with a complex ``E``.

    Measured for HiPPO-LegS with the defaults (seed 0, one thread of a shared 2-core CPU;
    no eigenvalue needed the repair; the float64 eigenvectors of LegS itself have
    κ₂ ≈ 8e4 at N = 8 and, exactly, > 1e22 at N = 32)::

        N      κ₂(V)   ||E||_2/||A||_2   max Re λ   time
        8      5.40    0.050             -0.63      0.3 s
        16     5.53    0.050             -0.65      0.3 s
        32     5.67    0.050             -0.59      0.5 s
        64     5.63    0.050             -0.50      1.0 s
        128    5.97    0.050             -0.50      4-10 s
        256    6.35    0.050             -0.49      30 s

    κ₂ scales like about 0.28 / rel_size, independently of N: 21-22 at 0.01, 8.6 at 0.03,
    3.1-3.3 at 0.1 (N = 8 .. 64); the paper's released N = 64 matrix has κ₂ = 9.2 at 0.034.

    ``A + E`` is a different system. The low-frequency response of LegS is very sensitive
    to perturbations (a random E of relative size 1e-3 already moves G(0) of the output
    x_0 by about 35%), and with the default size the PTD system's G(iω) differs from
    LegS's by about |G| at ω < N; its advantage is at ω = Θ(N²), where S4D-LegS has Θ(1)
    spikes and PTD follows LegS closely (``python -m bench.ptd_theory``).

    Args:
        A: real or complex ``(N, N)`` matrix.
        rel_size: ``||E||_2 / ||A||_2`` before the stability repair (which changes it by at
            most ``2 κ₂(V) max(Re λ, 0) / ||A||_2``). 0 gives the plain eigendecomposition.
        seed: seed of the initial ``Z``. The result is reproducible for a given seed, torch
            build and CPU (the optimization runs on one thread); on other hardware rounding
            differences can lead to a different, equally good, ``E``.
        steps: budget of loss evaluations (one eigendecomposition each); default
            ``max(200, N)``.
        margin: the stability term pushes eigenvalues to ``Re λ <= -margin`` (in the units
            of ``A``; 0.5 is half the decay rate of LegS's slowest mode); None drops the
            term, leaving stability to the repair.
        complex_perturbation: optimize a complex ``E`` (always so for a complex ``A``).
        force_stable: reflect eigenvalues with ``Re λ > 0`` to ``-Re λ`` (default False;
            :func:`ptd_legs` sets it).
        return_info: also return a dict with ``kappa``, ``rel_perturbation`` (after the
            repair), ``n_repaired``, ``max_real`` and ``seconds``.

    Returns:
        ``(Lambda, V, Vinv)`` (and ``info`` if asked), complex128 on ``A``'s device:
        ``Lambda (N,)``, ``V (N, N)`` with unit-norm columns, ``Vinv = V⁻¹``. For a real
        ``E`` the first ``p`` eigenvalues have ``Im > 0`` (increasing), the next ``N - 2p``
        are real (decreasing) and the last ``p`` are the conjugates of the first ``p``, with
        conjugate eigenvectors; a complex ``E`` gives eigenvalues sorted by ``Im``.

    Raises:
        ValueError: if ``A`` is not a finite square matrix, ``rel_size < 0`` or ``steps < 1``.
    """
    A_in = A
    A = _check_square(A, "ptd")
    if not rel_size >= 0:
        raise ValueError(f"ptd: rel_size must be >= 0, got {rel_size}")
    steps = max(200, A.shape[0]) if steps is None else operator.index(steps)
    if steps < 1:
        raise ValueError(f"ptd: steps must be >= 1, got {steps}")
    start = time.perf_counter()
    complex_perturbation = complex_perturbation or A.is_complex()
    with _single_thread():
        rho = rel_size * torch.linalg.matrix_norm(A, 2).item()
        if rho > 0:
            E = _ptd_perturbation(A, rho, steps, margin, complex_perturbation, seed)
        else:
            E = torch.zeros_like(A)
        M = A + E
        Lam, V = _eig_sorted(M.to(_C128) if complex_perturbation else M)
        unstable = Lam.real > 0
        if force_stable:
            Lam = torch.complex(-Lam.real.abs(), Lam.imag)
        Vinv = torch.linalg.inv(V)
        residual = torch.linalg.matrix_norm(V @ Vinv - torch.eye(V.shape[0], dtype=V.dtype), 2).item()
    if not residual < 1e-6:
        warnings.warn(
            f"ptd: the eigenvectors of A + E are numerically dependent (||V V⁻¹ - I||_2 = {residual:.2g}), so "
            "V diag(Λ) V⁻¹ does not reproduce A + E; A is (close to) non-diagonalizable at this size: use a "
            f"larger rel_size (got {rel_size})", stacklevel=2,
        )
    if return_info:
        info = ptd_stats(A, Lam, V, Vinv)
        info["n_repaired"] = int(unstable.sum()) if force_stable else 0
        info["seconds"] = time.perf_counter() - start
        return Lam.to(A_in.device), V.to(A_in.device), Vinv.to(A_in.device), info
    return Lam.to(A_in.device), V.to(A_in.device), Vinv.to(A_in.device)


def ptd_stats(A: torch.Tensor, Lambda: torch.Tensor, V: torch.Tensor, Vinv: torch.Tensor) -> dict:
    """Quality of an approximate diagonalization ``A + E = V diag(Lambda) Vinv``.

    Args:
        A: ``(N, N)``; Lambda ``(N,)``; V, Vinv ``(N, N)`` (as returned by :func:`ptd`).

    Returns:
        dict of floats: ``kappa`` (κ₂(V) = σ_max / σ_min), ``rel_perturbation``
        (``||E||_2 / ||A||_2`` with ``E = V diag(Lambda) Vinv - A``), ``residual``
        (``||V Vinv - I||_2``), ``max_real`` and ``min_abs_real`` (of Lambda),
        ``max_imag`` (max |Im Lambda|).
    """
    A = _check_square(A, "ptd_stats").to(_C128)
    N = A.shape[0]
    for name, t, shape in (("Lambda", Lambda, (N,)), ("V", V, (N, N)), ("Vinv", Vinv, (N, N))):
        if not torch.is_tensor(t) or tuple(t.shape) != shape:
            raise ValueError(f"ptd_stats: expected {name} of shape {shape} for A of size {N}, "
                             f"got {tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
    Lambda, V, Vinv = (t.detach().cpu().to(_C128) for t in (Lambda, V, Vinv))
    s = torch.linalg.svdvals(V)
    E = (V * Lambda) @ Vinv - A
    eye = torch.eye(N, dtype=_C128)
    norm_A, norm_E = torch.linalg.matrix_norm(A, 2).item(), torch.linalg.matrix_norm(E, 2).item()
    return {
        "kappa": (s[0] / s[-1]).item(),
        # E relative to A; for A = 0, 0 when E = 0 and inf otherwise
        "rel_perturbation": norm_E / norm_A if norm_A > 0 else (0.0 if norm_E == 0 else math.inf),
        "residual": torch.linalg.matrix_norm(V @ Vinv - eye, 2).item(),
        "max_real": Lambda.real.max().item(),
        "min_abs_real": Lambda.real.abs().min().item(),
        "max_imag": Lambda.imag.abs().max().item(),
    }


# The keyword arguments of ``ptd`` that ``ptd_legs`` forwards, with their defaults.
_PTD_SETTINGS = {
    **{name: p.default for name, p in inspect.signature(ptd).parameters.items() if name not in ("A", "return_info")},
    "force_stable": True,  # the layers' init: Re Λ ← -|Re Λ| (never triggered for LegS with the defaults)
}
_PTD_MEMO: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _cache_dir() -> str | None:
    """``$SSM_CACHE_DIR`` (empty: no disk cache), else ``~/.cache/ssm``."""
    path = os.environ.get("SSM_CACHE_DIR")
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".cache", "ssm")
    return path or None


def _load_cached(path: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The cached (Lambda, V, Vinv), or None (recompute) unless the file holds tensors of the
    right dtype and shapes that still decompose LegS with the perturbation size recorded
    when it was written (a damaged file, even one flipped bit, fails that)."""
    try:
        payload = torch.load(path, weights_only=True)
        out = tuple(payload[k] for k in ("Lambda", "V", "Vinv"))
        recorded = float(payload["rel_perturbation"])
        shapes = [(N,), (N, N), (N, N)]
        if any(not torch.is_tensor(t) or t.dtype != _C128 or tuple(t.shape) != s for t, s in zip(out, shapes)):
            return None
        if not all(bool(torch.isfinite(t).all()) for t in out):
            return None
        stats = ptd_stats(transition("legs", N)[0], *out)
    except Exception:  # missing, unreadable, corrupt or of an older layout: recompute
        return None
    if not (stats["residual"] < 1e-8 and abs(stats["rel_perturbation"] - recorded) <= 1e-9 * max(1.0, recorded)):
        return None
    return out


def _store_cached(path: str, result: tuple[torch.Tensor, torch.Tensor, torch.Tensor], settings: dict) -> None:
    """Write to a temporary file and rename it, so readers never see a partial file."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            os.chmod(tmp, 0o644)
            with os.fdopen(fd, "wb") as f:
                rel = ptd_stats(transition("legs", result[0].shape[0])[0], *result)["rel_perturbation"]
                torch.save(dict(zip(("Lambda", "V", "Vinv"), result), settings=settings, rel_perturbation=rel), f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        pass


def ptd_legs(N: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ptd` of the HiPPO-LegS matrix of size ``N`` with ``force_stable=True``, cached.

    Layers call this at construction and then use ``B = Vinv @ B_LegS``, ``C = C₀ @ V``.
    Results are memoized in the process and stored on disk under
    ``$SSM_CACHE_DIR/ptd/`` (default ``~/.cache/ssm/ptd/``; ``SSM_CACHE_DIR=""`` turns the
    disk cache off), one file per ``(N, settings, PTD_VERSION)``. An unwritable directory
    or an unreadable file silently falls back to computing.

    Args:
        N: state size, ``N >= 1``.
        **kwargs: the keyword arguments of :func:`ptd` (``rel_size``, ``seed``, ``steps``,
            ``margin``, ``complex_perturbation``, ``force_stable``; the last defaults to True
            here: the layers need a stable Λ).

    Returns:
        ``(Lambda, V, Vinv)`` as from ``ptd(transition("legs", N)[0], force_stable=True,
        **kwargs)``; fresh
        copies, so callers may modify them.
    """
    N = _check("legs", N)
    unknown = set(kwargs) - set(_PTD_SETTINGS)
    if unknown:
        raise TypeError(f"ptd_legs: unexpected keyword arguments {sorted(unknown)}")
    settings = {**_PTD_SETTINGS, **{name: _plain(name, value) for name, value in kwargs.items()}}
    key = (N, tuple(sorted(settings.items())))
    if key not in _PTD_MEMO:
        payload = json.dumps({"N": N, "version": PTD_VERSION, **settings}, sort_keys=True)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        root = _cache_dir()
        path = os.path.join(root, "ptd", f"legs-N{N}-{digest}.pt") if root else None
        result = _load_cached(path, N) if path else None
        if result is None:
            result = ptd(transition("legs", N)[0], **settings)
            if path:
                _store_cached(path, result, settings)
        _PTD_MEMO[key] = result
    return tuple(t.clone() for t in _PTD_MEMO[key])


ptd_legs.cache_clear = _PTD_MEMO.clear


def _plain(name: str, value):
    """A ``ptd_legs`` setting as a plain Python value (it keys the cache): a one-element
    tensor becomes its number; anything but None, bool, int, float raises TypeError."""
    if torch.is_tensor(value) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if value is not None and not isinstance(value, (bool, int, float)):
        raise TypeError(f"ptd_legs: {name} must be a number, a bool or None, got {type(value).__name__}")
    return value
