"""ClosedLoopCompanionSSM / ClosedLoopShiftSSM against explicit float64 loops: open loop,
lag state, closed-loop rollout, step / closed_loop_step, and the closed-loop AR coefficients."""

import numpy as np
import pytest
import torch
from reference import run_steps
from tolerances import assert_close, assert_close_summed

import ssm
from kernels.companion_kernel.pytorch import reduce_mod, spectral_rows_inaccurate
from ssm.layers.closed_loop import krylov_rows

F64 = torch.float64


def dense_A(a):
    n, d = a.shape
    A = torch.zeros(n, d, d, dtype=F64)
    A[:, torch.arange(1, d), torch.arange(d - 1)] = 1.0
    A[:, :, -1] += a.to(F64)
    return A


def coefficients(layer):
    """(a, b, c, k) per channel, float64."""
    group = layer.d_model // layer.n_kernels
    return [t.detach().to(F64).repeat_interleave(group, 0) for t in layer.coefficients()]


def loop(layer, x, horizon, coeffs=None):
    """The defining recurrences: x_{t+1} = A x_t + b u_t over the window (outputs cᵀx_{t+1},
    kᵀx_{t+1}), then x ← (A + b kᵀ) x for the forecast (outputs cᵀx, kᵀx before each update).

    ``coeffs``: (a, b, c, k) per kernel set, as used (differentiable; default: the layer's)."""
    if coeffs is None:
        a, b, c, k = coefficients(layer)
    else:
        group = layer.d_model // layer.n_kernels
        a, b, c, k = (t.repeat_interleave(group, 0) for t in coeffs)
    A = dense_A(a)
    Acl = A + b[:, :, None] * k[:, None, :]
    B, n, H = x.shape
    state = torch.zeros(B, H, a.shape[1], dtype=F64)
    y_open, u_open = [], []
    for t in range(n):
        state = torch.einsum("hij,bhj->bhi", A, state) + b * x[:, t, :, None].to(F64)
        y_open.append((c * state).sum(-1))
        u_open.append((k * state).sum(-1))
    lag_state = state
    y_cl, u_cl = [], []
    for _ in range(horizon):
        y_cl.append((c * state).sum(-1))
        u_cl.append((k * state).sum(-1))
        state = torch.einsum("hij,bhj->bhi", Acl, state)
    stack = lambda v: torch.stack(v, 1)  # noqa: E731
    return stack(y_open), stack(u_open), lag_state, stack(y_cl), stack(u_cl)


CASES = [(3, 5, None, 11, 7), (4, 3, 2, 2, 5), (2, 1, None, 6, 3), (2, 6, 1, 4, 1), (3, 4, None, 1, 9)]


@pytest.mark.parametrize("cls", [ssm.ClosedLoopCompanionSSM, ssm.ClosedLoopShiftSSM])
@pytest.mark.parametrize("norm_order", [0, 1])
@pytest.mark.parametrize("H, d, n_kernels, n, horizon", CASES)
def test_open_loop_lag_state_and_rollout_match_the_recurrences(cls, norm_order, H, d, n_kernels, n, horizon):
    torch.manual_seed(0)
    layer = cls(H, d_state=d, n_kernels=n_kernels, norm_order=norm_order, init_std=0.5).double()
    x = torch.randn(2, n, H, dtype=F64)
    y_open, u_open, lag_state, y_cl, u_cl = loop(layer, x, horizon)
    got_y, got_u = layer.open_loop(x)
    assert_close_summed(got_y, y_open)
    assert_close_summed(got_u, u_open)
    assert_close_summed(layer.lag_state(x), lag_state)
    forecast, u_hat = layer.rollout(x, horizon)
    assert forecast.shape == u_hat.shape == (2, horizon, H)
    assert_close_summed(forecast, y_cl)
    assert_close_summed(u_hat, u_cl)
    assert_close_summed(layer(x, horizon), y_cl)
    assert_close(forecast[:, 0], got_y[:, -1])  # the first forecast is the last one-step output


