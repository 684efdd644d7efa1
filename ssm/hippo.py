"""HiPPO transition matrices and the initializations derived from them.

A HiPPO measure defines a linear ODE ``x'(t) = A x(t) + B u(t)`` whose state
``x`` (size ``N``) holds the coefficients of an online polynomial or Fourier
projection of the input history ``u``.  Indices ``n, k`` run over ``0 .. N-1``.

Supported measures:

``"legs"``  scaled Legendre (the whole history, uniformly weighted)::

    A[n, k] = -sqrt(2n+1) sqrt(2k+1)   n > k
              -(n+1)                   n = k
              0                        n < k
    B[n]    = sqrt(2n+1)
    P[0, n] = sqrt(n + 1/2)            (rank 1)

``"legt"``  translated Legendre over a sliding window of length 2::

    A[n, k] = -1/2 sqrt(2n+1) sqrt(2k+1) * (1 if n >= k else (-1)^(n-k))
    B[n]    = 1/2 sqrt(2n+1)
    P[0, n] = sqrt((2n+1)/2) for even n, else 0      (rank 2)
    P[1, n] = sqrt((2n+1)/2) for odd n,  else 0

``"fout"``  translated Fourier over a sliding window of length 2::

    A = pi J - B B^T,   P = B   (rank 1)

    Index 0 is the constant function (B[0] = 1).  Index 1 is inert: zero row,
    zero column, B[1] = 0.  For m = 1 .. N//2 - 1 the pair (2m, 2m+1) is the
    cosine / sine pair of frequency m, J acts on it as [[0, -m], [m, 0]] and
    B[2m] = sqrt(2), B[2m+1] = 0.  For odd N the last index N-1 has no partner
    and is inert like index 1, so the system is the one of size N-1 plus a
    decoupled zero state.

Each normal part ``S = A + P^T P`` equals ``c I + K`` with ``K`` real
skew-symmetric (``c = -1/2`` for legs, ``0`` for legt and fout), which is what
``nplr`` exploits to diagonalize it with a Hermitian eigensolver.

All matrices are built in float64 on the CPU.
"""

import contextlib
import hashlib
import inspect
import json
import math
import operator
import os
import tempfile
import time

import torch

__all__ = [
    "transition",
    "low_rank",
    "normal_part",
    "nplr",
    "diagonal_init",
    "diagonal_B_init",
    "ptd",
    "ptd_stats",
    "ptd_legs",
]

MEASURES = ("legs", "legt", "fout")
DIAGONAL_INITS = ("lin", "inv", "real", "legs")

_F64 = torch.float64
_C128 = torch.complex128


def _check(measure: str, N: int) -> int:
    if measure not in MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {MEASURES}")
    N = operator.index(N)
    if N < 1:
        raise ValueError(f"state size N must be >= 1, got {N}")
    return N


