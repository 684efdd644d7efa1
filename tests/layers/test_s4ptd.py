"""ssm.S4PTD against the sequential recurrence of its N complex modes and the perturbed LegS
system it is built from."""

import pytest
import torch
from reference import backward_recurrence, diagonal_recurrence, kernel_by_powers, run_steps
from tolerances import assert_close

import ssm
from ssm.hippo import ptd_legs, transition

C128, F64 = torch.complex128, torch.float64
H = 3


def discretize(layer):
    dt, A, B, C = (t.detach().to(C128) for t in layer.continuous())
    dtA = dt[:, None] * A
    if layer.disc == "zoh":
        return torch.exp(dtA), (torch.exp(dtA) - 1) / A * B, C
    return (1 + dtA / 2) / (1 - dtA / 2), dt[:, None] / (1 - dtA / 2) * B, C


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("N", [4, 7])
@pytest.mark.parametrize("L", [1, 33])
def test_forward_and_kernel_match_recurrence_of_all_n_modes(disc, N, L):
    torch.manual_seed(0)
    layer = ssm.S4PTD(H, d_state=N, disc=disc).double()
    Abar, Bbar, C = discretize(layer)
    assert Abar.shape == (H, N) and C.shape == (1, H, N)
    x = torch.randn(2, L, H, dtype=F64)
    assert_close(layer(x), diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach(), scale=1.0))
    assert_close(layer.kernel(L), kernel_by_powers(Abar, Bbar, C[0], L, scale=1.0))


def test_bidirectional_adds_the_anticausal_recurrence():
    torch.manual_seed(1)
    layer = ssm.S4PTD(H, d_state=6, bidirectional=True).double()
    Abar, Bbar, C = discretize(layer)
    x = torch.randn(2, 21, H, dtype=F64)
    expected = diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach(), scale=1.0)
    expected = expected + backward_recurrence(Abar, Bbar, C[1], x, scale=1.0)
    assert_close(layer(x), expected)
    assert layer.kernel(21).shape == (2, H, 21)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_step_matches_forward(dtype):
    torch.manual_seed(2)
    layer = ssm.S4PTD(H, d_state=8).to(dtype).eval()
    x = torch.randn(2, 40, H, dtype=dtype)
    assert layer.init_state(2).shape == (2, H, 8)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))


def test_init_is_the_ptd_diagonalization_of_legs_with_real_b_and_c():
    """A = Λ, and B, C map back through Ṽ to the real LegS B and a real Gaussian C."""
    torch.manual_seed(3)
    N = 16
    layer = ssm.S4PTD(H, d_state=N)
    Lam, V, Vinv = ptd_legs(N)
    _, A, B, C = (t.detach().to(C128) for t in layer.continuous())
    assert_close(A, Lam.expand(H, -1), dtype=torch.float32)
    _, B_legs = transition("legs", N)
    assert_close(B @ V.T, B_legs.to(C128).expand(H, -1), dtype=torch.float32)
    C0 = C[0] @ Vinv
    assert C0.imag.abs().max() < 1e-4 * C0.abs().max()
    assert 0.3 < C0.real.std().item() < 3.0


def test_kernel_at_init_is_close_to_the_legs_kernel_for_small_perturbations():
    """Re(C e^{tΛ} B) ≈ C₀ e^{tA_LegS} B_LegS: the perturbation is small relative to A."""
    torch.manual_seed(4)
    N = 8
    layer = ssm.S4PTD(1, d_state=N).double()
    _, A, B, C = (t.detach().to(C128) for t in layer.continuous())
    C0 = (C[0] @ ptd_legs(N)[2]).real
    A_legs, B_legs = transition("legs", N)
    for t in (0.05, 0.2, 1.0):
        diag = (C[0] * torch.exp(A * t) * B).sum(-1).real
        dense = C0 @ torch.linalg.matrix_exp(t * A_legs) @ B_legs
        scale = (C0.abs() @ torch.linalg.matrix_exp(t * A_legs).abs() @ B_legs.abs())
        assert (diag - dense).abs().item() < 0.5 * scale.item()


def test_gradients_and_errors():
    torch.manual_seed(5)
    layer = ssm.S4PTD(H, d_state=5, bidirectional=True)
    layer(torch.randn(2, 9, H)).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="disc must be one of"):
        ssm.S4PTD(H, d_state=4, disc="euler")
    with pytest.raises(ValueError, match="positive integer"):
        ssm.S4PTD(H, d_state=0)
    with pytest.raises(ValueError, match=r"\(batch, length, 3\)"):
        ssm.S4PTD(H, d_state=4)(torch.randn(2, 5, 4))
