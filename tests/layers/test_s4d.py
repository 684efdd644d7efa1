"""ssm.S4D against the sequential diagonal recurrence built from its continuous parameters."""

import math

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

INITS = ["lin", "inv", "legs", "real"]
DISCS = ["zoh", "bilinear"]
H, N = 3, 8


def discretize(layer):
    """(Ā, B̄, C) in complex128 from layer.continuous(), by the formulas of the contract."""
    dt, A, B, C = (t.detach().to(torch.complex128) for t in layer.continuous())
    dtA = dt[:, None] * A
    if layer.disc == "zoh":
        Abar = torch.exp(dtA)
        Bbar = (torch.exp(dtA) - 1) / A * B
    else:
        Abar = (1 + dtA / 2) / (1 - dtA / 2)
        Bbar = dt[:, None] / (1 - dtA / 2) * B
    return Abar, Bbar, C


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("L", [1, 17, 64])
def test_forward_matches_sequential_recurrence_float64(init, disc, L):
    torch.manual_seed(0)
    layer = ssm.S4D(H, d_state=N, init=init, disc=disc).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, L, H) and y.dtype == torch.float64
    Abar, Bbar, C = discretize(layer)
    assert_close(y, diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach()))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
def test_forward_float32_agrees_with_float64_recurrence(init, disc):
    torch.manual_seed(1)
    layer = ssm.S4D(H, d_state=N, init=init, disc=disc)
    x = torch.randn(2, 64, H)
    y = layer(x)
    assert y.dtype == torch.float32
    Abar, Bbar, C = discretize(layer)
    assert_close(y, diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach()), dtype=torch.float32)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("L", [1, 17, 64])
def test_kernel_matches_powers(init, disc, L):
    torch.manual_seed(2)
    layer = ssm.S4D(H, d_state=N, init=init, disc=disc).double()
    K = layer.kernel(L)
    assert K.shape == (H, L)
    Abar, Bbar, C = discretize(layer)
    assert_close(K, kernel_by_powers(Abar, Bbar, C[0], L))


def test_default_state_size_matches_recurrence():
    torch.manual_seed(3)
    layer = ssm.S4D(H).double()  # d_state=64, init="inv", disc="zoh"
    assert layer.continuous()[1].shape == (H, 32)
    x = torch.randn(2, 33, H, dtype=torch.float64)
    Abar, Bbar, C = discretize(layer)
    assert_close(layer(x), diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach()))


@pytest.mark.parametrize("init", ["inv", "legs"])
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("L", [1, 17, 64])
def test_bidirectional_forward_matches_forward_plus_backward_recurrence(init, disc, L):
    torch.manual_seed(4)
    layer = ssm.S4D(H, d_state=N, init=init, disc=disc, bidirectional=True).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    Abar, Bbar, C = discretize(layer)
    assert C.shape == (2, H, N // 2)
    expected = diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach()) + backward_recurrence(
        Abar, Bbar, C[1], x
    )
    assert_close(layer(x), expected)


@pytest.mark.parametrize("disc", DISCS)
def test_bidirectional_kernel_has_forward_and_backward_parts(disc):
    torch.manual_seed(5)
    layer = ssm.S4D(H, d_state=N, disc=disc, bidirectional=True).double()
    K = layer.kernel(17)
    assert K.shape == (2, H, 17)
    Abar, Bbar, C = discretize(layer)
    assert_close(K[0], kernel_by_powers(Abar, Bbar, C[0], 17))
    assert_close(K[1], kernel_by_powers(Abar, Bbar, C[1], 17))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
def test_step_matches_forward_float64(init, disc):
    torch.manual_seed(6)
    layer = ssm.S4D(H, d_state=N, init=init, disc=disc).double().eval()
    x = torch.randn(2, 17, H, dtype=torch.float64)
    with torch.no_grad():
        y = run_steps(layer, x)
        assert y.dtype == torch.float64
        assert_close(y, layer(x))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