def _fout_b(N: int) -> torch.Tensor:
    """FouT input vector: B[0] = 1, B[2m] = sqrt(2) for m = 1 .. N//2 - 1, else 0."""
    B = torch.zeros(N, dtype=_F64)
    B[0] = 1.0
    B[2 : 2 * (N // 2) : 2] = math.sqrt(2.0)
    return B


def transition(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO state matrix and input vector (formulas in the module docstring).

    Args:
        measure: ``"legs"``, ``"legt"`` or ``"fout"``.
        N: state size, ``N >= 1``.

    Returns:
        ``(A, B)``: float64 tensors of shapes ``(N, N)`` and ``(N,)``.

    Raises:
        ValueError: for an unknown measure or ``N < 1``.
    """
    N = _check(measure, N)
    n = torch.arange(N, dtype=_F64)
    s = torch.sqrt(2 * n + 1)
    if measure == "legs":
        A = -torch.tril(torch.outer(s, s), diagonal=-1) - torch.diag(n + 1)
        return A, s
    if measure == "legt":
        idx = torch.arange(N)
        row, col = idx[:, None], idx[None, :]
        odd_gap = (row - col) % 2 == 1
        sign = torch.where((row < col) & odd_gap, -1.0, 1.0).to(_F64)
        return -0.5 * torch.outer(s, s) * sign, 0.5 * s
    # fout
    m = torch.arange(1, max(N // 2, 1))
    J = torch.zeros(N, N, dtype=_F64)
    J[2 * m, 2 * m + 1] = -m.to(_F64)
    J[2 * m + 1, 2 * m] = m.to(_F64)
    B = _fout_b(N)
    return math.pi * J - torch.outer(B, B), B


def low_rank(measure: str, N: int) -> torch.Tensor:
    """Low-rank correction ``P`` such that ``A + P^T P`` is normal.

    Returns:
        float64 tensor of shape ``(r, N)``: ``r = 1`` for legs and fout,
        ``r = 2`` for legt (rows supported on even / odd indices).

    Raises:
        ValueError: for an unknown measure or ``N < 1``.
    """
    N = _check(measure, N)
    n = torch.arange(N, dtype=_F64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None, :]
    if measure == "legt":
        p = torch.sqrt((2 * n + 1) / 2)
        P = torch.zeros(2, N, dtype=_F64)
        P[0, 0::2] = p[0::2]
        P[1, 1::2] = p[1::2]
        return P
    return _fout_b(N)[None, :]


def normal_part(measure: str, N: int) -> torch.Tensor:
    """Normal part ``S = A + P^T P`` of the HiPPO matrix, float64 ``(N, N)``.

    ``S = -1/2 I + K`` for legs and ``S = K`` for legt and fout, ``K`` skew.
    """
    A, _ = transition(measure, N)
    P = low_rank(measure, N)
    return A + P.T @ P


def _null_space_pairs(U0: torch.Tensor) -> torch.Tensor:
    """Pair up the kernel of a real skew matrix into conjugate eigenvectors.

    ``U0`` (N, d) is an orthonormal complex basis of the kernel.  The kernel is
    invariant under conjugation, so its orthogonal projector ``Pi = U0 U0^*``
    is real.  A canonical real orthonormal basis ``q_0 .. q_{d-1}`` is obtained
    by Gram-Schmidt on the columns of ``Pi`` in index order, and consecutive
    vectors are paired into ``(q_{2j} - i q_{2j+1}) / sqrt(2)``, which together
    with their conjugates span the kernel.  For odd ``d`` the last ``q`` (a
    real eigenvector) is left out.

    Returns:
        complex128 tensor of shape ``(N, d // 2)``.
    """
    d = U0.shape[1]
    Pi = (U0 @ U0.mH).real
    basis = []
    for j in range(Pi.shape[0]):
        if len(basis) == d:
            break
        v = Pi[:, j].clone()
        for q in basis:
            v -= (q @ v) * q
        norm = torch.linalg.vector_norm(v)
        if norm > 1e-6:
            basis.append(v / norm)
    Q = torch.stack(basis, dim=1) if basis else Pi[:, :0]
    h = d // 2
    return (Q[:, 0 : 2 * h : 2] - 1j * Q[:, 1 : 2 * h : 2]) / math.sqrt(2.0)


def nplr(
    measure: str, N: int, B_clip: float | None = 2.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-plus-low-rank form of a HiPPO matrix.

    The normal part ``S = A + P^T P = V_full diag(Lambda_full) V_full^*`` is
    diagonalized with a unitary ``V_full``.  Writing ``S = c I + K`` with ``K``
    real skew, the Hermitian matrix ``-i K`` is diagonalized by
    ``torch.linalg.eigh`` (eigenvalues ``w``), and ``Lambda_full = c + i w``.
    The spectrum comes in conjugate pairs; one member of each is kept, the one
    with ``Im > 0``, sorted by increasing imaginary part.  Eigenvalues equal to
    ``c`` (``w = 0``) pair up among themselves and contribute one entry per
    pair, placed first (this happens for fout, whose constant and inert states
    span the kernel); for odd ``N`` the remaining single real eigenvalue is
    dropped.  The kept eigenvectors ``V`` satisfy ``V^* V = I`` and
    ``V^T V = 0``, so for even ``N``::

        S = 2 Re(V diag(Lambda) V^*),      B = 2 Re(V B_tilde)

    Each column of ``V`` is multiplied by a unit phase making its first entry
    of magnitude at least half its largest real and positive, so the result
    does not depend on the eigensolver backend.

    Args:
        measure: ``"legs"``, ``"legt"`` or ``"fout"``.
        N: state size, ``N >= 1``.
        B_clip: if not None, the imaginary part of ``B_tilde`` is clipped to
            ``[-B_clip, B_clip]`` (the real part is left unchanged).

    Returns:
        ``(Lambda, P_tilde, B_tilde, V)`` with ``H = N // 2``:

        - ``Lambda``: complex128 ``(H,)``, kept eigenvalues of ``S``.
        - ``P_tilde = (V^* P^T)^T``: complex128 ``(r, H)``.
        - ``B_tilde = V^* B``: complex128 ``(H,)``.
        - ``V``: complex128 ``(N, H)``, matching eigenvector columns.

    Raises:
        ValueError: for an unknown measure or ``N < 1``.
    """
    N = _check(measure, N)
    _, B = transition(measure, N)
    P = low_rank(measure, N)
    S = normal_part(measure, N)
    c = S.diagonal().mean()
    K = 0.5 * (S - S.T)
    w, U = torch.linalg.eigh(-1j * K.to(_C128))
    tol = 1e-9 * max(1.0, w.abs().max().item())
    positive = w > tol
    V0 = _null_space_pairs(U[:, w.abs() <= tol])
    V = torch.cat([V0, U[:, positive]], dim=1)
    w_kept = torch.cat([torch.zeros(V0.shape[1], dtype=_F64), w[positive]])
    Lambda = torch.complex(torch.full_like(w_kept, c.item()), w_kept)

    mag = V.abs()
    pivot = (mag >= 0.5 * mag.amax(dim=0, keepdim=True)).to(torch.int64).argmax(dim=0)
    entry = V[pivot, torch.arange(V.shape[1])]
    V = V * (entry.conj() / entry.abs())

    B_tilde = V.mH @ B.to(_C128)
    P_tilde = P.to(_C128) @ V.conj()
    if B_clip is not None:
        B_tilde = torch.complex(B_tilde.real, B_tilde.imag.clamp(-B_clip, B_clip))
    return Lambda, P_tilde, B_tilde, V


def _check_diagonal(name: str, N: int) -> int:
    if name not in DIAGONAL_INITS:
        raise ValueError(f"unknown diagonal init {name!r}; expected one of {DIAGONAL_INITS}")
    N = operator.index(N)
    if N < 2:
        raise ValueError(f"state size N must be >= 2, got {N}")
    return N


def diagonal_init(name: str, N: int) -> torch.Tensor:
    """Continuous-time eigenvalues for diagonal state-space models (S4D).

    One eigenvalue of each conjugate pair (``Im >= 0``), ``n = 0 .. N//2 - 1``::

        "lin":  A_n = -1/2 + i pi n
        "inv":  A_n = -1/2 + i (N / pi) (N / (2n + 1) - 1)
        "real": A_n = -(n + 1)
        "legs": the Lambda of nplr("legs", N): eigenvalues -1/2 + i w of the
                HiPPO-LegS normal part, sorted by increasing imaginary part

    lin, inv and real are listed in increasing ``n`` (so inv has decreasing
    imaginary part).

    Returns:
        complex128 tensor of shape ``(N // 2,)``.

    Raises:
        ValueError: for an unknown name or ``N < 2``.
    """
    N = _check_diagonal(name, N)
    if name == "legs":
        return nplr("legs", N)[0]
    n = torch.arange(N // 2, dtype=_F64)
    half = torch.full_like(n, -0.5)
    if name == "lin":
        return torch.complex(half, math.pi * n)
    if name == "inv":
        return torch.complex(half, (N / math.pi) * (N / (2 * n + 1) - 1))
    return torch.complex(-(n + 1), torch.zeros_like(n))


def diagonal_B_init(name: str, N: int) -> torch.Tensor:
    """Input vector matching :func:`diagonal_init`.

    Ones for lin, inv and real; for legs the ``B_tilde`` of
    ``nplr("legs", N, B_clip=2.0)``.

    Returns:
        complex128 tensor of shape ``(N // 2,)``.

    Raises:
        ValueError: for an unknown name or ``N < 2``.
    """
    N = _check_diagonal(name, N)
    if name == "legs":
        return nplr("legs", N, B_clip=2.0)[2]
    return torch.ones(N // 2, dtype=_C128)


# ------------------------------------------------------------------ PTD

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


def _ptd_perturbation(
    A: torch.Tensor, rho: float, steps: int, margin: float | None, complex_perturbation: bool, seed: int
) -> torch.Tensor:
    """The optimized E with ||E||_2 = rho (the loss and schedule are described in ``ptd``)."""
    N = A.shape[0]
    generator = torch.Generator().manual_seed(seed)
    dtype = _C128 if complex_perturbation else _F64
    Z = torch.randn(N, N, dtype=dtype, generator=generator).requires_grad_(True)
    A = A.to(dtype)
    norm_A = torch.linalg.matrix_norm(A, 2).item()

    def perturbation(Z):
        return rho * Z / torch.linalg.matrix_norm(Z, 2)

    best = [math.inf, Z.detach().clone()]
    for fraction, power in _PTD_PHASES:
        scale = norm_A / N**power
        budget = max(1, round(fraction * steps))
        optimizer = torch.optim.LBFGS(
            [Z], lr=1.0, max_iter=budget, max_eval=budget, history_size=_PTD_HISTORY,
            tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe",
        )
        best[0] = math.inf

        def closure():
            optimizer.zero_grad()
            lam, V = torch.linalg.eig(A + perturbation(Z))
            V = V / torch.linalg.vector_norm(V, dim=0)
            # With unit columns, |row i of V^-1| is the condition number of λ_i.
            mean_kappa_sq = torch.linalg.inv(V).abs().square().sum() / N
            loss = torch.log(mean_kappa_sq)
            if margin is not None:
                loss = loss + _PTD_STAB_WEIGHT * torch.relu(lam.real + margin).div(scale).square().mean()
            if torch.isfinite(loss) and loss.item() < best[0]:
                best[0], best[1] = loss.item(), Z.detach().clone()
            loss.backward()
            return loss

        optimizer.step(closure)
    return perturbation(best[1]).detach()


def ptd(
    A: torch.Tensor,
    rel_size: float = 0.05,
    *,
    seed: int = 0,
    steps: int | None = None,
    margin: float | None = 0.5,
    complex_perturbation: bool = False,
    force_stable: bool = True,
    return_info: bool = False,
):
    """Perturb-then-diagonalize: a well-conditioned eigenbasis of ``A + E`` for a small ``E``.

    Finds ``E`` with ``||E||_2 = rel_size · ||A||_2`` such that

        A + E = V diag(Lambda) V⁻¹,     V with unit-norm columns and small κ₂(V),

    then, if ``force_stable``, reflects unstable eigenvalues (``Re λ ← -|Re λ|``) and
    redefines ``E = V diag(Lambda) V⁻¹ - A`` so that the identity still holds.

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
        force_stable: reflect eigenvalues with ``Re λ > 0`` to ``-Re λ``.
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
    Lambda, V, Vinv = (t.detach().cpu().to(_C128) for t in (Lambda, V, Vinv))
    s = torch.linalg.svdvals(V)
    E = (V * Lambda) @ Vinv - A
    eye = torch.eye(A.shape[0], dtype=_C128)
    return {
        "kappa": (s[0] / s[-1]).item(),
        "rel_perturbation": (torch.linalg.matrix_norm(E, 2) / torch.linalg.matrix_norm(A, 2)).item(),
        "residual": torch.linalg.matrix_norm(V @ Vinv - eye, 2).item(),
        "max_real": Lambda.real.max().item(),
        "min_abs_real": Lambda.real.abs().min().item(),
        "max_imag": Lambda.imag.abs().max().item(),
    }


# The keyword arguments of ``ptd`` that ``ptd_legs`` forwards, with their defaults.
_PTD_SETTINGS = {
    name: p.default for name, p in inspect.signature(ptd).parameters.items() if name not in ("A", "return_info")
}
_PTD_MEMO: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _cache_dir() -> str | None:
    """``$SSM_CACHE_DIR`` (empty: no disk cache), else ``~/.cache/ssm``."""
    path = os.environ.get("SSM_CACHE_DIR")
    if path is None:
        path = os.path.join(os.path.expanduser("~"), ".cache", "ssm")
    return path or None


def _load_cached(path: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    try:
        payload = torch.load(path, weights_only=True)
        out = tuple(payload[k] for k in ("Lambda", "V", "Vinv"))
    except Exception:  # missing, unreadable or corrupt: recompute
        return None
    shapes = [(N,), (N, N), (N, N)]
    if any(t.dtype != _C128 or tuple(t.shape) != s for t, s in zip(out, shapes)):
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
                torch.save(dict(zip(("Lambda", "V", "Vinv"), result), settings=settings), f)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        pass


def ptd_legs(N: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`ptd` of the HiPPO-LegS matrix of size ``N``, cached.

    Layers call this at construction and then use ``B = Vinv @ B_LegS``, ``C = C₀ @ V``.
    Results are memoized in the process and stored on disk under
    ``$SSM_CACHE_DIR/ptd/`` (default ``~/.cache/ssm/ptd/``; ``SSM_CACHE_DIR=""`` turns the
    disk cache off), one file per ``(N, settings, PTD_VERSION)``. An unwritable directory
    or an unreadable file silently falls back to computing.

    Args:
        N: state size, ``N >= 1``.
        **kwargs: the keyword arguments of :func:`ptd` (``rel_size``, ``seed``, ``steps``,
            ``margin``, ``complex_perturbation``, ``force_stable``).

    Returns:
        ``(Lambda, V, Vinv)`` as from ``ptd(transition("legs", N)[0], **kwargs)``; fresh
        copies, so callers may modify them.
    """
    N = _check("legs", N)
    unknown = set(kwargs) - set(_PTD_SETTINGS)
    if unknown:
        raise TypeError(f"ptd_legs: unexpected keyword arguments {sorted(unknown)}")
    settings = {**_PTD_SETTINGS, **kwargs}
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
