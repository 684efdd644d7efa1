"""CompanionSSM, ShiftSSM and the fixed preprocessing SSMs against a float64 recurrence with
the dense companion matrix, step vs forward, and the AR(p) representation (math §8.5)."""

import numpy as np
import pytest
import torch
from reference import companion_kernel_by_powers, run_steps
from tolerances import assert_close, assert_close_summed

import ssm
from ssm.data.autoregressive import stable_ar_coefficients
from ssm.layers.companion import differencing_kernel, l1_normalized, moving_average_residual_kernel

F64 = torch.float64


def dense_A(a: torch.Tensor) -> torch.Tensor:
    """S + a e_dᵀ for a (n, d): (n, d, d)."""
    n, d = a.shape
    A = torch.zeros(n, d, d, dtype=F64)
    A[:, torch.arange(1, d), torch.arange(d - 1)] = 1.0
    A[:, :, -1] += a.to(F64)
    return A


def companion_loop(a, b, c, D, x, group):
    """x_t = A x_{t-1} + b u_t, y_t = cᵀx_t + D u_t per channel h (set h // group): float64 (B, L, H)."""
    a, b, c = (t.to(F64).repeat_interleave(group, 0) for t in (a, b, c))
    A = dense_A(a)
    B, L, H = x.shape
    state = torch.zeros(B, H, a.shape[1], dtype=F64)
    out = []
    for t in range(L):
        u = x[:, t].to(F64)
        state = torch.einsum("hij,bhj->bhi", A, state) + b * u[..., None]
        y = (c * state).sum(-1)
        out.append(y if D is None else y + D.to(F64) * u)
    return torch.stack(out, 1)


def layer_coefficients(layer):
    a, b, c = layer.coefficients()
    return a.detach(), b.detach(), c.detach()


@pytest.mark.parametrize("H, d, n_kernels, L", [(4, 5, 2, 13), (3, 1, 3, 4), (6, 8, 1, 1), (2, 7, 2, 3), (4, 4, 4, 33),
                                           (2, 64, 2, 1), (2, 64, 1, 9)])  # d = 64, raw a: ||a||_1 ≈ 50
@pytest.mark.parametrize("norm_order", [0, 1])
def test_forward_matches_dense_recurrence(H, d, n_kernels, L, norm_order):
    torch.manual_seed(0)
    layer = ssm.CompanionSSM(H, d_state=d, n_kernels=n_kernels, norm_order=norm_order).double()
    x = torch.randn(2, L, H, dtype=F64)
    a, b, c = layer_coefficients(layer)
    expected = companion_loop(a, b, c, layer.D.detach(), x, H // n_kernels)
    assert_close_summed(layer(x), expected)


def test_norm_order_1_divides_a_by_its_l1_norm():
    torch.manual_seed(1)
    layer = ssm.CompanionSSM(4, d_state=6, n_kernels=2)
    a = layer.coefficients()[0]
    torch.testing.assert_close(a, layer.a / layer.a.abs().sum(-1, keepdim=True))
    torch.testing.assert_close(a.abs().sum(-1), torch.ones(2))


def test_l1_normalized_companion_spectrum_is_inside_the_unit_disk():
    torch.manual_seed(2)
    a = l1_normalized(torch.randn(200, 12, dtype=F64))
    assert torch.linalg.eigvals(dense_A(a)).abs().max() <= 1 + 1e-9
    tiny = torch.full((1, 3), 1e-6)
    torch.testing.assert_close(l1_normalized(tiny), tiny / 1e-4)  # below the threshold: no blow-up


@pytest.mark.parametrize("layer_kwargs", [dict(), dict(n_kernels=2), dict(skip=False), dict(norm_order=0)])
def test_step_matches_forward(layer_kwargs):
    torch.manual_seed(3)
    layer = ssm.CompanionSSM(4, d_state=5, **layer_kwargs).double().eval()
    x = torch.randn(3, 11, 4, dtype=F64)
    assert_close(run_steps(layer, x), layer(x))
    assert layer.init_state(3).shape == (3, 4, 5)


def test_kernel_is_cT_A_k_b_per_group():
    torch.manual_seed(4)
    layer = ssm.CompanionSSM(6, d_state=4, n_kernels=3).double()
    a, b, c = layer_coefficients(layer)
    k = layer.kernel(9)
    assert k.shape == (6, 9)
    assert_close_summed(k, companion_kernel_by_powers(a, b, c, 9).repeat_interleave(2, 0))


def test_gradients_match_the_recurrence():
    torch.manual_seed(5)
    layer = ssm.CompanionSSM(4, d_state=5, n_kernels=2).double()
    x = torch.randn(2, 9, 4, dtype=F64, requires_grad=True)
    w = torch.randn(2, 9, 4, dtype=F64)
    (layer(x) * w).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in (layer.a, layer.b, layer.c, layer.D)]
    x2 = x.detach().clone().requires_grad_(True)
    leaves = [p.detach().clone().requires_grad_(True) for p in (layer.a, layer.b, layer.c, layer.D)]
    a = leaves[0] / leaves[0].abs().sum(-1, keepdim=True)
    (companion_loop(a, leaves[1], leaves[2], leaves[3], x2, 2) * w).sum().backward()
    for g, e in zip(got, [x2.grad] + [t.grad for t in leaves]):
        assert_close_summed(g, e)


