"""ssm.DSS (exp and softmax variants) against recurrences built from its continuous parameters.

exp:      K_l = Re sum_n W_n (e^{λΔ} - 1)/λ · e^{λΔ l}
softmax:  K_l = Re sum_n (W_n/λ_n) · e^{λΔ l} / sum_{l'<L} e^{λΔ l'}

Both are a diagonal recurrence with Ā = e^{λΔ}, C = W, output scale 1 and
B̄ = (e^{λΔ} - 1)/λ (exp) or B̄ = 1 / (λ sum_{l'<L} e^{λΔ l'}) (softmax).
The softmax layer computes 1/λ as conj(λ)/(|λ|² + 1e-7), hence its looser tolerance.
"""

import math

import pytest
import torch
from reference import (
    backward_recurrence,
    check_gradients_against_reference,
    diagonal_recurrence,
    kernel_by_powers,
    leaf_parameters,
    run_steps,
)
from tolerances import assert_close, assert_close_summed

import ssm

VARIANTS = ["exp", "softmax"]
H, N = 3, 8
SOFTMAX_RTOL = 1e-6  # relative error of the regularized reciprocal (|λ| >= 1/2 here)


def discretize(layer, L):
    """(Ā, B̄, C) in complex128 from layer.continuous(), for kernel length / normalization L."""
    dt, Lam, W = (t.detach().to(torch.complex128) for t in layer.continuous())
    x = dt[:, None] * Lam
    Abar = torch.exp(x)
    if layer.variant == "exp":
        Bbar = (torch.exp(x) - 1) / Lam
    else:
        total = sum(torch.exp(x * l) for l in range(L))
        Bbar = 1 / (Lam * total)
    return Abar, Bbar, W


def check(actual, expected, variant):
    if variant == "exp":
        assert_close(actual, expected)
    else:
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            actual.to(torch.float64), expected, rtol=SOFTMAX_RTOL, atol=SOFTMAX_RTOL * scale
        )


def make_some_modes_grow(layer):
    """Softmax variant: set some Re λ > 0 (the kernel must stay finite and exact)."""
    with torch.no_grad():
        layer.Lambda_real[0, :2] = 0.3
        layer.Lambda_real[1, 0] = 1.5
        layer.Lambda_real[2, -1] = 0.05
    assert (layer.continuous()[1].real > 0).sum() == 4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("L", [1, 17, 64])
def test_forward_matches_sequential_recurrence_float64(variant, L):
    torch.manual_seed(0)
    layer = ssm.DSS(H, d_state=N, variant=variant).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, L, H) and y.dtype == torch.float64
    Abar, Bbar, W = discretize(layer, L)
    check(y, diagonal_recurrence(Abar, Bbar, W[0], x, layer.D.detach(), scale=1), variant)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("L", [1, 17, 64])
def test_kernel_matches_powers(variant, L):
    torch.manual_seed(1)
    layer = ssm.DSS(H, d_state=N, variant=variant).double()
    K = layer.kernel(L)
    assert K.shape == (H, L)
    Abar, Bbar, W = discretize(layer, L)
    check(K, kernel_by_powers(Abar, Bbar, W[0], L, scale=1), variant)


def test_exp_kernel_matches_closed_form():
    torch.manual_seed(2)
    layer = ssm.DSS(H, d_state=N, variant="exp").double()
    dt, Lam, W = (t.detach() for t in layer.continuous())
    assert (Lam.real < 0).all()
    L = 17
    x = dt[:, None] * Lam
    expected = torch.stack(
        [(W[0] * (torch.exp(x) - 1) / Lam * torch.exp(x * l)).sum(-1).real for l in range(L)], -1
    )
    assert_close(layer.kernel(L), expected)


@pytest.mark.parametrize("L", [1, 17, 64])
def test_softmax_kernel_with_growing_modes_is_finite_and_exact(L):
    torch.manual_seed(3)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double()
    make_some_modes_grow(layer)
    K = layer.kernel(L)
    assert torch.isfinite(K).all()
    dt, Lam, W = (t.detach() for t in layer.continuous())
    x = dt[:, None] * Lam
    total = sum(torch.exp(x * l) for l in range(L))
    expected = torch.stack(
        [(W[0] / Lam * torch.exp(x * l) / total).sum(-1).real for l in range(L)], -1
    )
    check(K, expected, "softmax")
    x_in = torch.randn(2, L, H, dtype=torch.float64)
    Abar, Bbar, W = discretize(layer, L)
    check(layer(x_in), diagonal_recurrence(Abar, Bbar, W[0], x_in, layer.D.detach(), scale=1), "softmax")


