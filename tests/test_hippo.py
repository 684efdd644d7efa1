import math

import pytest
import torch

from ssm.hippo import (
    diagonal_B_init,
    diagonal_init,
    low_rank,
    normal_part,
    nplr,
    transition,
)

MEASURES = ["legs", "legt", "fout"]
RANK = {"legs": 1, "legt": 2, "fout": 1}
# Real part c of the normal part S = c I + K (K skew).
SHIFT = {"legs": -0.5, "legt": 0.0, "fout": 0.0}


def kernel_norm(measure, N, t):
    A, B = transition(measure, N)
    return torch.linalg.vector_norm(torch.linalg.matrix_exp(t * A) @ B).item()


def legendre(n_max, x):
    """Leg_0 .. Leg_{n_max-1} at x by the three-term recurrence."""
    vals = [torch.ones_like(x), x]
    for n in range(1, n_max - 1):
        vals.append(((2 * n + 1) * x * vals[n] - n * vals[n - 1]) / (n + 1))
    return torch.stack(vals[:n_max])


def positive_imag_sorted(eigs):
    kept = eigs[eigs.imag > 1e-9]
    return kept[torch.argsort(kept.imag)]


# ---------------------------------------------------------------- transition


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [1, 2, 3, 7, 8])
def test_transition_low_rank_normal_part_shapes_and_dtypes(measure, N):
    A, B = transition(measure, N)
    P = low_rank(measure, N)
    S = normal_part(measure, N)
    assert A.shape == (N, N) and A.dtype == torch.float64
    assert B.shape == (N,) and B.dtype == torch.float64
    assert P.shape == (RANK[measure], N) and P.dtype == torch.float64
    assert S.shape == (N, N) and S.dtype == torch.float64


@pytest.mark.parametrize("fn", [transition, low_rank, normal_part, nplr])
def test_unknown_measure_or_bad_size_raises_value_error(fn):
    with pytest.raises(ValueError, match="measure"):
        fn("legx", 8)
    with pytest.raises(ValueError, match="N"):
        fn("legs", 0)
    with pytest.raises(TypeError, match="must be an integer"):
        fn("legs", True)


def test_legs_matrices_match_elementwise_formula():
    N = 9
    A, B = transition("legs", N)
    P = low_rank("legs", N)
    for n in range(N):
        assert B[n].item() == pytest.approx(math.sqrt(2 * n + 1), abs=1e-15)
        assert P[0, n].item() == pytest.approx(math.sqrt(n + 0.5), abs=1e-15)
        for k in range(N):
            if n > k:
                want = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                want = -(n + 1)
            else:
                want = 0.0
            assert A[n, k].item() == pytest.approx(want, abs=1e-13)


def test_legt_matrices_match_elementwise_formula():
    N = 9
    A, B = transition("legt", N)
    P = low_rank("legt", N)
    for n in range(N):
        assert B[n].item() == pytest.approx(0.5 * math.sqrt(2 * n + 1), abs=1e-15)
        p = math.sqrt((2 * n + 1) / 2)
        assert P[n % 2, n].item() == pytest.approx(p, abs=1e-15)
        assert P[1 - n % 2, n].item() == 0.0
        for k in range(N):
            sign = 1.0 if n >= k else (-1.0) ** (n - k)
            want = -0.5 * math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) * sign
            assert A[n, k].item() == pytest.approx(want, abs=1e-13)