def test_step_gradients_match_the_recurrence():
    """Guards that step keeps its state in the graph: gradients of x, a, b, c and D through L steps
    equal those of the float64 recurrence (a state cut from the graph would drop every earlier step)."""
    torch.manual_seed(11)
    layer = ssm.CompanionSSM(4, d_state=5, n_kernels=2).double()
    x = torch.randn(2, 7, 4, dtype=F64, requires_grad=True)
    w = torch.randn(2, 7, 4, dtype=F64)
    (run_steps(layer, x) * w).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in (layer.a, layer.b, layer.c, layer.D)]
    x2 = x.detach().clone().requires_grad_(True)
    leaves = [p.detach().clone().requires_grad_(True) for p in (layer.a, layer.b, layer.c, layer.D)]
    a = leaves[0] / leaves[0].abs().sum(-1, keepdim=True)
    (companion_loop(a, leaves[1], leaves[2], leaves[3], x2, 2) * w).sum().backward()
    for name, g, e in zip(["x", "a", "b", "c", "D"], got, [x2.grad] + [t.grad for t in leaves]):
        assert_close_summed(g, e, msg=name)


def test_b_e1_with_zero_lr_is_a_fixed_buffer_and_kernel_starts_with_c():
    layer = ssm.CompanionSSM(3, d_state=4, b_init="e1", lr={"b": 0.0, "a": 1e-3})
    assert "b" not in dict(layer.named_parameters()) and torch.equal(layer.b[:, 0], torch.ones(3))
    assert layer.a._optim == {"lr": 1e-3, "weight_decay": 0.0} and not hasattr(layer.c, "_optim")
    torch.testing.assert_close(layer.kernel(4), layer.c.detach(), rtol=1e-5, atol=1e-5)  # A^k e_1 = e_{k+1}


def test_shift_ssm_is_a_causal_fir_filter():
    torch.manual_seed(6)
    layer = ssm.ShiftSSM(3, d_state=4).double().eval()
    assert {n for n, _ in layer.named_parameters()} == {"c", "D"}
    x = torch.randn(2, 10, 3, dtype=F64)
    c, D = layer.c.detach(), layer.D.detach()
    expected = D * x
    for k in range(4):
        expected[:, k:] += c[:, k] * x[:, : 10 - k]
    assert_close(layer(x), expected)
    assert_close(run_steps(layer, x), expected)
    assert layer.kernel(2).shape == (3, 2) and torch.equal(layer.kernel(6)[:, 4:], torch.zeros(3, 2, dtype=F64))
    a, b, _ = layer_coefficients(layer)
    assert_close(layer.kernel(7), companion_kernel_by_powers(a, b, c, 7))


