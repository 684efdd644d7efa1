import math
import sys

import pytest
import torch

import ssm.transfer
from ssm.hippo import transition
from ssm.transfer import plot_transfer, transfer_function
from tests.tolerances import assert_close

C128 = torch.complex128


def well_conditioned_system(N, generator):
    """A = V diag(lam) V^-1 with V = I + 0.1 G (kappa ~ 2) and stable lam."""
    lam = torch.complex(-0.1 - torch.rand(N, generator=generator, dtype=torch.float64),
                        5 * torch.randn(N, generator=generator, dtype=torch.float64))
    G = torch.randn(N, N, generator=generator, dtype=C128)
    V = torch.eye(N, dtype=C128) + 0.1 * G / math.sqrt(N)
    return lam, V, V @ torch.diag(lam) @ torch.linalg.inv(V)


def inverse_loop(A, B, C, omega):
    """G[o, i, w] by an explicit inverse per frequency (the slow oracle)."""
    A, B, C = (t.to(C128) for t in (A, B, C))
    eye = torch.eye(A.shape[0], dtype=C128)
    return torch.stack([C @ torch.linalg.inv(1j * w * eye - A) @ B for w in omega.tolist()], dim=-1)


def test_dense_matches_diagonal_form_for_mimo_system():
    g = torch.Generator().manual_seed(0)
    N, H_in, H_out = 12, 3, 2
    lam, V, A = well_conditioned_system(N, g)
    B = torch.randn(N, H_in, generator=g, dtype=C128)
    C = torch.randn(H_out, N, generator=g, dtype=C128)
    omega = torch.logspace(-2, 3, 50, dtype=torch.float64)
    dense = transfer_function(A, B, C, omega)
    diagonal = transfer_function(lam, torch.linalg.solve(V, B), C @ V, omega)
    assert dense.shape == diagonal.shape == (H_out, H_in, 50)
    assert_close(dense, diagonal)


def test_dense_matches_per_frequency_inverse():
    g = torch.Generator().manual_seed(1)
    N = 9
    A = torch.randn(N, N, generator=g, dtype=torch.float64) - 3 * torch.eye(N, dtype=torch.float64)
    B = torch.randn(N, 2, generator=g, dtype=torch.float64)
    C = torch.randn(4, N, generator=g, dtype=torch.float64)
    omega = torch.linspace(-20, 20, 41, dtype=torch.float64)
    assert_close(transfer_function(A, B, C, omega), inverse_loop(A, B, C, omega))


def test_diagonal_matches_per_frequency_inverse_of_diag():
    g = torch.Generator().manual_seed(2)
    lam, _, _ = well_conditioned_system(6, g)
    B = torch.randn(6, generator=g, dtype=C128)
    C = torch.randn(6, generator=g, dtype=C128)
    omega = torch.logspace(-1, 2, 30, dtype=torch.float64)
    want = inverse_loop(torch.diag(lam), B[:, None], C[None, :], omega)[0, 0]
    assert_close(transfer_function(lam, B, C, omega), want)


def test_legs_first_state_is_a_first_order_low_pass():
    # x_0' = -x_0 + u for HiPPO-LegS, so C = e_0 gives G(iω) = 1 / (1 + iω) exactly.
    N = 32
    A, B = transition("legs", N)
    C = torch.zeros(N, dtype=torch.float64)
    C[0] = 1.0
    omega = torch.logspace(-2, 4, 60, dtype=torch.float64)
    assert_close(transfer_function(A, B, C, omega), 1 / (1 + 1j * omega))


@pytest.mark.parametrize(
    "B_shape, C_shape, out_shape",
    [((5,), (5,), (7,)), ((5, 3), (5,), (1, 3, 7)), ((5,), (2, 5), (2, 1, 7)), ((5, 3), (2, 5), (2, 3, 7))],
)
@pytest.mark.parametrize("diagonal", [False, True])
def test_output_shapes_and_dtype(B_shape, C_shape, out_shape, diagonal):
    A = -torch.arange(1.0, 6.0, dtype=torch.float64)
    A = A if diagonal else torch.diag(A)
    G = transfer_function(A, torch.ones(B_shape), torch.ones(C_shape, dtype=torch.float32), torch.linspace(0, 1, 7))
    assert G.shape == out_shape and G.dtype == C128


def test_single_mode_closed_form():
    lam = torch.tensor([-0.5 + 3.0j], dtype=C128)
    omega = torch.tensor([0.0, 3.0, 10.0], dtype=torch.float64)
    G = transfer_function(lam, torch.tensor([2.0 + 0j]), torch.tensor([1.5 + 0j]), omega)
    assert_close(G, 3.0 / (1j * omega - lam))
    assert abs(G[1]) == pytest.approx(6.0)  # the spike |C B| / |Re λ| at ω = Im λ


def test_dense_solves_in_chunks_give_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(3)
    A = torch.randn(8, 8, generator=g, dtype=torch.float64) - 4 * torch.eye(8, dtype=torch.float64)
    B, C = torch.randn(8, 2, generator=g), torch.randn(3, 8, generator=g)
    omega = torch.logspace(-2, 2, 25, dtype=torch.float64)
    whole = transfer_function(A, B, C, omega)
    monkeypatch.setattr(ssm.transfer, "_CHUNK_ENTRIES", 3 * 64)  # 3 frequencies per solve
    assert_close(transfer_function(A, B, C, omega), whole)