def test_softmax_kernel_stays_finite_for_long_growing_modes():
    torch.manual_seed(4)
    layer = ssm.DSS(H, d_state=N, variant="softmax", dt_min=0.05, dt_max=0.1)
    with torch.no_grad():
        layer.Lambda_real[0, 0] = 20.0  # e^{λΔL} overflows float32 for L = 4096
    K = layer.kernel(4096)
    assert torch.isfinite(K).all()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_softmax_with_a_padding_mask_gives_each_sequence_its_output_alone(bidirectional, dtype):
    torch.manual_seed(11)
    layer = ssm.DSS(H, d_state=N, variant="softmax", bidirectional=bidirectional).to(dtype)
    make_some_modes_grow(layer)
    with torch.no_grad():
        layer.Lambda_real[1, 0] = 20.0  # its unnormalized taps past n would overflow float32
    lengths, L = [5, 1, 37, 5, 200], 200
    alone = [torch.randn(1, n, H, dtype=dtype) for n in lengths]
    x = torch.cat([torch.cat([a, torch.randn(1, L - a.shape[1], H, dtype=dtype)], 1) for a in alone])
    x.requires_grad_(True)
    mask = (torch.arange(L)[None, :, None] < torch.tensor(lengths)[:, None, None]).to(dtype)
    y = layer(x, mask=mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for b, a in enumerate(alone):
        torch.testing.assert_close(y[b, : lengths[b]], layer(a)[0], **tol)
    (y * mask).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad * (1 - mask)).abs().max() == 0
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert layer._forward_length == lengths[-1]  # the last forward's length, not a sequence's


def test_softmax_padding_mask_shapes_empty_rows_and_checks():
    torch.manual_seed(12)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double()
    x = torch.randn(3, 9, H, dtype=torch.float64)
    mask = torch.ones(3, 9, 1, dtype=torch.float64)
    mask[0, 4:] = 0
    mask[2] = 0  # all padding: zeros in, zeros out
    torch.testing.assert_close(layer(x, mask=mask), layer(x, mask=mask[..., 0]))  # (B, L) accepted
    y = layer(x, mask=mask)
    torch.testing.assert_close(y[1], layer(x[1:2])[0], rtol=1e-12, atol=1e-12)  # a full row: over L
    assert y[2].abs().max() == 0
    with pytest.raises(ValueError, match="padding mask"):
        layer(x, mask=torch.ones(3, 8, 1))
    with pytest.raises(ValueError, match="only 0 and 1"):
        layer(x, mask=2 * mask)


@pytest.mark.parametrize("variant, l_max", [("exp", None), ("softmax", 64)])
def test_a_padding_mask_only_zeroes_the_padding_when_the_kernel_does_not_depend_on_it(variant, l_max):
    torch.manual_seed(13)
    layer = ssm.DSS(H, d_state=N, variant=variant, l_max=l_max, bidirectional=True).double()
    x = torch.randn(2, 12, H, dtype=torch.float64)
    mask = torch.ones(2, 12, 1, dtype=torch.float64)
    mask[0, 7:] = 0
    torch.testing.assert_close(layer(x, mask=mask), layer(x * mask), rtol=0, atol=0)


def test_softmax_uses_l_max_for_normalization():
    torch.manual_seed(5)
    layer = ssm.DSS(H, d_state=N, variant="softmax", l_max=64).double()
    x = torch.randn(2, 17, H, dtype=torch.float64)
    Abar, Bbar, W = discretize(layer, 64)
    check(layer(x), diagonal_recurrence(Abar, Bbar, W[0], x, layer.D.detach(), scale=1), "softmax")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("L", [1, 17, 64])