def test_fout_layout_constant_inert_index_one_and_cos_sin_pairs():
    N = 10
    A, B = transition("fout", N)
    want_B = torch.zeros(N, dtype=torch.float64)
    want_B[0] = 1.0
    want_B[2::2] = math.sqrt(2)
    torch.testing.assert_close(B, want_B, rtol=0, atol=1e-15)
    torch.testing.assert_close(low_rank("fout", N)[0], B, rtol=0, atol=0)
    assert torch.all(A[1] == 0) and torch.all(A[:, 1] == 0)
    J = (A + torch.outer(B, B)) / math.pi
    want_J = torch.zeros(N, N, dtype=torch.float64)
    for m in range(1, N // 2):
        want_J[2 * m, 2 * m + 1] = -m
        want_J[2 * m + 1, 2 * m] = m
    torch.testing.assert_close(J, want_J, rtol=0, atol=1e-14)


@pytest.mark.parametrize("N", [3, 9])
def test_fout_odd_N_is_even_system_plus_inert_last_state(N):
    A, B = transition("fout", N)
    A_even, B_even = transition("fout", N - 1)
    torch.testing.assert_close(A[:-1, :-1], A_even, rtol=0, atol=0)
    torch.testing.assert_close(B[:-1], B_even, rtol=0, atol=0)
    assert torch.all(A[-1] == 0) and torch.all(A[:, -1] == 0) and B[-1] == 0


# --------------------------------------------------------------- normal part


@pytest.mark.parametrize("N", [1, 7, 16, 64])
def test_legs_normal_part_is_minus_half_plus_skew(N):
    S = normal_part("legs", N)
    eye = torch.eye(N, dtype=torch.float64)
    assert (S + S.T + eye).abs().max() < 1e-12
    eigs = torch.linalg.eigvals(S)
    assert (eigs.real + 0.5).abs().max() < 1e-12


@pytest.mark.parametrize("N", [1, 2, 7, 16, 64])
def test_legt_normal_part_is_skew(N):
    S = normal_part("legt", N)
    assert (S + S.T).abs().max() < 1e-12


@pytest.mark.parametrize("N", [1, 2, 7, 16])
def test_fout_normal_part_is_skew(N):
    S = normal_part("fout", N)
    assert (S + S.T).abs().max() < 1e-12


@pytest.mark.parametrize("measure", MEASURES)
def test_normal_part_commutes_with_its_transpose(measure):
    S = normal_part(measure, 12)
    assert (S @ S.T - S.T @ S).abs().max() < 1e-10


# ------------------------------------------------------------------ kernels


def test_legs_kernel_is_scaled_legendre_polynomials():
    N = 16
    A, B = transition("legs", N)
    scale = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    for t in [0.1, 0.7, 2.0]:
        got = torch.linalg.matrix_exp(t * A) @ B
        x = torch.tensor(2 * math.exp(-t) - 1, dtype=torch.float64)
        want = scale * math.exp(-t) * legendre(N, x)
        assert (got - want).abs().max() < 1e-12


def test_legt_kernel_is_flat_inside_window_and_vanishes_after():
    N = 256
    for t in [0.5, 1.0, 1.5, 1.9]:
        assert 6.2 < kernel_norm("legt", N, t) < 7.2
    assert kernel_norm("legt", N, 2.05) == pytest.approx(0.398, rel=0.02)
    assert kernel_norm("legt", N, 2.5) == pytest.approx(3.0e-3, rel=0.05)


def test_fout_kernel_is_flat_inside_window_and_drops_after():
    N = 256
    for t in [0.5, 1.0, 1.5, 1.95]:
        assert kernel_norm("fout", N, t) == pytest.approx(7.7, rel=0.01)
    assert kernel_norm("fout", N, 2.0) == pytest.approx(4.1, rel=0.01)
    for t in [2.1, 2.5]:
        assert kernel_norm("fout", N, t) == pytest.approx(1.84, rel=0.02)


# --------------------------------------------------------------------- nplr


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [1, 2, 3, 7, 8, 16])
def test_nplr_shapes_and_dtypes(measure, N):
    Lambda, P, B, V = nplr(measure, N)
    H = N // 2
    assert Lambda.shape == (H,) and Lambda.dtype == torch.complex128
    assert P.shape == (RANK[measure], H) and P.dtype == torch.complex128
    assert B.shape == (H,) and B.dtype == torch.complex128
    assert V.shape == (N, H) and V.dtype == torch.complex128


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 7, 8, 33, 64])
def test_nplr_lambda_has_real_shift_and_sorted_nonnegative_imag(measure, N):
    Lambda = nplr(measure, N)[0]
    assert (Lambda.real - SHIFT[measure]).abs().max() < 1e-12
    assert torch.all(Lambda.imag >= 0)
    assert torch.all(Lambda.imag[1:] > Lambda.imag[:-1])


def test_nplr_fout_kernel_pair_gives_one_zero_eigenvalue():
    Lambda = nplr("fout", 8)[0]
    want = torch.tensor([0, 1, 2, 3], dtype=torch.float64) * math.pi
    torch.testing.assert_close(Lambda.imag, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 7, 8, 64])