def test_bad_shapes_raise_value_error():
    A, B, C, w = torch.eye(4), torch.ones(4), torch.ones(4), torch.ones(3)
    with pytest.raises(ValueError, match=r"A of shape \(N, N\)"):
        transfer_function(torch.ones(4, 3), B, C, w)
    with pytest.raises(ValueError, match=r"A of shape"):
        transfer_function(torch.ones(2, 2, 2), B, C, w)
    with pytest.raises(ValueError, match=r"B of shape .* N = 4, got \(5,\)"):
        transfer_function(A, torch.ones(5), C, w)
    with pytest.raises(ValueError, match=r"B of shape"):
        transfer_function(A, torch.ones(3, 4), C, w)
    with pytest.raises(ValueError, match=r"C of shape .* got \(4, 2\)"):
        transfer_function(A, B, torch.ones(4, 2), w)
    with pytest.raises(ValueError, match="omega"):
        transfer_function(A, B, C, torch.ones(2, 2))
    with pytest.raises(ValueError, match="omega"):
        transfer_function(A, B, C, torch.ones(2, dtype=C128))


def test_plot_transfer_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_transfer(torch.ones(3), {"G": torch.ones(3)})


def test_plot_transfer_draws_one_line_per_curve():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    omega = torch.logspace(-1, 2, 20)
    G = transfer_function(torch.tensor([-1.0 + 0j]), torch.ones(1), torch.ones(2, 1), omega)
    ax = plot_transfer(omega, {"a": G[0, 0], "b": G})
    assert len(ax.get_lines()) == 3
    assert ax.get_xscale() == ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="last dimension"):
        plot_transfer(omega, {"bad": torch.ones(3)}, ax=ax)


def test_layer_transfer_checks_omega_and_chunk_like_transfer_function():
    from ssm.transfer import has_transfer, layer_transfer

    layer = ssm.S4D(3, d_state=4)
    assert layer_transfer(layer, [1.0, 2.0]).shape == (3, 2) and layer_transfer(layer, 1.5).shape == (3, 1)
    for omega in (torch.ones(3, 2), torch.ones(3, dtype=torch.complex64)):
        with pytest.raises(ValueError, match="expected real omega of shape"):
            layer_transfer(layer, omega)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        layer_transfer(layer, torch.ones(3), chunk=0)
    assert has_transfer(layer) and has_transfer(ssm.S5(3, 4)) and not has_transfer(ssm.DSS(3, 4))
    assert not has_transfer(ssm.Mamba(4))
    with pytest.raises(TypeError, match="S4D, S4PTD, S5 and S5PTD have one"):
        layer_transfer(ssm.DSS(3, 4), torch.ones(3))
    from ssm.robustness import spike_frequency

    assert spike_frequency(layer, omega=[5.0, 50.0, 500.0]) in (5.0, 50.0, 500.0)


def test_transfer_function_of_no_states_raises():
    with pytest.raises(ValueError, match="no states"):
        transfer_function(torch.zeros(0, 0), torch.zeros(0), torch.zeros(0), torch.ones(3))


def diagonal_layer_transfer_by_hand(C, B, lam, omega, scale):
    """Σ_n w_n / (iω - λ_n) + conj(w_n) / (iω - conj λ_n), w = scale · C B, per channel by a loop."""
    H, n = lam.shape
    G = torch.zeros(H, len(omega), dtype=C128)
    for h in range(H):
        for k in range(n):
            w = scale * C[h, k] * B[h, k]
            for j, om in enumerate(omega.tolist()):
                G[h, j] += w / (1j * om - lam[h, k]) + w.conj() / (1j * om - lam[h, k].conj())
    return G


@pytest.mark.parametrize("chunk", [1, 2, 1024])
def test_layer_transfer_of_a_bidirectional_s4d_uses_the_forward_C_in_any_chunking(chunk):
    """Guards layer_transfer: chunks concatenated along ω, and the forward-direction C[0] of a bidirectional layer."""
    from ssm.transfer import layer_transfer

    torch.manual_seed(6)
    layer = ssm.S4D(3, d_state=6, bidirectional=True).double()
    _, lam, B, C = (t.detach().to(C128) for t in layer.continuous())
    assert C.shape[0] == 2 and not torch.allclose(C[0], C[1])
    omega = torch.tensor([0.0, 0.3, 2.0, 7.5, 40.0], dtype=torch.float64)
    expected = diagonal_layer_transfer_by_hand(C[0], B, lam, omega, 1.0)
    got = layer_transfer(layer, omega, chunk=chunk)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_layer_transfer_of_s5_in_chunks_matches_the_mimo_formula():
    """Guards layer_transfer of S5: G_hk = s/2 Σ_n [C B / (iω - λ) + conj(C B) / (iω - conj λ)], any chunk."""
    from ssm.transfer import layer_transfer

    torch.manual_seed(7)
    layer = ssm.S5(2, d_state=4).double()
    _, lam, B, C = (t.detach().to(C128) for t in layer.continuous())
    C0 = C[0]
    omega = torch.tensor([0.0, 0.5, 3.0], dtype=torch.float64)
    expected = torch.zeros(2, 2, 3, dtype=C128)
    for h in range(2):
        for k in range(2):
            for n in range(lam.shape[0]):
                w = layer.output_scale / 2 * C0[h, n] * B[n, k]
                for j, om in enumerate(omega.tolist()):
                    expected[h, k, j] += w / (1j * om - lam[n]) + w.conj() / (1j * om - lam[n].conj())
    for chunk in (1, 2, 1024):
        torch.testing.assert_close(layer_transfer(layer, omega, chunk=chunk), expected, rtol=1e-12, atol=1e-12)