def test_step_and_closed_loop_step_reproduce_open_loop_and_rollout():
    torch.manual_seed(1)
    layer = ssm.ClosedLoopCompanionSSM(3, d_state=4, init_std=0.5).double()
    x = torch.randn(2, 9, 3, dtype=F64)
    y_open, _ = layer.open_loop(x)
    assert_close(run_steps(layer, x), y_open)
    state = layer.init_state(2)
    for t in range(9):
        y, state = layer.step(x[:, t], state)
    outputs, inputs = [y], []
    for _ in range(5):
        y, u_hat, state = layer.closed_loop_step(state)
        outputs.append(y)
        inputs.append(u_hat)
    forecast, u_pred = layer.rollout(x, 6)
    assert_close(torch.stack(outputs, 1), forecast)
    assert_close(torch.stack(inputs, 1), u_pred[:, :5])


def test_gradients_of_the_rollout_match_the_loop():
    torch.manual_seed(2)
    layer = ssm.ClosedLoopCompanionSSM(2, d_state=4, init_std=0.5).double()
    x = torch.randn(2, 7, 2, dtype=F64)
    w = torch.randn(2, 5, 2, dtype=F64)
    (layer(x, 5) * w).sum().backward()
    leaves = [p.detach().clone().requires_grad_(True) for p in (layer.a, layer.b, layer.c, layer.k)]
    a, b, c, k = (t / t.abs().sum(-1, keepdim=True) for t in leaves)  # norm_order=1
    A = dense_A(a)
    Acl = A + b[:, :, None] * k[:, None, :]
    state = torch.zeros(2, 2, 4, dtype=F64)
    for t in range(7):
        state = torch.einsum("hij,bhj->bhi", A, state) + b * x[:, t, :, None]
    ys = []
    for _ in range(5):
        ys.append((c * state).sum(-1))
        state = torch.einsum("hij,bhj->bhi", Acl, state)
    (torch.stack(ys, 1) * w).sum().backward()
    for param, leaf in zip((layer.a, layer.b, layer.c, layer.k), leaves):
        assert_close_summed(param.grad, leaf.grad)


def test_shift_variant_holds_the_last_inputs_and_runs_the_ar_recursion():
    torch.manual_seed(3)
    layer = ssm.ClosedLoopShiftSSM(1, d_state=3, norm_order=0).double()
    assert {n for n, _ in layer.named_parameters()} == {"c", "k"}
    x = torch.randn(1, 8, 1, dtype=F64)
    torch.testing.assert_close(layer.lag_state(x)[0, 0], x[0, [7, 6, 5], 0])
    with torch.no_grad():
        layer.k.copy_(torch.tensor([[0.5, -0.2, 0.1]]))
        layer.c.copy_(layer.k)
    history = list(x[0, :, 0])
    for _ in range(6):  # u_{t+1} = kᵀ(u_t, u_{t-1}, u_{t-2})
        history.append(0.5 * history[-1] - 0.2 * history[-2] + 0.1 * history[-3])
    torch.testing.assert_close(layer(x, 6)[0, :, 0], torch.stack(history[8:]))
    torch.testing.assert_close(layer.characteristic_coefficients(), layer.k)


@pytest.mark.parametrize("cls", [ssm.ClosedLoopCompanionSSM, ssm.ClosedLoopShiftSSM])
def test_characteristic_coefficients_are_those_of_the_dense_closed_loop(cls):
    torch.manual_seed(4)
    layer = cls(3, d_state=5).double()
    alpha = layer.characteristic_coefficients().detach().numpy()
    for h, M in enumerate(layer.closed_loop_matrix().detach().numpy()):
        np.testing.assert_allclose(np.poly(M)[1:], -alpha[h], rtol=1e-9, atol=1e-10)


def test_krylov_rows_are_matrix_powers():
    torch.manual_seed(5)
    M = torch.randn(2, 4, 4, dtype=F64) * 0.5
    rows = torch.randn(2, 3, 4, dtype=F64)
    got = krylov_rows(rows, M, 7)
    for i in range(7):
        torch.testing.assert_close(got[:, :, i], rows @ torch.linalg.matrix_power(M, i))