def test_nplr_eigenvectors_are_orthonormal_together_with_conjugates(measure, N):
    V = nplr(measure, N)[3]
    eye = torch.eye(N // 2, dtype=torch.complex128)
    assert (V.mH @ V - eye).abs().max() < 1e-12
    assert (V.T @ V).abs().max() < 1e-12


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 8, 16, 64])
def test_nplr_reconstructs_normal_part_for_even_N(measure, N):
    Lambda, _, _, V = nplr(measure, N)
    S = normal_part(measure, N)
    rebuilt = 2 * (V @ torch.diag(Lambda) @ V.mH).real
    assert (rebuilt - S).abs().max() < 1e-10 * max(1.0, S.abs().max().item())


@pytest.mark.parametrize("measure", ["legs", "legt"])
@pytest.mark.parametrize("N", [3, 7, 33])
def test_nplr_odd_N_leaves_out_one_real_eigenpair(measure, N):
    # S - 2 Re(V Lambda V^*) must be c q q^T for one real unit vector q.
    Lambda, _, _, V = nplr(measure, N)
    S = normal_part(measure, N)
    R = S - 2 * (V @ torch.diag(Lambda) @ V.mH).real
    c = SHIFT[measure]
    assert (R - R.T).abs().max() < 1e-10
    assert torch.trace(R).item() == pytest.approx(c, abs=1e-10)
    assert (R @ R - c * R).abs().max() < 1e-10


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 8, 16, 64])
def test_nplr_unclipped_B_reconstructs_measure_B(measure, N):
    _, _, B_tilde, V = nplr(measure, N, B_clip=None)
    _, B = transition(measure, N)
    assert (2 * (V @ B_tilde).real - B).abs().max() < 1e-10


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [7, 16])
def test_nplr_low_rank_term_matches_A_in_eigenbasis(measure, N):
    # V^* A V = diag(Lambda) - P_tilde^T conj(P_tilde)
    Lambda, P, _, V = nplr(measure, N)
    A, _ = transition(measure, N)
    lhs = V.mH @ A.to(torch.complex128) @ V
    rhs = torch.diag(Lambda) - P.T @ P.conj()
    assert (lhs - rhs).abs().max() < 1e-10


@pytest.mark.parametrize("measure", MEASURES)
def test_nplr_B_clip_bounds_imag_part_and_keeps_real_part(measure):
    N = 64
    raw = nplr(measure, N, B_clip=None)[2]
    clipped = nplr(measure, N, B_clip=2.0)[2]
    torch.testing.assert_close(clipped.real, raw.real, rtol=0, atol=0)
    assert torch.all(clipped.imag.abs() <= 2.0)
    inside = raw.imag.abs() <= 2.0
    torch.testing.assert_close(clipped.imag[inside], raw.imag[inside], rtol=0, atol=0)
    if measure == "legs":
        assert raw.imag.abs().max() > 2.0  # the clip is active for LegS


@pytest.mark.parametrize("measure", MEASURES)
def test_nplr_eigenvector_phase_convention(measure):
    # The first entry above rounding is real and positive: entry 0 for legs and legt.
    V = nplr(measure, 32)[3]
    mag = V.abs()
    for j in range(V.shape[1]):
        pivot = int(torch.nonzero(mag[:, j] > 1e-6 * mag[:, j].max())[0])
        assert abs(V[pivot, j].imag.item()) < 1e-14
        assert V[pivot, j].real.item() > 0
        if measure in ("legs", "legt"):
            assert pivot == 0