def test_step_matches_forward_float32(init, disc):
    torch.manual_seed(7)
    layer = ssm.S4D(H, d_state=N, init=init, disc=disc).eval()
    x = torch.randn(2, 64, H)
    with torch.no_grad():
        y = run_steps(layer, x)
        assert y.dtype == torch.float32
        assert_close(y, layer(x))


def test_init_state_is_zero_with_one_entry_per_mode():
    torch.manual_seed(8)
    state = ssm.S4D(H, d_state=N).init_state(5)
    assert state.shape == (5, H, N // 2) and state.is_complex()
    assert not state.abs().any()


def test_bidirectional_step_raises_runtime_error():
    torch.manual_seed(9)
    layer = ssm.S4D(H, d_state=N, bidirectional=True)
    with pytest.raises(RuntimeError, match="bidirectional"):
        layer.init_state(2)
    state = torch.zeros(2, H, N // 2, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="bidirectional"):
        layer.step(torch.randn(2, H), state)


def test_dt_is_log_uniform_in_range():
    torch.manual_seed(10)
    dt_min, dt_max = 1e-3, 1e-1
    dt = ssm.S4D(4000, d_state=2, dt_min=dt_min, dt_max=dt_max).continuous()[0].detach()
    assert dt.shape == (4000,)
    assert dt.min() >= dt_min * (1 - 1e-6) and dt.max() <= dt_max * (1 + 1e-6)
    # log Δ is uniform: a quarter of the log-range holds about a quarter of the samples.
    pos = (dt.log() - math.log(dt_min)) / (math.log(dt_max) - math.log(dt_min))
    for q in (0.25, 0.5, 0.75):
        assert abs((pos < q).double().mean().item() - q) < 0.04
    assert pos.min() < 0.01 and pos.max() > 0.99


def test_dt_respects_custom_range():
    torch.manual_seed(11)
    dt = ssm.S4D(500, d_state=2, dt_min=0.02, dt_max=0.03).continuous()[0].detach()
    assert dt.min() >= 0.02 * (1 - 1e-6) and dt.max() <= 0.03 * (1 + 1e-6)
    dt = ssm.S4D(5, d_state=2, dt_min=0.05, dt_max=0.05).continuous()[0].detach()
    torch.testing.assert_close(dt, torch.full((5,), 0.05), rtol=1e-6, atol=0)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("d_state", [2, 8, 64])
def test_init_eigenvalues_and_B_match_hippo(init, d_state):
    torch.manual_seed(12)
    layer = ssm.S4D(H, d_state=d_state, init=init)
    _, A, B, C = layer.continuous()
    expected_A = ssm.hippo.diagonal_init(init, d_state).expand(H, -1)
    expected_B = ssm.hippo.diagonal_B_init(init, d_state).expand(H, -1)
    assert A.shape == B.shape == (H, d_state // 2) and C.shape == (1, H, d_state // 2)
    assert_close(A, expected_A, dtype=torch.float32)
    assert_close(B, expected_B, dtype=torch.float32)


def test_init_formulas_for_lin_inv_real():
    torch.manual_seed(13)
    n = torch.arange(N // 2, dtype=torch.float64)
    expected = {
        "lin": torch.complex(torch.full_like(n, -0.5), math.pi * n),
        "inv": torch.complex(torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1)),
        "real": torch.complex(-(n + 1), torch.zeros_like(n)),
    }
    for init, A in expected.items():
        layer = ssm.S4D(H, d_state=N, init=init)
        assert_close(layer.continuous()[1], A.expand(H, -1), dtype=torch.float32)
        assert_close(layer.continuous()[2], torch.ones(H, N // 2), dtype=torch.float32)


def test_legs_init_eigenvalues_are_legs_normal_part_spectrum():
    torch.manual_seed(14)
    A = ssm.S4D(H, d_state=N, init="legs").continuous()[1].detach().to(torch.complex128)
    eig = torch.linalg.eigvals(ssm.hippo.normal_part("legs", N))
    upper = eig[eig.imag > 0]
    upper = upper[torch.argsort(upper.imag)]
    for h in range(H):
        assert_close(A[h], upper, dtype=torch.float32)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("disc", DISCS)
def test_gradients_reach_every_parameter(bidirectional, disc):
    torch.manual_seed(15)
    layer = ssm.S4D(H, d_state=N, disc=disc, bidirectional=bidirectional)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"log_dt", "log_A_real", "A_imag", "B", "C", "D"}
    layer(torch.randn(2, 17, H)).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_lr_hint_on_dt_A_B_only():
    torch.manual_seed(16)
    layer = ssm.S4D(H, d_state=N, lr=2e-3)
    for name in ("log_dt", "log_A_real", "A_imag", "B"):
        assert getattr(layer, name)._optim == {"lr": 2e-3, "weight_decay": 0.0}, name
    for name in ("C", "D"):
        assert getattr(getattr(layer, name), "_optim", None) is None, name


def test_lr_zero_makes_dt_A_B_frozen_buffers():
    torch.manual_seed(17)
    layer = ssm.S4D(H, d_state=N, lr=0.0)
    frozen = {"log_dt", "log_A_real", "A_imag", "B"}
    assert {n for n, _ in layer.named_parameters()} == {"C", "D"}
    assert frozen <= {n for n, _ in layer.named_buffers()}
    layer.double()
    x = torch.randn(2, 17, H, dtype=torch.float64)
    Abar, Bbar, C = discretize(layer)
    assert_close(layer(x), diagonal_recurrence(Abar, Bbar, C[0], x, layer.D.detach()))


def test_lr_dict_can_set_c_alone_with_the_global_weight_decay():
    """{"dt": 0, "A": 0, "B": 0, "C": 0.004}: the S4-PTD robustness runs, where only C of the
    SSM trains, at its own lr but with the run's weight decay."""
    from ssm.optim import param_groups

    layer = ssm.S4D(H, d_state=N, lr={"dt": 0, "A": 0, "B": 0, "C": 0.004})
    assert {n for n, _ in layer.named_parameters()} == {"C", "D"}
    assert {"log_dt", "log_A_real", "A_imag", "B"} <= {n for n, _ in layer.named_buffers()}
    groups = param_groups(layer, weight_decay=0.05)
    c_group = next(g for g in groups if any(p is layer.C for p in g["params"]))
    assert c_group["lr"] == 0.004 and c_group["weight_decay"] == 0.05 and len(c_group["params"]) == 1
    frozen = ssm.S4D(H, d_state=N, lr={"C": 0})
    assert "C" in dict(frozen.named_buffers()) and frozen(torch.randn(1, 5, H)).shape == (1, 5, H)
    with pytest.raises(ValueError, match="unknown lr key"):
        ssm.S4D(H, d_state=N, lr={"D": 0.1})


def test_lr_dict_sets_each_tensor():
    torch.manual_seed(18)
    layer = ssm.S4D(H, d_state=N, lr={"dt": 0.0, "A": 1e-2, "B": None})
    params = dict(layer.named_parameters())
    assert "log_dt" not in params and "log_dt" in dict(layer.named_buffers())
    assert params["log_A_real"]._optim == {"lr": 1e-2, "weight_decay": 0.0}
    assert params["A_imag"]._optim == {"lr": 1e-2, "weight_decay": 0.0}
    # None: the optimizer's global learning rate, weight decay still 0.
    assert "lr" not in params["B"]._optim and params["B"]._optim["weight_decay"] == 0.0


def test_float64_runs_on_cpu():
    torch.manual_seed(19)
    layer = ssm.S4D(H, d_state=N).double()
    y = layer(torch.randn(2, 17, H, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.device.type == "cpu"
    assert layer.kernel(17).dtype == torch.float64


@pytest.mark.parametrize(
    "shape", [(17, H), (2, 17, H + 1), (2, 17, H, 1)], ids=["rank-2", "channels", "rank-4"]
)
def test_bad_input_shape_names_expected_shape(shape):
    torch.manual_seed(20)
    layer = ssm.S4D(H, d_state=N)
    with pytest.raises(ValueError, match=rf"\(batch, length, {H}\)"):
        layer(torch.randn(*shape))


def test_integer_input_raises_type_error():
    torch.manual_seed(21)
    with pytest.raises(TypeError, match="floating"):
        ssm.S4D(H, d_state=N)(torch.randint(0, 5, (2, 17, H)))


def test_bad_step_input_names_expected_shape():
    torch.manual_seed(22)
    layer = ssm.S4D(H, d_state=N)
    state = layer.init_state(2)
    with pytest.raises(ValueError, match=rf"\(batch, {H}\)"):
        layer.step(torch.randn(2, H + 1), state)
    with pytest.raises(ValueError, match=rf"\(batch, {H}\)"):
        layer.step(torch.randn(2, 1, H), state)
    with pytest.raises(TypeError, match="floating"):
        layer.step(torch.ones(2, H, dtype=torch.int64), state)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"d_state": 7}, "d_state"),
        ({"d_state": 0}, "d_state"),
        ({"init": "fourier"}, "init"),
        ({"disc": "euler"}, "disc"),
        ({"dt_min": 0.1, "dt_max": 0.01}, "dt_min"),
        ({"dt_min": 0.0}, "dt_min"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ssm.S4D(H, **kwargs)


def test_non_positive_d_model_raises_value_error():
    with pytest.raises(ValueError, match="d_model"):
        ssm.S4D(0)


# --- Backward pass against an independent float64 reference ---------------------------------
#
# The reference reads the layer's parameters as stored (log_dt, log_A_real, A_imag, B and C as
# (..., 2) real views, D), rebuilds Δ = exp(log_dt), A = -exp(log_A_real) + i A_imag, and
# discretizes by the formulas of the math reference (§1.1, §3.2) without any library code:
# ZOH as the matrix exponential of the augmented block [[ΔA, ΔB], [0, 0]] (= [[Ā, B̄], [0, 1]]),
# bilinear as Ā = (1 + ΔA/2)/(1 - ΔA/2), B̄ = Δ B/(1 - ΔA/2). The output comes from the
# sequential recurrence (plus the anti-causal one when bidirectional); autograd through it
# gives the reference gradients of x and of every parameter.

F64, C128 = torch.float64, torch.complex128


def reference_s4d_forward(params, x, disc, scale=2.0):
    """Float64 output of an S4D-parameterized layer on x (B, L, H), differentiable in x and params."""
    dt = torch.exp(params["log_dt"]).to(C128)[:, None]
    A = torch.complex(-torch.exp(params["log_A_real"]), params["A_imag"])
    B = torch.view_as_complex(params["B"])
    C = torch.view_as_complex(params["C"])
    Abar, Bbar = (zoh_by_matrix_exp if disc == "zoh" else bilinear_explicit)(dt, A, B)
    y = diagonal_recurrence(Abar, Bbar, C[0], x, params["D"], scale=scale)
    if C.shape[0] == 2:
        y = y + backward_recurrence(Abar, Bbar, C[1], x, scale=scale)
    return y



@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L", [1, 13])
def test_gradients_match_float64_reference(init, disc, bidirectional, L):
    """d_model = 3 (odd), N = 6 (3 modes); L = 1 and an odd L."""
    torch.manual_seed(23)
    layer = ssm.S4D(3, d_state=6, init=init, disc=disc, bidirectional=bidirectional,
                    dt_min=0.01, dt_max=0.3).double()
    check_gradients_against_reference(layer, lambda p, x: reference_s4d_forward(p, x, disc), L)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
def test_step_gradients_match_float64_reference(init, disc):
    torch.manual_seed(24)
    layer = ssm.S4D(5, d_state=4, init=init, disc=disc, dt_min=0.01, dt_max=0.3).double()
    check_gradients_against_reference(layer, lambda p, x: reference_s4d_forward(p, x, disc), 7, run=run_steps)


# --- n_ssm: (A, B) tied across channels -------------------------------------------------------


def tied(params, d_model):
    """The raw parameters with A and B (n_ssm, n) spread to channels: channel h reads row
    h mod n_ssm (S4's tying), by an index, not by the layer's own repeat."""
    rows = torch.arange(d_model) % params["log_A_real"].shape[0]
    return {**params, **{k: params[k][rows] for k in ("log_A_real", "A_imag", "B")}}


@pytest.mark.parametrize("n_ssm", [1, 2, 3, 6])  # 3: two tiles, as the image config's 512 / 2
@pytest.mark.parametrize("disc", DISCS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_tied_ssm_copies_match_the_reference_forward_and_gradients(n_ssm, disc, bidirectional):
    torch.manual_seed(25)
    layer = ssm.S4D(6, d_state=4, disc=disc, bidirectional=bidirectional, n_ssm=n_ssm,
                    dt_min=0.01, dt_max=0.3).double()
    assert layer.log_A_real.shape == layer.A_imag.shape == (n_ssm, 2) and layer.B.shape == (n_ssm, 2, 2)
    assert layer.log_dt.shape == (6,) and layer.C.shape == (layer.channels, 6, 2, 2)
    with torch.no_grad():  # make the copies differ (at init every copy is the same)
        for p in (layer.log_A_real, layer.A_imag, layer.B):
            p.add_(0.1 * torch.randn_like(p))
    check_gradients_against_reference(layer, lambda p, x: reference_s4d_forward(tied(p, 6), x, disc), 9)
    if not bidirectional:
        layer.zero_grad()
        check_gradients_against_reference(layer, lambda p, x: reference_s4d_forward(tied(p, 6), x, disc), 9,
                                          run=run_steps)


def test_tied_ssm_copies_are_checked_and_shown():
    assert "n_ssm=2" in repr(ssm.S4D(4, d_state=4, n_ssm=2)) and "n_ssm" not in repr(ssm.S4D(4, d_state=4))
    for bad in (0, 3, 2.5, True):
        with pytest.raises(ValueError, match="n_ssm"):
            ssm.S4D(4, d_state=4, n_ssm=bad)


def test_bilinear_exponent_keeps_its_relative_precision_at_small_steps():
    """x = log((1 + z)/(1 - z)), z = ΔA/2: the ratio rounds to 1 + O(eps) in float32, and its
    log carried Re x with a relative error of 2.6e-4 at Δ = 1e-4 (at lag l the kernel's
    magnitude is off by that times |Re x| l); 2 atanh(z) keeps it to rounding."""
    from ssm.layers.diagonal import discretize

    dt = torch.tensor([[1e-5], [1e-4], [1e-3], [1e-2]])
    A = torch.complex(torch.full((1, 3), -0.5), torch.tensor([[0.3, 10.0, 400.0]]))
    B = torch.ones(1, 3, dtype=torch.complex64)
    x32, _ = discretize(dt, A, B, "bilinear")
    z = (dt.double() * A.to(torch.complex128)) / 2
    exact = torch.log((1 + z) / (1 - z))  # float64: the rounding of 1 + z is 1e-16 here
    rel = lambda got, want: ((got.double() - want) / want).abs().max().item()  # noqa: E731
    assert rel(x32.real, exact.real) < 1e-6 and rel(x32.imag, exact.imag) < 1e-6


def test_defaults_are_the_documented_ones():
    """S4D(d_model) is S4D(d_model, d_state=64, init="inv", disc="zoh", dt_min=1e-3,
    dt_max=1e-1, bidirectional=False, lr=1e-3): same draws, same output, same optimizer hints."""
    explicit = dict(d_state=64, init="inv", disc="zoh", dt_min=1e-3, dt_max=1e-1, bidirectional=False, lr=1e-3)
    torch.manual_seed(26)
    default = ssm.S4D(H).double()
    torch.manual_seed(26)
    documented = ssm.S4D(H, **explicit).double()
    for name, value in documented.state_dict().items():
        torch.testing.assert_close(default.state_dict()[name], value, rtol=0, atol=0, msg=name)
    x = torch.randn(2, 33, H, dtype=torch.float64)
    torch.testing.assert_close(default(x), documented(x), rtol=0, atol=0)
    def hints(layer):
        return {name: getattr(p, "_optim", None) for name, p in layer.named_parameters()}

    assert hints(default) == hints(documented)
    assert default.log_A_real._optim == {"lr": 1e-3, "weight_decay": 0.0}