@pytest.mark.parametrize("m", [1, 4, 5, 9, 30])
def test_reduce_mod_matches_polynomial_division(m):
    from kernels.companion_kernel.pytorch import reversed_characteristic, series_inverse

    torch.manual_seed(6)
    a, p = torch.randn(1, 4, dtype=F64) * 0.3, torch.randn(1, m, dtype=F64)
    g = series_inverse(reversed_characteristic(a), max(m - 4, 3))
    chi = np.concatenate([[1.0], -a[0].flip(0).numpy()])  # z^4 - a_3 z^3 - ... - a_0, highest first
    _, remainder = np.polydiv(p[0].flip(0).numpy(), chi)
    expected = np.zeros(4)
    expected[: len(remainder)] = remainder[::-1]
    np.testing.assert_allclose(reduce_mod(p, a, g)[0].numpy(), expected, rtol=1e-9, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="must divide"):
        ssm.ClosedLoopCompanionSSM(4, n_kernels=3)
    with pytest.raises(ValueError, match="init_std"):
        ssm.ClosedLoopCompanionSSM(4, init_std=0)
    with pytest.raises(ValueError, match="norm_order"):
        ssm.ClosedLoopShiftSSM(4, norm_order=3)
    layer = ssm.ClosedLoopCompanionSSM(4, d_state=3)
    with pytest.raises(ValueError, match="horizon"):
        layer(torch.randn(2, 5, 4), 0)
    with pytest.raises(ValueError, match=r"\(batch, length, 4\)"):
        layer(torch.randn(2, 5, 3), 2)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        layer.step(torch.randn(2, 3), layer.init_state(2))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_large_raw_coefficients_keep_the_lag_state_and_forecast_exact(dtype):
    """norm_order=0 with d = 64 and N(0, 1) coefficients: ||a||_1 ≈ 50, where the fast
    division modulo χ and the spectral kernel cancel large terms; one kernel set is scaled
    down so that a batch mixes both paths."""
    torch.manual_seed(5)
    layer = ssm.ClosedLoopCompanionSSM(4, d_state=64, n_kernels=2, norm_order=0).double()
    with torch.no_grad():
        layer.a[0] *= 1 / layer.a[0].abs().sum()  # ||a||_1 = 1: the fast path
    x = torch.randn(2, 24, 4, dtype=F64)
    y_open, u_open, lag_state, y_cl, u_cl = loop(layer, x, 5)
    layer, x = layer.to(dtype), x.to(dtype)
    got_y, got_u = layer.open_loop(x)
    assert_close_summed(got_y, y_open, dtype=dtype)
    assert_close_summed(got_u, u_open, dtype=dtype)
    state = layer.lag_state(x)
    for h in range(4):  # each channel on its own scale: the two sets grow at different rates
        assert_close_summed(state[:, h], lag_state[:, h], dtype=dtype)
        assert_close_summed(layer(x, 5)[..., h], y_cl[..., h], dtype=dtype)


@pytest.mark.parametrize("dtype, a, n", [
    (F64, [0.5, -1.0, 0.8, 1.2], 200),  # ||a||_1 = 3.5 (below the Krylov threshold 4), ρ(A) ≈ 1.44
    (torch.float32, [0.2, -0.3, 0.25, 1.2], 100),  # ||a||_1 = 1.95 (below 2), ρ(A) ≈ 1.31
])
def test_unstable_coefficients_below_the_l1_threshold_keep_the_lag_state_exact(dtype, a, n):
    """A growing A with a moderate ||a||_1: the division modulo χ amplified rounding by
    ρ^n (the forecast was off by a factor 100 at ρ = 1.44, n = 100); such rows now take
    the Krylov path. A stable set in the same layer stays on the fast one."""
    torch.manual_seed(6)
    layer = ssm.ClosedLoopCompanionSSM(2, d_state=4, n_kernels=2, norm_order=0).double()
    with torch.no_grad():
        layer.a[0] = torch.tensor(a, dtype=F64)
        layer.a[1] = 0.3 * torch.tensor(a, dtype=F64) / sum(map(abs, a))  # stable
    assert torch.linalg.eigvals(dense_A(layer.a.detach())[0]).abs().max() > 1.2
    x = torch.randn(1, n, 2, dtype=F64)
    y_open, u_open, lag_state, y_cl, u_cl = loop(layer, x, 3)
    layer, x = layer.to(dtype), x.to(dtype)
    state = layer.lag_state(x)
    for h in range(2):
        assert_close_summed(state[:, h], lag_state[:, h], dtype=dtype)
        assert_close_summed(layer(x, 3)[..., h], y_cl[..., h], dtype=dtype)