def test_shift_ssm_keeps_its_fixed_a_and_b_out_of_the_state_dict():
    """a = 0 and b = e_1 are not loadable: a companion checkpoint, whose a and b are free, is
    refused (it used to load and make step disagree with forward, which uses c alone); an
    older shift checkpoint that stored the fixed values still loads."""
    torch.manual_seed(16)
    layer = ssm.ShiftSSM(4, d_state=6).double()
    assert set(layer.state_dict()) == {"c", "D"}
    with pytest.raises(RuntimeError, match="a is fixed"):
        layer.load_state_dict(ssm.CompanionSSM(4, d_state=6).double().state_dict())
    assert torch.equal(layer.a, torch.zeros(4, 6, dtype=F64)) and torch.equal(layer.b[:, 0], torch.ones(4, dtype=F64))
    source = ssm.ShiftSSM(4, d_state=6)
    older = {**source.state_dict(), "a": torch.zeros(4, 6), "b": source.b.clone()}
    layer.load_state_dict(older)
    assert torch.equal(layer.c, source.c.double())
    x = torch.randn(2, 9, 4, dtype=F64)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))


@pytest.mark.parametrize("L", [9, 3])
def test_shift_ssm_with_shared_taps_forward_and_gradients(L):
    """Guards ShiftSSM.kernel: n_kernels < d_model gives channel h the taps of set h // (H / n), L < d
    truncates them, and gradients reach x, c and D (against the FIR filter written as a loop)."""
    torch.manual_seed(12)
    layer = ssm.ShiftSSM(6, d_state=4, n_kernels=3).double()
    x = torch.randn(2, L, 6, dtype=F64, requires_grad=True)
    w = torch.randn(2, L, 6, dtype=F64)
    y = layer(x)
    (y * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    c, D = (p.detach().clone().requires_grad_(True) for p in (layer.c, layer.D))
    taps = c.repeat_interleave(2, dim=0)  # (6, 4): channels 2s and 2s + 1 share set s
    expected = D * x2
    for k in range(min(4, L)):  # y_t += c_k u_{t-k}
        expected = expected + torch.cat([torch.zeros(2, k, 6, dtype=F64), taps[:, k] * x2[:, : L - k]], dim=1)
    assert_close(y, expected)
    (expected * w).sum().backward()
    for name, g, e in (("x", x.grad, x2.grad), ("c", layer.c.grad, c.grad), ("D", layer.D.grad, D.grad)):
        assert_close_summed(g, e, msg=name)


def test_differencing_and_moving_average_kernels():
    assert differencing_kernel(0).tolist() == [1.0]
    assert differencing_kernel(1).tolist() == [1.0, -1.0]
    assert differencing_kernel(2).tolist() == [1.0, -2.0, 1.0]
    assert differencing_kernel(3).tolist() == [1.0, -3.0, 3.0, -1.0]
    torch.testing.assert_close(moving_average_residual_kernel(4), torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=F64))
    with pytest.raises(ValueError, match="non-negative"):
        differencing_kernel(-1)
    with pytest.raises(ValueError, match="positive"):
        moving_average_residual_kernel(0)


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(previous)


