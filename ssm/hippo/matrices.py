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

LegS itself cannot be diagonalized in floating point (its eigenvector matrix has
κ₂ > 1e22 at N = 32); see ``ssm.hippo.perturb`` for the perturb-then-diagonalize way out.

All matrices are built in float64 on the CPU.
"""

import math
import operator

import torch

__all__ = [
    "transition",
    "low_rank",
    "normal_part",
    "nplr",
    "diagonal_init",
    "diagonal_B_init",
]

MEASURES = ("legs", "legt", "fout")
DIAGONAL_INITS = ("lin", "inv", "real", "legs")

_F64 = torch.float64
_C128 = torch.complex128


def _check(measure: str, N: int) -> int:
    if measure not in MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {MEASURES}")
    if isinstance(N, bool):
        raise TypeError(f"state size N must be an integer, got {N!r}")
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

    Each column of ``V`` is multiplied by a unit phase making its first nonzero
    entry (magnitude above 1e-6 of the column's largest) real and positive, so
    the result does not depend on the eigensolver backend. This is LAPACK's
    own convention for ``eigh`` up to sign (its tridiagonal reduction keeps the
    first coordinate, so every eigenvector's first entry is real), which the s4
    reference code uses unchanged: the phase decides how much of ``V^* B`` is
    imaginary, hence what ``B_clip`` removes, and with it the clipped LegS
    ``B_tilde`` has s4's magnitudes (|B_tilde| per mode equal to its
    ``diag-legs`` B; N = 64: sum |B_tilde|^2 = 74.9 of 2048 unclipped).

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

    mag = V.abs()  # the first entry above rounding: index 0 for legs and legt, 2 for fout's oscillators
    pivot = (mag > 1e-6 * mag.amax(dim=0, keepdim=True)).to(torch.int64).argmax(dim=0)
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