# ---------------------------------------------------------------------------------------
# Gradients (w.r.t. x and every coefficient) against autograd through `loop`, on both
# lag-state paths: the division modulo χ and the float64 Krylov of the rows with a large
# ||a||_1 or a spectral radius >= 1 (kernels.companion_kernel.pytorch.spectral_rows_inaccurate).

UNSTABLE_A = [0.5, -1.0, 0.8, 1.2, -0.3]  # ||a||_1 = 3.8 < 4 (float64's threshold), ρ(A) > 1


def used_coefficients(layer, leaves):
    """(a, b, c, k) per kernel set from the raw leaves, L1-normalized with norm_order=1
    (the shift variant's fixed a = 0, b = e_1 are buffers and stay as they are)."""
    used = []
    for name in "abck":
        if name in leaves:
            t = leaves[name]
            used.append(t / t.abs().sum(-1, keepdim=True) if layer.norm_order == 1 else t)
        else:
            used.append(getattr(layer, name).detach().to(F64))
    return used


def _route(layer, rows):
    """Set the raw a of each kernel set: "fast" (||a||_1 = 0.5), "large" (||a||_1 = 6 > 4)
    or "unstable" (UNSTABLE_A: 1 < ||a||_1 < 4, ρ > 1). Returns the expected Krylov rows."""
    with torch.no_grad():
        for i, kind in enumerate(rows):
            if kind == "unstable":
                layer.a[i] = torch.tensor(UNSTABLE_A[: layer.d_state], dtype=F64)
            else:
                layer.a[i] *= (0.5 if kind == "fast" else 6.0) / layer.a[i].abs().sum()
    return torch.tensor([kind != "fast" for kind in rows])


GRAD_CASES = {  # id: (cls, H, d, n_kernels, norm_order, n, horizon, a of each kernel set, see _route)
    "l1": (ssm.ClosedLoopCompanionSSM, 3, 5, None, 1, 11, 7, None),
    "l1-shared": (ssm.ClosedLoopCompanionSSM, 4, 3, 2, 1, 6, 5, None),
    "raw-fast": (ssm.ClosedLoopCompanionSSM, 3, 4, None, 0, 7, 3, ["fast"] * 3),
    "raw-large": (ssm.ClosedLoopCompanionSSM, 3, 5, None, 0, 9, 5, ["large"] * 3),
    "raw-unstable": (ssm.ClosedLoopCompanionSSM, 2, 5, 1, 0, 13, 3, ["unstable"]),
    "raw-mixed": (ssm.ClosedLoopCompanionSSM, 6, 5, 3, 0, 11, 7, ["fast", "large", "unstable"]),
    "shift-l1": (ssm.ClosedLoopShiftSSM, 3, 5, None, 1, 9, 7, None),
    "shift-raw": (ssm.ClosedLoopShiftSSM, 4, 3, 2, 0, 8, 5, None),
}


@pytest.mark.parametrize("cls, H, d, n_kernels, norm_order, n, horizon, routes", GRAD_CASES.values(),
                         ids=GRAD_CASES.keys())