def test_bidirectional_forward_matches_forward_plus_backward_recurrence(variant, L):
    torch.manual_seed(6)
    layer = ssm.DSS(H, d_state=N, variant=variant, bidirectional=True).double()
    x = torch.randn(2, L, H, dtype=torch.float64)
    Abar, Bbar, W = discretize(layer, L)
    assert W.shape == (2, H, N // 2)
    expected = diagonal_recurrence(Abar, Bbar, W[0], x, layer.D.detach(), scale=1)
    expected = expected + backward_recurrence(Abar, Bbar, W[1], x, scale=1)
    check(layer(x), expected, variant)
    K = layer.kernel(L)
    assert K.shape == (2, H, L)
    check(K[1], kernel_by_powers(Abar, Bbar, W[1], L, scale=1), variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_matches_forward_float64(variant):
    torch.manual_seed(7)
    layer = ssm.DSS(H, d_state=N, variant=variant).double().eval()
    x = torch.randn(2, 17, H, dtype=torch.float64)
    with torch.no_grad():
        y = run_steps(layer, x, length=17)
        assert y.dtype == torch.float64
        assert_close(y, layer(x))


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_matches_forward_float32(variant):
    torch.manual_seed(8)
    layer = ssm.DSS(H, d_state=N, variant=variant).eval()
    x = torch.randn(2, 64, H)
    with torch.no_grad():
        y = run_steps(layer, x, length=64)
        assert y.dtype == torch.float32
        assert_close(y, layer(x))


def test_softmax_step_with_growing_modes_matches_forward():
    torch.manual_seed(9)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double().eval()
    make_some_modes_grow(layer)
    x = torch.randn(2, 64, H, dtype=torch.float64)
    with torch.no_grad():
        assert_close(run_steps(layer, x, length=64), layer(x))


@pytest.mark.parametrize("dtype, growth, L", [(torch.float32, 0.1, 1000), (torch.float64, 2.0, 400)])
def test_softmax_step_with_fast_growing_modes_over_long_sequences_matches_forward(dtype, growth, L):
    """Re(λΔ)·L beyond the exponent range (88 in float32, 709 in float64): the state
    e^{a t} and the weight 1/(e^{aL} - 1) overflow alone, and step gave NaN from t = 0."""
    torch.manual_seed(15)
    layer = ssm.DSS(2, d_state=8, variant="softmax").to(dtype).eval()
    with torch.no_grad():
        layer.Lambda_real[0, 0] = growth / 0.1
        layer.Lambda_real[1, 1] = 0.5 * growth / 0.1
        layer.log_dt.fill_(math.log(0.1))
    x = torch.randn(1, L, 2, dtype=dtype)
    with torch.no_grad():
        y = run_steps(layer, x, length=L)
        expected = layer(x)
    assert torch.isfinite(y).all()
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y, expected, **tol)


def test_softmax_step_state_is_checked_and_differentiable():
    torch.manual_seed(16)
    layer = ssm.DSS(H, d_state=N, variant="softmax", l_max=5).double()
    make_some_modes_grow(layer)
    state = layer.init_state(2)
    assert isinstance(state, ssm.layers.dss.SoftmaxState) and state.sigma.shape == (2, H, N // 2)
    x = torch.zeros(2, 5, H, dtype=torch.float64, requires_grad=True)
    y = run_steps(layer, x)  # zero inputs: the log of |sigma| = 0 must not poison gradients
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.Lambda_real.grad).all()
    with pytest.raises(TypeError, match="SoftmaxState"):
        layer.step(x[:, 0], state.sigma)
    with pytest.raises(ValueError, match="state.log_scale has shape"):
        layer.step(x[:, 0], state._replace(log_scale=state.log_scale[:1]))


def test_softmax_step_with_l_max_needs_no_length():
    torch.manual_seed(10)
    layer = ssm.DSS(H, d_state=N, variant="softmax", l_max=17).double().eval()
    x = torch.randn(2, 17, H, dtype=torch.float64)
    with torch.no_grad():
        assert_close(run_steps(layer, x), layer(x))


def test_softmax_step_length_priority_l_max_then_init_state_then_last_forward():
    """A forward of another length after init_state(length=...) must not change the length
    that step normalizes over."""
    torch.manual_seed(14)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double().eval()
    x = torch.randn(1, 30, H, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
        state = layer.init_state(1, length=30)
        layer(x[:, :7])  # the last forward is now 7 long
        ys = []
        for t in range(30):
            y, state = layer.step(x[:, t], state)
            ys.append(y)
        assert_close(torch.stack(ys, 1), expected)
        layer.init_state(1)  # a later init_state without a length forgets the earlier one
        y, _ = layer.step(x[:, 0], layer.init_state(1))
        assert_close(y, layer(x[:, :7])[:, 0])
        fresh = ssm.DSS(H, d_state=N, variant="softmax").double().eval()
        fresh.load_state_dict(layer.state_dict())
        fresh(x[:, :7])  # no length given: the last forward's
        state = fresh.init_state(1)
        y, _ = fresh.step(x[:, 0], state)
        assert_close(y, fresh(x[:, :7])[:, 0])
    with pytest.raises(ValueError, match="length must be a positive integer"):
        layer.init_state(1, length=0)


def test_softmax_each_state_keeps_its_own_normalization_length():
    """The length belongs to the stream: making another stream's state (of another length)
    or running forward at another length must not change a stream already running."""
    torch.manual_seed(19)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double().eval()
    x = torch.randn(1, 40, H, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
        by_length = layer.init_state(1, length=40)
        by_forward = layer.init_state(1)  # the last forward's length, 40
        assert by_length.length == by_forward.length == 40
        other = layer.init_state(1, length=20)  # another stream
        layer(x[:, :7])  # a forward of another length
        ys = {"length": [], "forward": []}
        for t in range(40):
            y, by_length = layer.step(x[:, t], by_length)
            ys["length"].append(y)
            y, by_forward = layer.step(x[:, t], by_forward)
            ys["forward"].append(y)
        for key in ys:
            assert_close(torch.stack(ys[key], 1), expected)
        assert by_length.length == 40 and other.length == 20
        y, _ = layer.step(x[:, 0], other)
        assert_close(y, layer(x[:, :20])[:, 0])


def test_softmax_kernel_does_not_change_the_length_step_normalizes_over():
    """Only forward sets the normalization length of later steps: reading kernel(L) at
    another length (to plot it, say) must leave step equal to the last forward."""
    torch.manual_seed(15)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double().eval()
    x = torch.randn(2, 12, H, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
        layer.kernel(1000)
        assert_close(run_steps(layer, x), expected)


def test_softmax_empty_sequence_gives_an_empty_output():
    layer = ssm.DSS(H, d_state=N, variant="softmax")
    assert layer(torch.randn(2, 0, H)).shape == (2, 0, H)
    with pytest.raises(RuntimeError, match="length"):  # an empty forward gives no length to step with
        layer.step(torch.randn(2, H), layer.init_state(2))
    x = torch.randn(2, 6, H)
    with torch.no_grad():
        expected = layer(x)
        layer(x[:, :0])  # nor does it replace the last one
        assert_close(run_steps(layer, x), expected, dtype=torch.float32)


def test_softmax_step_without_any_length_raises():
    torch.manual_seed(11)
    layer = ssm.DSS(H, d_state=N, variant="softmax")
    state = layer.init_state(2)
    with pytest.raises(RuntimeError, match="length"):
        layer.step(torch.randn(2, H), state)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bidirectional_step_raises_runtime_error(variant):
    torch.manual_seed(12)
    layer = ssm.DSS(H, d_state=N, variant=variant, bidirectional=True)
    with pytest.raises(RuntimeError, match="bidirectional"):
        layer.init_state(2, length=17)
    state = torch.zeros(2, H, N // 2, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="bidirectional"):
        layer.step(torch.randn(2, H), state)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dt_is_in_range(variant):
    torch.manual_seed(13)
    dt = ssm.DSS(2000, d_state=2, variant=variant, dt_min=0.01, dt_max=0.5).continuous()[0].detach()
    assert dt.min() >= 0.01 * (1 - 1e-6) and dt.max() <= 0.5 * (1 + 1e-6)
    pos = (dt.log() - math.log(0.01)) / (math.log(0.5) - math.log(0.01))
    assert abs((pos < 0.5).double().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("d_state", [2, 8, 64])
def test_init_eigenvalues_are_legs_spectrum(variant, d_state):
    torch.manual_seed(14)
    _, Lam, W = ssm.DSS(H, d_state=d_state, variant=variant).continuous()
    assert Lam.shape == (H, d_state // 2) and W.shape == (1, H, d_state // 2)
    assert_close(Lam, ssm.hippo.diagonal_init("legs", d_state).expand(H, -1), dtype=torch.float32)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_reach_every_parameter(variant, bidirectional):
    torch.manual_seed(15)
    layer = ssm.DSS(H, d_state=N, variant=variant, bidirectional=bidirectional)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"log_dt", "Lambda_real", "Lambda_imag", "W", "D"}
    layer(torch.randn(2, 17, H)).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_lr_hints_and_frozen_buffers():
    torch.manual_seed(16)
    layer = ssm.DSS(H, d_state=N, lr=5e-4)
    for name in ("log_dt", "Lambda_real", "Lambda_imag"):
        assert getattr(layer, name)._optim == {"lr": 5e-4, "weight_decay": 0.0}, name
    assert getattr(layer.W, "_optim", None) is None and getattr(layer.D, "_optim", None) is None
    frozen = ssm.DSS(H, d_state=N, lr=0.0)
    assert {n for n, _ in frozen.named_parameters()} == {"W", "D"}
    assert {"log_dt", "Lambda_real", "Lambda_imag"} <= {n for n, _ in frozen.named_buffers()}
    mixed = ssm.DSS(H, d_state=N, lr={"dt": 0.0, "A": 1e-2})
    assert "log_dt" in dict(mixed.named_buffers())
    # "A" is Λ, both its real and imaginary parts; "dt" is Δ alone
    assert mixed.Lambda_real._optim == mixed.Lambda_imag._optim == {"lr": 1e-2, "weight_decay": 0.0}
    frozen_A = ssm.DSS(H, d_state=N, lr={"A": 0.0, "dt": 2e-3})
    assert {"Lambda_real", "Lambda_imag"} <= {n for n, _ in frozen_A.named_buffers()}
    assert frozen_A.log_dt._optim == {"lr": 2e-3, "weight_decay": 0.0}


def test_defaults_are_the_documented_ones():
    """DSS(d_model) is DSS(d_model, d_state=64, variant="exp"): same draws, same output."""
    torch.manual_seed(17)
    default = ssm.DSS(H).double()
    torch.manual_seed(17)
    documented = ssm.DSS(H, d_state=64, variant="exp").double()
    assert default.Lambda_real.shape == (H, 32)
    for name, value in documented.state_dict().items():
        torch.testing.assert_close(default.state_dict()[name], value, rtol=0, atol=0, msg=name)
    x = torch.randn(2, 17, H, dtype=torch.float64)
    torch.testing.assert_close(default(x), documented(x), rtol=0, atol=0)


def test_float64_runs_on_cpu():
    torch.manual_seed(17)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double()
    y = layer(torch.randn(2, 17, H, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.device.type == "cpu"


@pytest.mark.parametrize(
    "shape", [(17, H), (2, 17, H + 1)], ids=["rank-2", "channels"]
)
def test_bad_input_shape_names_expected_shape(shape):
    torch.manual_seed(18)
    with pytest.raises(ValueError, match=rf"\(batch, length, {H}\)"):
        ssm.DSS(H, d_state=N)(torch.randn(*shape))


def test_integer_input_raises_type_error():
    torch.manual_seed(19)
    with pytest.raises(TypeError, match="floating"):
        ssm.DSS(H, d_state=N)(torch.randint(0, 5, (2, 17, H)))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"d_state": 5}, "d_state"),
        ({"variant": "sigmoid"}, "variant"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"l_max": 0}, "l_max"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ssm.DSS(H, **kwargs)


# --- Backward pass against an independent float64 reference ---------------------------------
#
# The reference reads the raw parameters (log_dt, Lambda_real, Lambda_imag, W as a (..., 2) real
# view, D), forms Δ = exp(log_dt) and λ = Λ_re + iΛ_im with Λ_re = -exp(Lambda_real) (exp) or
# Lambda_real itself (softmax), and applies the formulas of the math reference §3.3 / the
# module docstring with Ā = e^{λΔ}, C = W, output Re(·):
#   exp:     B̄ = (e^{λΔ} - 1)/λ
#   softmax: B̄ = (1/λ) / sum_{l'<L} e^{λΔ l'}, with 1/λ = conj(λ)/(|λ|² + 1e-7) as specified,
#            summed directly (the short L here cannot overflow, growing modes included).
# Output by the sequential recurrence (plus the anti-causal one when bidirectional).

F64, C128 = torch.float64, torch.complex128


def reference_bars(params, variant, L):
    """Differentiable (Ā, B̄, W) in complex128 from the raw parameters; L: the softmax
    normalization length."""
    dt = torch.exp(params["log_dt"])[:, None]
    re = -torch.exp(params["Lambda_real"]) if variant == "exp" else params["Lambda_real"]
    im = params["Lambda_imag"]
    Lam = torch.complex(re, im)
    a = dt * Lam
    Abar = torch.exp(a)
    if variant == "exp":
        Bbar = (Abar - 1) / Lam
    else:
        reciprocal = Lam.conj() / (re**2 + im**2 + 1e-7)
        Bbar = reciprocal / torch.stack([torch.exp(a * l) for l in range(L)]).sum(0)
    return Abar, Bbar, torch.view_as_complex(params["W"])


def reference_forward(params, x, variant, L_norm=None):
    """Float64 output on x (B, L, H), differentiable in x and the raw parameters."""
    Abar, Bbar, W = reference_bars(params, variant, L_norm or x.shape[1])
    y = diagonal_recurrence(Abar, Bbar, W[0], x, params["D"], scale=1)
    if W.shape[0] == 2:
        y = y + backward_recurrence(Abar, Bbar, W[1], x, scale=1)
    return y


def check_against_reference(layer, L, run=None, L_norm=None):
    """Output and gradients of the float64 layer against autograd through the reference."""
    check_gradients_against_reference(
        layer, lambda params, x: reference_forward(params, x, layer.variant, L_norm), L, run=run,
        names={"log_dt", "Lambda_real", "Lambda_imag", "W", "D"},
    )


CASES = [("exp", False), ("softmax", False), ("softmax", True)]
CASE_IDS = ["exp", "softmax", "softmax-growing"]


def make_layer(variant, growing, **kwargs):
    """d_model = 3 (odd), N = 8, float64; some modes with Re λ > 0 if ``growing``."""
    layer = ssm.DSS(H, d_state=N, variant=variant, dt_min=0.01, dt_max=0.3, **kwargs).double()
    if growing:
        make_some_modes_grow(layer)
    return layer


@pytest.mark.parametrize("variant, growing", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("L", [1, 13])
def test_gradients_match_float64_reference(variant, growing, bidirectional, L):
    torch.manual_seed(20)
    layer = make_layer(variant, growing, bidirectional=bidirectional)
    check_against_reference(layer, L)


@pytest.mark.parametrize(
    "growing, run",
    [
        (False, None),
        (True, None),  # growing modes were normalized over l_max but placed by the input length
        (False, run_steps),
        (True, run_steps),
    ],
    ids=["forward", "forward-growing", "step", "step-growing"],
)
@pytest.mark.parametrize("l_max, L", [(20, 7), (5, 7)])
def test_softmax_gradients_with_l_max_match_float64_reference(growing, run, l_max, L):
    """The normalization runs over l_max (longer or shorter than the input), not the input length."""
    torch.manual_seed(21)
    layer = make_layer("softmax", growing, l_max=l_max)
    check_against_reference(layer, L, run=run, L_norm=l_max)


@pytest.mark.parametrize("variant, growing", CASES, ids=CASE_IDS)
def test_step_gradients_match_float64_reference(variant, growing):
    torch.manual_seed(22)
    layer = make_layer(variant, growing)
    check_against_reference(layer, 13, run=lambda m, x: run_steps(m, x, length=13))


@pytest.mark.parametrize("variant, growing", CASES, ids=CASE_IDS)
def test_modes_describe_the_kernel_and_its_gradients(variant, growing):
    """K_l = 2 Re sum_n v e^{x l} from ``modes(L)`` is the reference kernel (powers of Ā),
    values and gradients (for the softmax variant ``modes`` is not on the forward path)."""
    torch.manual_seed(23)
    layer = make_layer(variant, growing)
    L = 13
    v, x = layer.modes(L)
    K = 2 * torch.stack([(v[0] * torch.exp(x * l)).sum(-1).real for l in range(L)], -1)
    params = leaf_parameters(layer)
    Abar, Bbar, W = reference_bars(params, variant, L)
    K_ref = kernel_by_powers(Abar, Bbar, W[0], L, scale=1)
    g = torch.randn(H, L, dtype=F64)
    (g * K).sum().backward()
    (g * K_ref).sum().backward()
    assert_close(K, K_ref)
    for name, p in layer.named_parameters():
        if name == "D":
            continue
        assert_close_summed(p.grad, params[name].grad, msg=lambda m, name=name: f"grad {name}: {m}")


def test_softmax_input_much_longer_than_l_max_keeps_finite_gradients():
    """Decaying modes at L - l_max = 384 (Re(λΔ)·384 ≈ 700): the growing modes' shift
    e^{μ(l_max - L)} used to be formed on every mode, overflowed on the decaying ones and made
    their gradients NaN through the masked branch."""
    torch.manual_seed(0)
    layer = ssm.DSS(2, d_state=4, variant="softmax", l_max=16)
    with torch.no_grad():
        layer.Lambda_real.fill_(-5.0)
        layer.log_dt.fill_(-1.0)
    x = torch.randn(1, 400, 2, requires_grad=True)
    layer(x).sum().backward()
    assert torch.isfinite(layer.Lambda_real.grad).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("B, L, length_after", [(0, 5, 5), (2, 0, None)], ids=["empty batch", "empty sequence"])
def test_softmax_padding_mask_on_an_empty_input_gives_an_empty_output_and_zero_gradients(bidirectional, B, L,
                                                                                           length_after):
    """B = 0, L > 0: the per-length path used to return torch.empty_like(u) with no iteration,
    outside the graph (backward raised), unlike the unmasked forward (fftconv's
    with_zero_grads). L = 0: an empty forward gives no length to step with."""
    layer = ssm.DSS(H, d_state=N, variant="softmax", bidirectional=bidirectional).double()
    x = torch.randn(B, L, H, dtype=torch.float64, requires_grad=True)
    y = layer(x, mask=torch.ones(B, L, 1, dtype=torch.float64))
    assert y.shape == (B, L, H)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().max() == 0 for p in layer.parameters())
    assert layer._forward_length == length_after


@pytest.mark.parametrize("mask_dtype, n", [(torch.bfloat16, 257), (torch.float16, 2049)])
def test_a_half_precision_mask_counts_long_valid_lengths_exactly(mask_dtype, n):
    """lengths = mask.sum(1) is summed in the mask's dtype: bfloat16 counts 257 as 256 and
    float16 2049 as 2048, so the kernel is normalized over the wrong length."""
    torch.manual_seed(3)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double()
    L = n + 7
    x = torch.randn(1, L, H, dtype=torch.float64)
    mask = (torch.arange(L) < n)[None, :, None].to(mask_dtype)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, mask=mask)[0, :n], layer(x[:, :n])[0], rtol=1e-12, atol=1e-12)


def test_a_masked_softmax_forward_sets_the_length_step_normalizes_over():
    """The padded batch's length L, as an unmasked forward would (see init_state)."""
    torch.manual_seed(17)
    layer = ssm.DSS(H, d_state=N, variant="softmax").double().eval()
    x = torch.randn(2, 9, H, dtype=torch.float64)
    mask = torch.ones(2, 9, 1, dtype=torch.float64)
    mask[0, 5:] = 0
    with torch.no_grad():
        layer(x[:, :4])  # an earlier forward, 4 long
        layer(x, mask=mask)  # the last forward: 9 long, padded
        assert_close(run_steps(layer, x), layer(x))


def test_softmax_refuses_an_input_of_another_dtype_with_a_mask_and_in_step():
    """The masked softmax forward does not go through DiagonalSSM.forward, and step has its
    own path: both check the input's dtype against the parameters themselves."""
    layer = ssm.DSS(H, d_state=N, variant="softmax")
    x = torch.randn(2, 6, H, dtype=torch.float64)
    mask = torch.ones(2, 6, 1)
    mask[0, 3:] = 0
    with pytest.raises(TypeError, match=r"x is torch\.float64 but the layer's parameters are torch\.float32"):
        layer(x, mask=mask)
    layer(x.float(), mask=mask)  # sets the step length
    with pytest.raises(TypeError, match=r"x_t is torch\.float64 but the layer's parameters are torch\.float32"):
        layer.step(x[:, 0], layer.init_state(2))


@pytest.mark.parametrize("variant, l_max", [("softmax", None), ("exp", None), ("softmax", 16)])
def test_a_mask_of_another_dtype_than_x_selects_the_same_steps(variant, l_max):
    """check_mask takes bool, integer or float 0/1 masks in any dtype: the output keeps x's
    dtype and does not depend on the mask's."""
    torch.manual_seed(18)
    layer = ssm.DSS(H, d_state=N, variant=variant, l_max=l_max)
    x = torch.randn(2, 7, H)
    valid = torch.ones(2, 7, 1, dtype=torch.bool)
    valid[0, 4:] = False
    expected = layer(x, mask=valid.float())
    for dtype in (torch.bool, torch.int64, torch.float64, torch.float16):
        y = layer(x, mask=valid.to(dtype))
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_softmax_layer_with_a_mask_matches_float32(dtype):
    """The per-sequence kernels are float32 for a half-precision layer: the masked forward
    computes in float32 and returns the layer's dtype, as the unmasked one does."""
    torch.manual_seed(19)
    layer = ssm.DSS(H, d_state=N, variant="softmax", bidirectional=True).to(dtype)
    wide = ssm.DSS(H, d_state=N, variant="softmax", bidirectional=True)
    wide.load_state_dict(layer.state_dict())
    x = torch.randn(3, 10, H).to(dtype)
    mask = torch.ones(3, 10, 1)
    mask[0, 6:] = 0
    mask[2, 2:] = 0
    y = layer(x, mask=mask)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), wide(x.float(), mask=mask), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("growth", [80.0, 89.0, 100.0])
def test_softmax_step_with_per_step_growth_beyond_float32_exp(growth):
    """Re(ΔΛ) above log(float32 max) = 88.7: forward evaluates such modes reversed and stays
    finite; step multiplied the state by exp(ΔΛ), which overflowed to inf and gave NaN. The
    growth now joins the state's floating exponent."""
    import copy

    torch.manual_seed(0)
    H, L = 2, 50
    layer = ssm.DSS(H, 4, variant="softmax").eval()
    with torch.no_grad():
        layer.log_dt.fill_(0.0)  # Δ = 1
        layer.Lambda_real.fill_(growth)
    x = torch.randn(1, L, H)
    with torch.no_grad():
        want = copy.deepcopy(layer).double()(x.double())
        state, ys = layer.init_state(1, length=L), []
        for t in range(L):
            y_t, state = layer.step(x[:, t], state)
            ys.append(y_t)
    got = torch.stack(ys, 1).double()
    assert torch.isfinite(got).all()
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4


@pytest.mark.parametrize("run", [None, run_steps], ids=["forward", "step"])
def test_softmax_mode_at_the_origin_takes_the_limit_of_its_weight(run):
    """A mode with λΔ = 0 (or below 1e-12 in modulus) has softmax weight e^{al}/Σ_{l'<L} e^{al'}
    = 1/L, its limit; its value reaches the gradient of λ through the regularized 1/λ, whose
    derivative at 0 is 1/1e-7."""
    torch.manual_seed(31)
    layer = make_layer("softmax", False)
    with torch.no_grad():
        layer.Lambda_real[0, 0] = 0.0
        layer.Lambda_imag[0, 0] = 0.0
        layer.Lambda_real[1, 1] = 1e-13  # |λΔ| < 1e-12, not 0
        layer.Lambda_imag[1, 1] = 0.0
    L = 9
    check_against_reference(layer, L, run=None if run is None else lambda m, x: run(m, x, length=L))
