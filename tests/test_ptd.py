import functools
import math

import pytest
import torch

from ssm import hippo
from ssm.hippo import nplr, ptd, ptd_legs, ptd_stats, transition
from ssm.transfer import transfer_function

C128 = torch.complex128


@functools.cache
def legs_ptd(N, **kwargs):
    """ptd of LegS computed once per test session (N = 64 takes about a second)."""
    A, _ = transition("legs", N)
    return ptd(A, return_info=True, **kwargs)


def perturbation(A, Lam, V, Vinv):
    return V @ torch.diag(Lam) @ Vinv - A.to(C128)


def matched_distance(a, b):
    """max_i min_j |a_i - b_j| (eigenvalues are compared as sets)."""
    return (a[:, None] - b[None, :]).abs().min(dim=1).values.max().item()


@pytest.mark.parametrize("N", [8, 16, 32, 64])
def test_legs_ptd_is_well_conditioned_with_small_stable_perturbation(N):
    A, _ = transition("legs", N)
    Lam, V, Vinv, info = legs_ptd(N)
    stats = ptd_stats(A, Lam, V, Vinv)
    assert stats["kappa"] <= 10.0
    assert 0.01 <= stats["rel_perturbation"] <= 0.1
    assert torch.all(Lam.real <= 0)
    assert stats["kappa"] == pytest.approx(info["kappa"]) and info["n_repaired"] >= 0
    # The float64 eigenvector matrix of LegS itself is hopeless beyond N ~ 8.
    _, V_legs = torch.linalg.eig(A)
    assert torch.linalg.cond(V_legs / torch.linalg.vector_norm(V_legs, dim=0)) > 1e4


@pytest.mark.parametrize("N", [16, 64])
def test_ptd_backward_error_is_rounding_level(N):
    A, _ = transition("legs", N)
    Lam, V, Vinv, _ = legs_ptd(N)
    E = perturbation(A, Lam, V, Vinv)
    M = A.to(C128) + E
    norm_A = torch.linalg.matrix_norm(A, 2).item()
    eye = torch.eye(N, dtype=C128)
    assert torch.linalg.matrix_norm(V @ Vinv - eye, 2) < 1e-12
    assert torch.linalg.matrix_norm(M @ V - V * Lam, 2) < 1e-10 * norm_A
    torch.testing.assert_close(torch.linalg.vector_norm(V, dim=0), torch.ones(N, dtype=torch.float64))
    # Lambda are the eigenvalues of A + E as an independent solver sees them (κ is small,
    # so they are well determined).
    assert matched_distance(Lam, torch.linalg.eigvals(M)) < 1e-10 * norm_A
    assert matched_distance(torch.linalg.eigvals(M), Lam) < 1e-10 * norm_A


def test_real_perturbation_keeps_conjugate_pairs():
    N = 16
    A, _ = transition("legs", N)
    Lam, V, Vinv, _ = legs_ptd(N)
    E = perturbation(A, Lam, V, Vinv)
    assert E.imag.abs().max() < 1e-10 * E.real.abs().max()
    p = int((Lam.imag > 0).sum())
    assert int((Lam.imag < 0).sum()) == p
    assert torch.all(Lam.imag[:p][1:] > Lam.imag[:p][:-1])
    assert torch.equal(Lam[N - p :], Lam[:p].conj()) and torch.equal(V[:, N - p :], V[:, :p].conj())
    assert torch.all(Lam[p : N - p].imag == 0)


def test_requested_relative_size_is_met():
    A, _ = transition("legs", 16)
    Lam, V, Vinv, info = ptd(A, 0.03, return_info=True)
    assert info["n_repaired"] == 0
    assert ptd_stats(A, Lam, V, Vinv)["rel_perturbation"] == pytest.approx(0.03, rel=1e-9)


def test_complex_perturbation_option():
    N = 8
    A, _ = transition("legs", N)
    Lam, V, Vinv = ptd(A, complex_perturbation=True)
    E = perturbation(A, Lam, V, Vinv)
    assert E.imag.abs().max() > 0.1 * E.real.abs().max()
    stats = ptd_stats(A, Lam, V, Vinv)
    assert stats["kappa"] <= 10 and stats["rel_perturbation"] == pytest.approx(0.05, rel=1e-6)
    assert torch.all(Lam.imag[1:] >= Lam.imag[:-1])