@pytest.mark.parametrize("N", [8, 31, 64])
def test_nplr_clipped_legs_B_has_the_magnitudes_of_raw_eigh_vectors(N):
    """s4's diag-legs B: eigh(-i K) as LAPACK returns it (first coordinate real), V*B, Im
    clipped to +-2. The clip depends on each eigenvector's phase; ours must clip the same
    amount, so |B_tilde| per mode equals the raw procedure's."""
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    A = -(torch.tril(r[:, None] * r[None, :], -1) + torch.diag(n + 1))  # LegS, written out
    P = torch.sqrt(n + 0.5)
    S = A + P[:, None] * P[None, :]
    K = 0.5 * (S - S.T)
    w, U = torch.linalg.eigh(-1j * K.to(torch.complex128))
    U0 = U[:, w > 1e-9]
    assert torch.allclose(U0[0].imag, torch.zeros(U0.shape[1], dtype=torch.float64), atol=1e-15)
    B_raw = U0.mH @ r.to(torch.complex128)
    B_raw = torch.complex(B_raw.real, B_raw.imag.clamp(-2, 2))
    B_ours = nplr("legs", N, B_clip=2.0)[2]
    torch.testing.assert_close(B_ours.abs(), B_raw.abs(), rtol=1e-10, atol=1e-12)
    if N == 64:
        assert abs(B_ours.abs().square().sum().item() - 74.87) < 0.01  # of 2048 unclipped


# ----------------------------------------------------------- diagonal inits


@pytest.mark.parametrize("N", [7, 8, 16, 64])
def test_diagonal_legs_matches_independent_eigvals_of_normal_part(N):
    got = diagonal_init("legs", N)
    want = positive_imag_sorted(torch.linalg.eigvals(normal_part("legs", N)))
    assert got.shape == (N // 2,)
    assert (got - want).abs().max() < 1e-9 * max(1.0, want.abs().max().item())


def test_hippo_n_spectrum_for_N64():
    imag = diagonal_init("legs", 64).imag
    smallest = [0.264, 0.906, 1.703, 2.626, 3.665]
    for got, want in zip(imag[:5].tolist(), smallest):
        assert got == pytest.approx(want, rel=2e-3)
    assert imag[-2].item() == pytest.approx(433.0, rel=1e-3)
    assert imag[-1].item() == pytest.approx(1303.3, rel=1e-3)


def test_s4d_inv_spectrum_for_N64():
    imag = torch.sort(diagonal_init("inv", 64).imag).values
    smallest = [0.323, 1.002, 1.726, 2.502, 3.334]
    for got, want in zip(imag[:5].tolist(), smallest):
        assert got == pytest.approx(want, rel=2e-3)
    assert imag[-2].item() == pytest.approx(414.2, rel=1e-3)
    assert imag[-1].item() == pytest.approx(1283.4, rel=1e-3)


def test_s4d_lin_largest_imag_for_N64():
    assert diagonal_init("lin", 64).imag.max().item() == pytest.approx(math.pi * 31, abs=1e-12)  # π n, n < 32


@pytest.mark.parametrize("N", [2, 7, 64])
def test_diagonal_closed_forms_match_elementwise(N):
    lin, inv, real = (diagonal_init(name, N) for name in ("lin", "inv", "real"))
    for values in (lin, inv, real):
        assert values.shape == (N // 2,) and values.dtype == torch.complex128
        assert torch.all(values.imag >= 0)
    for n in range(N // 2):
        assert lin[n].item() == pytest.approx(complex(-0.5, math.pi * n), abs=1e-12)
        inv_imag = N / math.pi * (N / (2 * n + 1) - 1)
        assert inv[n].item() == pytest.approx(complex(-0.5, inv_imag), abs=1e-10)
        assert real[n].item() == complex(-(n + 1), 0)


@pytest.mark.parametrize("N", [2, 7, 64])
def test_diagonal_B_init_ones_or_clipped_legs_B(N):
    for name in ("lin", "inv", "real"):
        B = diagonal_B_init(name, N)
        assert B.dtype == torch.complex128
        torch.testing.assert_close(B, torch.ones(N // 2, dtype=torch.complex128))
    B = diagonal_B_init("legs", N)
    assert B.shape == (N // 2,) and B.dtype == torch.complex128
    torch.testing.assert_close(B, nplr("legs", N, B_clip=2.0)[2], rtol=0, atol=0)
    assert torch.all(B.imag.abs() <= 2.0)


@pytest.mark.parametrize("fn", [diagonal_init, diagonal_B_init])
def test_diagonal_init_unknown_name_or_small_N_raises_value_error(fn):
    with pytest.raises(ValueError, match="init"):
        fn("exp", 8)
    with pytest.raises(ValueError, match="N"):
        fn("lin", 1)
