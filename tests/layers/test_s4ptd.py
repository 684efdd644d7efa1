"""ssm.S4PTD against the sequential recurrence of its N complex modes, read out with 2·Re as in
the S4-PTD code, and the perturbed LegS system it is built from."""

import pytest
import torch
from reference import (
    backward_recurrence,
    bilinear_explicit,
    check_gradients_against_reference,
    diagonal_recurrence,
    kernel_by_powers,
    run_steps,
    zoh_by_matrix_exp,
)
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
    assert_close(layer(x), diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach(), scale=2.0))
    assert_close(layer.kernel(L), kernel_by_powers(Abar, Bbar, C[0], L, scale=2.0))


def test_bidirectional_adds_the_anticausal_recurrence():
    torch.manual_seed(1)
    layer = ssm.S4PTD(H, d_state=6, bidirectional=True).double()
    Abar, Bbar, C = discretize(layer)
    x = torch.randn(2, 21, H, dtype=F64)
    expected = diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach(), scale=2.0)
    expected = expected + backward_recurrence(Abar, Bbar, C[1], x, scale=2.0)
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


def test_a_ptd_spectrum_with_unstable_modes_still_gives_a_stable_layer():
    """With the repair off (``force_stable=False``) and a large perturbation barely optimized,
    ptd returns eigenvalues with Re λ > 0, which A = -exp(log_A_real) + i A_imag cannot hold:
    the layer still starts finite and stable, with its stable modes at Λ."""
    torch.manual_seed(8)
    settings = dict(rel_size=0.5, steps=1, margin=None, force_stable=False)
    Lam = ptd_legs(6, **settings)[0]
    assert (Lam.real > 0).any() and (Lam.real < -1e-4).any()
    layer = ssm.S4PTD(H, d_state=6, ptd=settings).double()
    for name, p in layer.named_parameters():
        assert torch.isfinite(p).all(), name
    A = layer.continuous()[1].detach()
    assert (A.real < 0).all()
    stable = Lam.real < -1e-4
    assert_close(A[:, stable], Lam[stable].expand(H, -1), dtype=torch.float32)
    x = torch.randn(2, 50, H, dtype=F64)
    Abar, Bbar, C = discretize(layer)
    assert_close(layer(x), diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach()))


# --- Backward pass against an independent float64 reference ---------------------------------
#
# As in test_s4d.py: the reference reads the raw parameters (log_dt, log_A_real, A_imag, B, C,
# D), forms Δ = exp(log_dt), A = -exp(log_A_real) + i A_imag, discretizes by the math reference
# (ZOH: matrix exponential of [[ΔA, ΔB], [0, 0]]; bilinear: the explicit formulas) and runs the
# sequential recurrence of all N modes with output 2 Re(C x) (math.md §5.2: the S4D kernel with
# 2·Re, as the S4-PTD code computes it).

PTD = {"rel_size": 0.1, "seed": 1, "complex_perturbation": True}  # a non-default ptd_legs setting


def reference_forward(params, x, disc):
    """Float64 output on x (B, L, H), differentiable in x and the raw parameters."""
    dt = torch.exp(params["log_dt"]).to(C128)[:, None]
    A = torch.complex(-torch.exp(params["log_A_real"]), params["A_imag"])
    B = torch.view_as_complex(params["B"])
    C = torch.view_as_complex(params["C"])
    Abar, Bbar = (zoh_by_matrix_exp if disc == "zoh" else bilinear_explicit)(dt, A, B)
    y = diagonal_recurrence(Abar, Bbar, C[0], x, params["D"], scale=2.0)
    if C.shape[0] == 2:
        y = y + backward_recurrence(Abar, Bbar, C[1], x, scale=2.0)
    return y


def check_against_reference(layer, disc, L, run=None):
    """Output and gradients of the float64 layer against autograd through the reference."""
    check_gradients_against_reference(layer, lambda params, x: reference_forward(params, x, disc), L, run=run,
                                      names={"log_dt", "log_A_real", "A_imag", "B", "C", "D"})


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("N, ptd", [(5, None), (7, PTD)], ids=["N5", "N7-ptd"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L", [1, 13])
def test_gradients_match_float64_reference(disc, N, ptd, bidirectional, L):
    """Odd N (no conjugate pairs), odd d_model = 3, L = 1 and an odd L."""
    torch.manual_seed(6)
    layer = ssm.S4PTD(H, d_state=N, disc=disc, bidirectional=bidirectional, ptd=ptd,
                      dt_min=0.01, dt_max=0.3).double()
    check_against_reference(layer, disc, L)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("N, ptd", [(5, None), (7, PTD)], ids=["N5", "N7-ptd"])
def test_step_matches_forward_and_reference_gradients(disc, N, ptd):
    torch.manual_seed(7)
    layer = ssm.S4PTD(H, d_state=N, disc=disc, ptd=ptd, dt_min=0.01, dt_max=0.3).double()
    assert layer.init_state(2).shape == (2, H, N)
    x = torch.randn(2, 13, H, dtype=F64)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))
    check_against_reference(layer, disc, 13, run=run_steps)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_step_matches_forward_float32_odd_n(disc):
    torch.manual_seed(8)
    layer = ssm.S4PTD(H, d_state=7, disc=disc).eval()
    x = torch.randn(2, 40, H)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))


def test_ptd_argument_sets_the_starting_point():
    """ptd= is passed to ptd_legs: A = Λ and B = Ṽ⁻¹ B_LegS of that factorization, not the default's."""
    torch.manual_seed(9)
    N = 7
    Lam, _, Vinv = ptd_legs(N, **PTD)
    _, B_legs = transition("legs", N)
    _, A, B, _ = (t.detach().to(C128) for t in ssm.S4PTD(H, d_state=N, ptd=PTD).continuous())
    assert_close(A, torch.complex(Lam.real.clamp(max=-1e-4), Lam.imag).expand(H, -1), dtype=torch.float32)
    assert_close(B, (Vinv @ B_legs.to(C128)).expand(H, -1), dtype=torch.float32)
    default_A = ssm.S4PTD(H, d_state=N).continuous()[1].detach().to(C128)
    assert (A - default_A).abs().max() > 0.1


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_one_tied_ssm_copy_matches_the_reference(disc):
    """n_ssm = 1 (the S4-PTD paper's LRA setting): every channel reads the one (A, B)."""
    torch.manual_seed(9)
    layer = ssm.S4PTD(H, d_state=5, disc=disc, n_ssm=1, dt_min=0.01, dt_max=0.3).double()
    assert layer.log_A_real.shape == (1, 5) and layer.B.shape == (1, 5, 2) and layer.C.shape == (1, H, 5, 2)

    def reference(params, x):
        spread = {k: params[k].expand(H, *params[k].shape[1:]) for k in ("log_A_real", "A_imag", "B")}
        return reference_forward({**params, **spread}, x, disc)

    check_gradients_against_reference(layer, reference, 11)
    layer.zero_grad()
    check_gradients_against_reference(layer, reference, 11, run=run_steps)