def test_same_seed_gives_identical_result_other_seed_differs():
    A, _ = transition("legs", 16)
    first, again, other = ptd(A, seed=3), ptd(A, seed=3), ptd(A, seed=4)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.allclose(first[0], other[0])


def test_unstable_eigenvalues_are_reflected_and_E_absorbs_the_change():
    A = torch.diag(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    Lam, V, Vinv, info = ptd(A, 0.0, force_stable=True, return_info=True)
    assert torch.all(Lam.imag == 0)
    torch.testing.assert_close(Lam.real.sort().values, torch.tensor([-2.0, -1.0, -0.5], dtype=torch.float64))
    assert info["n_repaired"] == 2
    E = perturbation(A, Lam, V, Vinv)
    torch.testing.assert_close(E.real, torch.diag(torch.tensor([-2.0, 0.0, -1.0], dtype=torch.float64)))
    Lam_raw, _, _, info = ptd(A, 0.0, return_info=True)  # no repair by default
    assert Lam_raw.real.max().item() == pytest.approx(1.0) and info["n_repaired"] == 0


def test_the_default_perturbation_of_an_unstable_matrix_stays_small():
    torch.manual_seed(0)
    A = torch.randn(6, 6, dtype=torch.float64)
    assert torch.linalg.eigvals(A).real.max() > 0.5
    Lam, V, Vinv = ptd(A)
    E = perturbation(A, Lam, V, Vinv)
    rel = torch.linalg.matrix_norm(E, 2) / torch.linalg.matrix_norm(A, 2)
    assert rel.item() == pytest.approx(0.05, rel=1e-6)
    assert Lam.real.max() > 0.5  # the spectrum of A + E, unstable like A's


def test_ptd_legs_repairs_stability_for_the_layers():
    # margin=None leaves some eigenvalues of LegS + E in the right half-plane: ptd_legs reflects them
    Lam, V, Vinv = ptd_legs(16, margin=None, steps=50)
    assert Lam.real.max() <= 0
    raw, _, _ = ptd(transition("legs", 16)[0], margin=None, steps=50)
    assert raw.real.max() > 0
    torch.testing.assert_close(Lam, torch.complex(-raw.real.abs(), raw.imag))


def test_ptd_stats_of_an_exact_normal_diagonalization():
    Lam, _, _, V = nplr("legs", 8, B_clip=None)
    Lam, V = torch.cat([Lam, Lam.conj()]), torch.cat([V, V.conj()], dim=1)
    S = 2 * (V[:, :4] @ torch.diag(Lam[:4]) @ V[:, :4].mH).real
    stats = ptd_stats(S, Lam, V, V.mH)
    assert stats["kappa"] == pytest.approx(1.0, abs=1e-12)
    assert stats["rel_perturbation"] < 1e-14
    assert stats["max_real"] == pytest.approx(-0.5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="square"):
        ptd(torch.ones(3, 4))
    with pytest.raises(ValueError, match="square"):
        ptd(torch.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        ptd(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match="rel_size"):
        ptd(torch.eye(2), -0.1)
    with pytest.raises(ValueError, match="steps"):
        ptd(torch.eye(2), steps=0)
    with pytest.raises(ValueError, match="square"):
        ptd_stats(torch.ones(2, 3), torch.ones(2), torch.eye(2), torch.eye(2))
    with pytest.raises(TypeError, match="rel_sise"):
        ptd_legs(8, rel_sise=0.1)
    with pytest.raises(ValueError, match="N"):
        ptd_legs(0)


# ---------------------------------------------------------------- ptd_legs cache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SSM_CACHE_DIR", str(tmp_path))
    ptd_legs.cache_clear()
    yield tmp_path
    ptd_legs.cache_clear()


def refuse_to_compute(*args, **kwargs):
    raise AssertionError("ptd was called although a cached result exists")


def test_ptd_legs_round_trips_through_the_disk_cache(cache_dir, monkeypatch):
    first = ptd_legs(8, steps=20)
    files = list((cache_dir / "ptd").glob("*.pt"))
    assert len(files) == 1 and not list((cache_dir / "ptd").glob("*.tmp"))
    ptd_legs.cache_clear()
    monkeypatch.setattr(hippo.perturb, "ptd", refuse_to_compute)
    again = ptd_legs(8, steps=20)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    with pytest.raises(AssertionError, match="cached"):
        ptd_legs(8, steps=21)  # other settings, other file


def test_ptd_legs_memo_returns_fresh_copies(cache_dir, monkeypatch):
    Lam = ptd_legs(8, steps=20)[0]
    Lam.zero_()
    monkeypatch.setattr(hippo.perturb, "ptd", refuse_to_compute)
    assert ptd_legs(8, steps=20)[0].abs().min() > 0


def test_ptd_legs_matches_ptd_and_recovers_from_a_corrupt_file(cache_dir):
    want = ptd(transition("legs", 8)[0], steps=20)
    ptd_legs(8, steps=20)
    (path,) = (cache_dir / "ptd").glob("*.pt")
    path.write_bytes(b"not a tensor file")
    ptd_legs.cache_clear()
    for a, b in zip(ptd_legs(8, steps=20), want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["not tensors", "flipped bit", "nan", "zeros"])
def test_ptd_legs_recomputes_a_damaged_cache_file(cache_dir, damage):
    """A file that loads but no longer holds the decomposition (one flipped exponent bit gave
    Λ₀ = -1e308) is recomputed, not returned."""
    want = ptd_legs(8, steps=20)
    (path,) = (cache_dir / "ptd").glob("*.pt")
    payload = torch.load(path, weights_only=True)
    if damage == "not tensors":
        payload.update(Lambda=1, V=2, Vinv=3)
    elif damage == "flipped bit":
        raw = payload["Lambda"].clone()
        view = torch.view_as_real(raw).view(torch.int64)
        view[0, 0] ^= 1 << 61  # an exponent bit of Re Λ₀
        payload["Lambda"] = raw
    elif damage == "nan":
        payload["V"] = torch.full_like(payload["V"], float("nan"))
    else:
        payload["Vinv"] = torch.zeros_like(payload["Vinv"])
    torch.save(payload, path)
    ptd_legs.cache_clear()
    for a, b in zip(ptd_legs(8, steps=20), want):
        assert torch.equal(a, b)
    assert torch.load(path, weights_only=True)["rel_perturbation"] == pytest.approx(0.05)  # rewritten


def test_ptd_legs_settings_may_be_one_element_tensors(cache_dir):
    for a, b in zip(ptd_legs(8, steps=20, rel_size=torch.tensor(0.05, dtype=torch.float64)), ptd_legs(8, steps=20)):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="rel_size must be a number"):
        ptd_legs(8, rel_size=[0.05])


def test_ptd_warns_when_the_eigenvectors_are_dependent():
    with pytest.warns(UserWarning, match="numerically dependent.*larger rel_size"):
        ptd(transition("legs", 32)[0], rel_size=0.0)


def test_ptd_stats_of_zero_and_of_mismatched_shapes():
    zero = torch.zeros(2, 2)
    assert ptd_stats(zero, *ptd(zero))["rel_perturbation"] == 0.0
    Lam, V, Vinv = ptd(transition("legs", 4)[0], steps=5)
    with pytest.raises(ValueError, match=r"Lambda of shape \(4,\)"):
        ptd_stats(transition("legs", 4)[0], Lam[:3], V, Vinv)


def test_ptd_legs_without_a_writable_cache_still_computes(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for value in (str(blocker), ""):
        monkeypatch.setenv("SSM_CACHE_DIR", value)
        ptd_legs.cache_clear()
        Lam, V, Vinv = ptd_legs(8, steps=20)
        assert Lam.shape == (8,) and V.shape == Vinv.shape == (8, 8)
    ptd_legs.cache_clear()
    assert list(tmp_path.iterdir()) == [blocker]


# ------------------------------------------------------- transfer-function claim


@pytest.mark.parametrize("output", ["e0", "gaussian"])
def test_ptd_removes_the_high_frequency_spikes_of_s4d_legs(output):
    """S4D-LegS (the diagonalized normal part, with B/2) has Θ(1) spikes at ω ~ Im λ = Θ(N²),
    far above |G_LegS| there; the PTD system follows G_LegS closely in that band."""
    N = 32
    A, B = transition("legs", N)
    if output == "e0":
        C = torch.zeros(N, dtype=torch.float64)
        C[0] = 1.0
    else:
        C = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Lam_s, _, _, V_s = nplr("legs", N, B_clip=None)
    Lam_s, V_s = torch.cat([Lam_s, Lam_s.conj()]), torch.cat([V_s, V_s.conj()], dim=1)
    Lam_p, V_p, Vinv_p, _ = legs_ptd(N)
    top = Lam_s.imag.max().item()
    poles = torch.cat([Lam_s.imag, Lam_p.imag])
    grid = torch.logspace(math.log10(top / 2), math.log10(10 * N * N), 400, dtype=torch.float64)
    omega = torch.cat([grid, poles[poles >= top / 2]])

    Bc, Cc = B.to(C128), C.to(C128)
    G_legs = transfer_function(A, B, C, omega)
    G_s4d = transfer_function(Lam_s, V_s.mH @ Bc / 2, Cc @ V_s, omega)
    G_ptd = transfer_function(Lam_p, Vinv_p @ Bc, Cc @ V_p, omega)
    scale = G_legs.abs().max()
    s4d_error = (G_s4d - G_legs).abs().max() / scale
    ptd_error = (G_ptd - G_legs).abs().max() / scale
    # Measured at N = 32: S4D about 1e2 to 2e2, PTD about 0.4 to 0.5.
    assert s4d_error > 10
    assert ptd_error < 1.0
    assert ptd_error < s4d_error / 50


def test_ptd_of_a_real_matrix_lists_real_eigenvalues_in_decreasing_order_with_their_eigenvectors():
    """Guards the documented real layout: [Im > 0 ascending, real eigenvalues decreasing, conjugates], V matching."""
    d = torch.tensor([1.0, -2.0, 0.5, -0.1], dtype=torch.float64)
    A = torch.zeros(6, 6, dtype=torch.float64)
    A[:4, :4] = torch.diag(d)
    A[4:, 4:] = torch.tensor([[-0.3, -3.0], [3.0, -0.3]], dtype=torch.float64)  # eigenvalues -0.3 ± 3i
    Lam, V, Vinv = ptd(A, 0.0)
    expected = torch.tensor([-0.3 + 3j, 1.0, 0.5, -0.1, -2.0, -0.3 - 3j], dtype=C128)
    torch.testing.assert_close(Lam, expected, rtol=0, atol=1e-12)
    for k, idx in enumerate([0, 2, 3, 1], start=1):  # the real eigenvectors are the unit vectors e_idx
        col = torch.zeros(6, dtype=C128)
        col[idx] = 1.0
        torch.testing.assert_close(V[:, k], col, rtol=0, atol=1e-12)
    torch.testing.assert_close(A.to(C128) @ V, V * Lam, rtol=0, atol=1e-12)


def test_ptd_of_a_complex_matrix_sorts_by_imaginary_part_then_decreasing_real_part():
    """Guards the complex layout: eigenvalues by increasing Im, ties by decreasing Re, with matching eigenvectors."""
    lam = torch.tensor([-1 + 1j, -3 + 1j, -2 + 0j, -0.5 - 2j], dtype=C128)
    Lam, V, Vinv = ptd(torch.diag(lam), 0.0)
    order = [3, 2, 0, 1]
    torch.testing.assert_close(Lam, lam[order], rtol=0, atol=1e-12)
    torch.testing.assert_close(V.abs(), torch.eye(4, dtype=torch.float64)[:, order], rtol=0, atol=1e-12)


def test_ptd_stats_fields_match_their_definitions_on_a_non_normal_basis():
    """Guards ptd_stats: κ₂(V) = σ_max/σ_min, ||E||₂/||A||₂, ||V Vinv - I||₂, max Re, min |Re|, max |Im| Λ."""
    import numpy as np

    g = torch.Generator().manual_seed(11)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    V = torch.tensor([[1.0, 0.9, 0.2], [0.0, 0.3, 0.5], [0.1, 0.0, 1.0]], dtype=torch.float64).to(C128)
    Lam = torch.tensor([-0.3 + 2j, 0.4 - 5j, -1.0 + 0j], dtype=C128)
    Vinv = torch.linalg.inv(V)
    stats = ptd_stats(A, Lam, V, Vinv)
    Vn, An, Ln = V.numpy(), A.numpy(), Lam.numpy()
    s = np.linalg.svd(Vn, compute_uv=False)
    E = Vn @ np.diag(Ln) @ np.linalg.inv(Vn) - An
    assert stats["kappa"] == pytest.approx(s.max() / s.min(), rel=1e-10) and stats["kappa"] > 2
    assert stats["rel_perturbation"] == pytest.approx(np.linalg.norm(E, 2) / np.linalg.norm(An, 2), rel=1e-10)
    assert stats["residual"] < 1e-12
    assert stats["max_real"] == pytest.approx(0.4)
    assert stats["min_abs_real"] == pytest.approx(0.3)
    assert stats["max_imag"] == pytest.approx(5.0)