def test_residual_ssm_differences_and_subtracts_moving_averages(float64_default):
    torch.manual_seed(7)
    layer = ssm.ResidualSSM(16, max_avg_window=9)
    assert layer.c.dtype == F64
    assert not list(layer.parameters())
    x = torch.randn(2, 30, 16, dtype=F64)
    y = layer(x)
    u = x.numpy()
    for h in range(16):
        series = u[:, :, h]
        if h % 8 < 4:
            expected = series.copy()
            for _ in range(h % 8):
                expected = expected - np.pad(expected, ((0, 0), (1, 0)))[:, :-1]
        else:
            w = layer.windows[h]
            assert 4 <= w < 9
            padded = np.pad(series, ((0, 0), (w - 1, 0)))
            expected = series - np.stack([padded[:, t : t + w].mean(1) for t in range(30)], 1)
        np.testing.assert_allclose(y[:, :, h].numpy(), expected, rtol=1e-9, atol=1e-9)
    assert_close(run_steps(layer.eval(), x), y)


def test_fixed_kernel_ssm_keeps_its_own_copy_of_the_taps():
    """The taps are the layer's: changing the caller's tensor afterwards (here already in the
    default dtype, so no cast copies it) leaves the layer's filter as it was built."""
    torch.manual_seed(9)
    taps = torch.randn(3, 4)
    original = taps.clone()
    layer = ssm.FixedKernelSSM(taps)
    taps.zero_()
    assert torch.equal(layer.kernel(4), original)
    x = torch.randn(2, 7, 3)
    expected = sum(original[:, k] * torch.nn.functional.pad(x, (0, 0, k, 0))[:, :7] for k in range(4))
    assert_close(layer(x), expected)


def test_residual_ssm_state_dict_keeps_its_windows():
    torch.manual_seed(8)
    a = ssm.ResidualSSM(8, max_avg_window=20)
    b = ssm.ResidualSSM(8, max_avg_window=20)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 25, 8)
    torch.testing.assert_close(a(x), b(x))


def test_companion_ssm_represents_an_ar_process_with_a_as_its_coefficients():
    """math §8.5: driven by the innovations ε, the companion SSM with B = e_1 outputs the AR(p)
    process when χ(z) = z^p - Σ φ_j z^{p-j}, i.e. a = (φ_p, ..., φ_1). Fit a, c from (ε, u)
    and recover φ in a."""
    torch.manual_seed(9)
    rng = np.random.default_rng(0)
    phi = stable_ar_coefficients(3, rng, (0.4, 0.8))
    eps = rng.normal(size=(8, 60))
    u = np.stack([_filter(phi, e) for e in eps])
    layer = ssm.CompanionSSM(1, d_state=3, norm_order=0, skip=False, b_init="e1", lr={"b": 0.0}).double()
    with torch.no_grad():
        layer.a.zero_()  # a stable start: the shift
    x, y = torch.tensor(eps)[..., None], torch.tensor(u)[..., None]
    opt = torch.optim.LBFGS([layer.a, layer.c], max_iter=300, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (layer(x) - y).square().mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    np.testing.assert_allclose(layer.a.detach()[0].flip(0).numpy(), phi, atol=1e-6)
    assert closure().item() < 1e-12


def _filter(phi, eps):
    """u_t = Σ φ_j u_{t-j} + ε_t from rest."""
    u = np.zeros(len(eps))
    for t in range(len(eps)):
        u[t] = eps[t] + sum(phi[j] * u[t - 1 - j] for j in range(len(phi)) if t - 1 - j >= 0)
    return u


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=4, n_kernels=3), "must divide"),
        (dict(d_model=4, norm_order=2), "norm_order"),
        (dict(d_model=4, b_init="ones"), "b_init"),
        (dict(d_model=0), "positive integer"),
        (dict(d_model=4, d_state=0), "positive integer"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssm.CompanionSSM(**kwargs)


def test_bad_inputs_name_the_expected_shape():
    layer = ssm.CompanionSSM(4, d_state=3)
    with pytest.raises(ValueError, match=r"\(batch, length, 4\)"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        layer.step(torch.randn(2, 5, 4), layer.init_state(2))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="taps"):
        ssm.FixedKernelSSM(torch.ones(3))
    with pytest.raises(ValueError, match="exceed 4"):
        ssm.ResidualSSM(8, max_avg_window=4)