def test_gradients_of_forecast_rollout_and_open_loop_match_the_loop(cls, H, d, n_kernels, norm_order, n, horizon,
                                                                      routes):
    """d(random scalar loss) on forward(x, h), on rollout's (y, û) and on open_loop's (y, û)
    w.r.t. x and every coefficient equals autograd through ``loop``, on both lag-state
    paths (division modulo χ for norm_order=1 and "fast" rows; Krylov for the others)."""
    torch.manual_seed(11)
    layer = cls(H, d_state=d, n_kernels=n_kernels, norm_order=norm_order, init_std=0.5).double()
    if routes is not None:
        krylov = _route(layer, routes)
        group = layer.d_model // layer.n_kernels
        a = layer.a.detach()
        assert torch.equal(spectral_rows_inaccurate(a.repeat_interleave(group, 0)), krylov.repeat_interleave(group))
        radius = torch.linalg.eigvals(dense_A(a)).abs().amax(-1)
        for i, kind in enumerate(routes):
            l1 = a[i].abs().sum()
            assert {"fast": l1 <= 1, "large": l1 > 4, "unstable": (1 < l1 < 4) & (radius[i] > 1.05)}[kind]
    params = dict(layer.named_parameters())
    leaves = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
    x = torch.randn(2, n, H, dtype=F64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y_open, u_open, _, y_cl, u_cl = loop(layer, x_ref, horizon, used_coefficients(layer, leaves))
    forecast, u_hat = layer.rollout(x, horizon)
    got_open = layer.open_loop(x)
    losses = {
        "forecast": ([layer(x, horizon)], [y_cl]),
        "rollout": ([forecast, u_hat], [y_cl, u_cl]),
        "open_loop": (list(got_open), [y_open, u_open]),
    }
    names = list(params)
    for what, (got, expected) in losses.items():
        weights = [torch.randn_like(e) for e in expected]
        for g, e in zip(got, expected):
            assert_close_summed(g, e, msg=lambda m, what=what: f"{what} values: {m}")
        grads = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)),
                                    [x, *params.values()], retain_graph=True)
        ref = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)),
                                  [x_ref, *leaves.values()], retain_graph=True)
        for name, g, r in zip(["x", *names], grads, ref):
            assert_close_summed(g, r, msg=lambda m, what=what, name=name: f"d {what} / d {name}: {m}")


@pytest.mark.parametrize("cls", [ssm.ClosedLoopShiftSSM, ssm.ClosedLoopCompanionSSM])
@pytest.mark.parametrize("norm_order", [0, 1])
@pytest.mark.parametrize("H, d, n_kernels, n, horizon", [(3, 5, None, 9, 6), (4, 3, 2, 7, 4), (2, 1, 1, 5, 3)])
def test_step_and_closed_loop_step_match_open_loop_rollout_and_the_loop(cls, norm_order, H, d, n_kernels, n,
                                                                         horizon):
    """step over the window gives open_loop's y and ends in lag_state; closed_loop_step
    then continues with rollout's forecast and predicted inputs."""
    torch.manual_seed(12)
    layer = cls(H, d_state=d, n_kernels=n_kernels, norm_order=norm_order, init_std=0.5).double()
    x = torch.randn(2, n, H, dtype=F64)
    y_open, _, lag_state, y_cl, u_cl = loop(layer, x, horizon)
    with torch.no_grad():
        assert_close_summed(run_steps(layer, x), layer.open_loop(x)[0])
        assert_close_summed(run_steps(layer, x), y_open)
        state = layer.init_state(2)
        for t in range(n):
            y, state = layer.step(x[:, t], state)
        assert_close_summed(state, layer.lag_state(x))
        assert_close_summed(state, lag_state)
        outputs, inputs = [y], []
        for _ in range(horizon - 1):
            y, u_hat, state = layer.closed_loop_step(state)
            assert y.shape == u_hat.shape == (2, H) and state.shape == (2, H, d)
            outputs.append(y)
            inputs.append(u_hat)
        forecast, u_pred = layer.rollout(x, horizon)
    assert_close_summed(torch.stack(outputs, 1), forecast)
    assert_close_summed(torch.stack(outputs, 1), y_cl)
    if horizon > 1:
        assert_close_summed(torch.stack(inputs, 1), u_pred[:, :-1])
        assert_close_summed(torch.stack(inputs, 1), u_cl[:, :-1])


@pytest.mark.parametrize("cls", [ssm.ClosedLoopCompanionSSM, ssm.ClosedLoopShiftSSM])
def test_an_input_of_another_dtype_than_the_layer_is_refused(cls):
    """open_loop, the forecast (through lag_state) and step would otherwise run a float64
    window through float32 coefficients and return float64 at float32 accuracy."""
    layer = cls(4, d_state=3)
    x = torch.randn(2, 5, 4, dtype=F64)
    for run in (layer.open_loop, layer.lag_state, lambda x: layer(x, 2), lambda x: layer.rollout(x, 2),
                lambda x: layer.step(x[:, 0], layer.init_state(2))):
        with pytest.raises(TypeError, match=r"is torch\.float64 but the layer's parameters are torch\.float32"):
            run(x)
    layer.double()
    assert layer(x, 2).dtype == F64 and layer.open_loop(x)[0].dtype == F64
    assert layer.step(x[:, 0], layer.init_state(2))[0].dtype == F64
