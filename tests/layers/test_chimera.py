"""ssm.Chimera's 2D recurrence against a sequential loop written here from the equations,
its shift invariance (a 2D convolution) with constant parameters, the variate directions,
and the layer / forecaster shapes and gradients."""

import functools

import pytest
import torch
from tolerances import assert_close, assert_close_summed, assert_rounded_once

import ssm
from ssm.layers.chimera import chimera_scan, chimera_scan_reference


def _loop(x, dt1, dt2, A1, A2, B1, B2, C1, C2, c, lag, reverse):
    """s[v,t] = e^{Δ1 A1} s[v,t-lag] + Δ1 B1 x;  r[v,t] = e^{Δ2 A2} r[w,t] + Δ2 (c s[w,t] + B2 x)
    with w = v-1 (v+1 when reverse);  y = C1·s + C2·r. Per (b, e) scalar channel."""
    Bsz, V, T, E = x.shape
    N = A1.shape[1]
    y = torch.zeros(Bsz, V, T, E, dtype=torch.float64)
    for b in range(Bsz):
        for e in range(E):
            s = {}
            r = {}
            for t in range(T):
                for v in range(V):
                    prev = s.get((v, t - lag), torch.zeros(N, dtype=torch.float64))
                    s[v, t] = torch.exp(dt1[b, v, t, e] * A1[e]) * prev + dt1[b, v, t, e] * B1[b, v, t] * x[b, v, t, e]
            order = range(V - 1, -1, -1) if reverse else range(V)
            for t in range(T):
                for v in order:
                    w = v + 1 if reverse else v - 1
                    zero = torch.zeros(N, dtype=torch.float64)
                    r[v, t] = (torch.exp(dt2[b, v, t, e] * A2[e]) * r.get((w, t), zero)
                               + dt2[b, v, t, e] * (c[e] * s.get((w, t), zero) + B2[b, v, t] * x[b, v, t, e]))
                    y[b, v, t, e] = (C1[b, v, t] * s[v, t]).sum() + (C2[b, v, t] * r[v, t]).sum()
    return y


def _args(Bsz=2, V=3, T=7, E=2, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return [r(Bsz, V, T, E), r(Bsz, V, T, E).abs() * 0.5, r(Bsz, V, T, E).abs() * 0.5,
            -r(E, N).abs() - 0.1, -r(E, N).abs() - 0.1, r(Bsz, V, T, N), r(Bsz, V, T, N), r(Bsz, V, T, N),
            r(Bsz, V, T, N), r(E, N)]


@pytest.mark.parametrize("lag", [1, 2, 3, 10])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_matches_loop(lag, reverse):
    args = _args()
    expected = _loop(*args, lag, reverse)
    assert_close(chimera_scan(*args, lag=lag, reverse=reverse), expected)
    assert_close(chimera_scan_reference(*args, lag=lag, reverse=reverse), expected)


def test_scan_gradients_match_reference():
    args = [a.requires_grad_() for a in _args(T=5)]
    g = torch.randn(2, 3, 5, 2, dtype=torch.float64)
    fast = torch.autograd.grad(chimera_scan(*args, lag=2), args, g)
    slow = torch.autograd.grad(chimera_scan_reference(*args, lag=2), args, g)
    for a, b in zip(fast, slow):
        assert_close(a, b)


def test_constant_parameters_make_a_2d_convolution():
    """Input-independent Δ, B, C: the response to an impulse at (v0, t0) is the response at
    (0, 0) shifted, i.e. y = K * x (a causal 2D convolution)."""
    V, T, E, N = 4, 6, 1, 2
    args = _args(Bsz=1, V=V, T=T, E=E, N=N)
    for i in (1, 2):  # constant step sizes
        args[i] = torch.full_like(args[i], 0.3 * i)
    for i in (5, 6, 7, 8):  # constant B, C
        args[i] = args[i][:, :1, :1].expand_as(args[i]).clone()

    def response(v0, t0):
        x = torch.zeros(1, V, T, E, dtype=torch.float64)
        x[0, v0, t0] = 1.0
        return chimera_scan(x, *args[1:], lag=1)[0, :, :, 0]

    base = response(0, 0)
    shifted = response(1, 2)
    assert_close(shifted[1:, 2:], base[: V - 1, : T - 2])
    assert float(shifted[:1].abs().max()) == 0.0 and float(shifted[:, :2].abs().max()) == 0.0


def test_layer_shapes_gradients_and_variate_directions():
    torch.manual_seed(0)
    u = torch.randn(2, 9, 4, 8)
    for bidirectional in (True, False):
        layer = ssm.Chimera(8, d_state=3, period=3, bidirectional=bidirectional)
        y = layer(u)
        assert y.shape == u.shape
        y.square().sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
    # one direction: the first variate does not see the others; both directions: it does
    uni = ssm.Chimera(8, d_state=3, period=3, bidirectional=False).eval()
    bi = ssm.Chimera(8, d_state=3, period=3, bidirectional=True).eval()
    v = u.clone()
    v[:, :, 3] += 1.0
    with torch.no_grad():
        assert float((uni(u) - uni(v))[:, :, 0].abs().max()) == 0.0
        assert float((bi(u) - bi(v))[:, :, 0].abs().max()) > 0.0


def test_layer_is_causal_in_time():
    torch.manual_seed(0)
    layer = ssm.Chimera(8, d_state=3, period=2).eval()
    u = torch.randn(1, 10, 3, 8)
    v = u.clone()
    v[:, 6:] += 1.0
    with torch.no_grad():
        assert float((layer(u) - layer(v))[:, :6].abs().max()) == 0.0


def test_forecaster():
    torch.manual_seed(0)
    net = ssm.MultivariateForecaster(8, 2, functools.partial(ssm.Chimera, d_state=2, period=4), lag=16, horizon=5,
                                     n_variates=3, n_targets=1)
    y = net(torch.randn(2, 16, 3))
    assert y.shape == (2, 5, 1)
    y.sum().backward()
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 16, 3\), got \(2, 15, 3\)"):
        net(torch.randn(2, 15, 3))
    with pytest.raises(ValueError, match=r"\(batch, 16, 3\), got list"):
        net([[0.0] * 3] * 16)
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(2, 16, 3, dtype=torch.long))


@pytest.mark.parametrize("kwargs", [dict(d_state=0), dict(period=0), dict(dt_rank=0)])
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        ssm.Chimera(8, **kwargs)


def test_bad_input():
    with pytest.raises(ValueError, match="expected u of shape"):
        ssm.Chimera(8)(torch.randn(2, 5, 8))


@pytest.mark.parametrize("lag, reverse", [(1, True), (3, True), (3, False), (7, True)])
def test_scan_gradients_match_loop(lag, reverse):
    """Gradients of chimera_scan (both variate directions, lags 1, 3 and one beyond T) equal
    autograd through the loop written here, and through chimera_scan_reference."""
    args = [a.requires_grad_() for a in _args(T=5, seed=lag)]
    g = torch.randn(2, 3, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    fast = torch.autograd.grad(chimera_scan(*args, lag=lag, reverse=reverse), args, g)
    loop = torch.autograd.grad(_loop(*args, lag, reverse), args, g)
    slow = torch.autograd.grad(chimera_scan_reference(*args, lag=lag, reverse=reverse), args, g)
    for i, (a, b, c) in enumerate(zip(fast, loop, slow)):
        assert_close_summed(a, b, msg=lambda m, i=i: f"argument {i}: {m}")
        assert_close_summed(c, b, msg=lambda m, i=i: f"reference, argument {i}: {m}")



@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_scan_of_half_inputs_is_computed_in_at_least_float32(dtype):
    """Half inputs are widened before the two scans and the output rounded back to their dtype
    once: within one spacing of the dtype of the float64 loop on the same rounded inputs."""
    args = [a.to(dtype) for a in _args(Bsz=1, V=3, T=12, E=2, N=3, seed=4)]
    expected = _loop(*[a.to(torch.float64) for a in args], 2, True)
    out = chimera_scan(*args, lag=2, reverse=True)
    assert out.dtype == dtype
    assert_rounded_once(out, expected, dtype)


def test_heads_start_with_their_documented_step_ranges_and_unit_coupling():
    """At init: the trend head's time steps Δ₁ = softplus(bias) lie in [1e-3, 1e-1], the
    seasonal head's in [1e-2, 1] (larger steps), every variate step Δ₂ (both heads, both
    directions) in [1e-3, 1e-1], each spread log-uniformly over its range; the coupling c
    and D are 1, and A₁, A₄ start at S4D-Real -(1, ..., N)."""
    torch.manual_seed(0)
    layer = ssm.Chimera(16, d_state=4, expand=4, period=5)  # 64 channels
    log_range = {"trend.dt_time_bias": (1e-3, 1e-1), "seasonal.dt_time_bias": (1e-2, 1.0)}
    for head in ("trend", "seasonal"):
        for d in ("fwd", "bwd"):
            log_range[f"{head}.dt_{d}_bias"] = (1e-3, 1e-1)
    params = dict(layer.named_parameters())
    for name, (lo, hi) in log_range.items():
        dt = torch.nn.functional.softplus(params[name].detach().double())
        assert dt.min() >= lo * (1 - 1e-5) and dt.max() <= hi * (1 + 1e-5), name
        position = (dt.log() - torch.log(torch.tensor(lo))) / (torch.log(torch.tensor(hi / lo)))
        assert position.min() < 0.15 and position.max() > 0.85, name  # the whole range, not a part of it
    s4d_real = torch.log(torch.arange(1, 5, dtype=torch.float32)).expand(64, 4)
    for head in ("trend", "seasonal"):
        assert torch.equal(params[f"{head}.A_time_log"].detach(), s4d_real)
        for d in ("fwd", "bwd"):
            assert torch.equal(params[f"{head}.A_{d}_log"].detach(), s4d_real)
            assert torch.equal(params[f"{head}.coupling_{d}"].detach(), torch.ones(64, 4))
    assert torch.equal(layer.D.detach(), torch.ones(64))

# ---------------------------------------------------------------------------------------------
# The whole ssm.Chimera layer against a loop written from its docstrings (ssm/layers/chimera.py)


def _softplus(a):
    return torch.log1p(torch.exp(a))


def _silu(a):
    return a * torch.sigmoid(a)


def _chimera_head_loop(P, head, x, lag, bidirectional):
    """One head, token by token: x {(v, t): (B, E)} -> {(v, t): (B, E)}.

    Per token and projection (time; variate fwd / bwd, each its own weights):
    [δ, B, C] = W x (E -> R + N + N, no bias), Δ = softplus(W_dt δ + b_dt);
    s[v,t] = exp(Δ₁ A₁) s[v,t-lag] + Δ₁ B₁ x;  r[v,t] = exp(Δ₂ A₂) r[w,t] + Δ₂ (c ⊙ s[w,t] + B₂ x)
    with w = v - 1 (fwd) or v + 1 (bwd);  y = C₁·s + Σ_directions C₂·r."""
    V, L = max(v for v, _ in x) + 1, max(t for _, t in x) + 1
    Bsz, E = x[0, 0].shape

    def project(xt, kind):
        W, W_dt, b_dt = P[f"{head}.x_proj_{kind}"], P[f"{head}.dt_{kind}_weight"], P[f"{head}.dt_{kind}_bias"]
        R = W_dt.shape[1]
        N = (W.shape[0] - R) // 2
        dbl = xt @ W.T
        delta, B, C = dbl[:, :R], dbl[:, R:R + N], dbl[:, R + N:]
        return _softplus(delta @ W_dt.T + b_dt), B, C  # (B, E), (B, N), (B, N)

    A1 = -torch.exp(P[f"{head}.A_time_log"])  # (E, N)
    zero = x[0, 0].new_zeros(Bsz, E, A1.shape[1])
    s, y = {}, {}
    for v in range(V):
        for t in range(L):
            dt, B, C = project(x[v, t], "time")
            s[v, t] = (torch.exp(dt[:, :, None] * A1) * s.get((v, t - lag), zero)
                       + (dt * x[v, t])[:, :, None] * B[:, None, :])
            y[v, t] = (s[v, t] * C[:, None, :]).sum(-1)
    for kind in ("fwd", "bwd") if bidirectional else ("fwd",):
        A2, c = -torch.exp(P[f"{head}.A_{kind}_log"]), P[f"{head}.coupling_{kind}"]
        step = 1 if kind == "fwd" else -1
        for t in range(L):
            r = zero
            for v in range(V) if kind == "fwd" else range(V - 1, -1, -1):
                dt, B, C = project(x[v, t], kind)
                r = (torch.exp(dt[:, :, None] * A2) * r
                     + dt[:, :, None] * (c * s.get((v - step, t), zero) + x[v, t][:, :, None] * B[:, None, :]))
                y[v, t] = y[v, t] + (r * C[:, None, :]).sum(-1)
    return y


def _chimera_loop(layer, u, period, bidirectional, seasonal):
    """ssm.Chimera's forward from its docstring and the raw parameters, one token at a time:
    [x, z] = in_proj(u); x = SiLU(causal depthwise conv over time, kernel K, + bias) per
    variate; y = trend(x) (lag 1) + seasonal(x) (lag ``period``) + D ⊙ x;
    out = out_proj(y ⊙ SiLU(z)). ``period`` / ``bidirectional`` / ``seasonal`` are the test's
    configuration, not read back from the layer."""
    P = dict(layer.named_parameters())
    Bsz, L, V, _ = u.shape
    W_in = P["in_proj.weight"]
    E = W_in.shape[0] // 2
    xz = u @ W_in.T
    x_in, z = xz[..., :E], xz[..., E:]  # (B, L, V, E)
    w_conv, b_conv = P["conv1d.weight"][:, 0, :], P["conv1d.bias"]  # (E, K), (E,)
    K = w_conv.shape[1]
    x = {}
    for v in range(V):
        for t in range(L):
            acc = b_conv.expand(Bsz, E)
            for k in range(K):  # tap k reads time t - (K - 1) + k (zero before t = 0)
                if t - (K - 1) + k >= 0:
                    acc = acc + w_conv[:, k] * x_in[:, t - (K - 1) + k, v]
            x[v, t] = _silu(acc)
    trend = _chimera_head_loop(P, "trend", x, 1, bidirectional)
    season = _chimera_head_loop(P, "seasonal", x, period, bidirectional) if seasonal else None
    out = u.new_zeros(u.shape)
    for v in range(V):
        for t in range(L):
            y = trend[v, t] + P["D"] * x[v, t]
            if seasonal:
                y = y + season[v, t]
            out[:, t, v] = (y * _silu(z[:, t, v])) @ P["out_proj.weight"].T
    return out


def _perturbed_chimera(seed, **kwargs):
    """A float64 Chimera with every parameter moved off its structured init (c = 1, D = 1,
    equal A rows) and Δ biases in [-2, 0] (Δ of order 0.1 to 0.7)."""
    torch.manual_seed(seed)
    layer = ssm.Chimera(**kwargs).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("_bias") and ".dt_" in name:
                p.copy_(-2 * torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


@pytest.mark.parametrize(
    "L, V, period, d_conv, bidirectional, seasonal",
    [
        (7, 3, 3, 4, True, True),
        (5, 5, 2, 3, False, True),
        (5, 3, 9, 2, True, True),  # period > L: the seasonal time state never links two steps
        (7, 3, 3, 1, True, False),
        (6, 1, 4, 4, False, False),
        (9, 3, 4, 2, False, True),
    ],
)
def test_layer_matches_loop_forward_and_gradients(L, V, period, d_conv, bidirectional, seasonal):
    layer = _perturbed_chimera(L + V + period, d_model=4, d_state=3, d_conv=d_conv, expand=2, dt_rank=2,
                               period=period, bidirectional=bidirectional, seasonal=seasonal)
    assert (layer.seasonal is not None) == seasonal
    u = torch.randn(2, L, V, 4, dtype=torch.float64, requires_grad=True)
    names, params = zip(*layer.named_parameters())
    expected = _chimera_loop(layer, u, period, bidirectional, seasonal)
    out = layer(u)
    assert_close(out, expected)
    g = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, [u, *params], g)
    want = torch.autograd.grad(expected, [u, *params], g)
    assert_close(got[0], want[0], msg=lambda m: f"d/du: {m}")
    for name, a, b in zip(names, got[1:], want[1:]):
        assert_close_summed(a, b, msg=lambda m, name=name: f"d/d{name}: {m}")
    # every parameter is reached, except where the recurrence has nothing to decay or couple:
    # a single variate (r[v-1] = s[v-1] = 0), and the seasonal time state when period >= L
    heads = ("trend", "seasonal") if seasonal else ("trend",)
    idle = set()
    if V == 1:
        for h in heads:
            for d in ("fwd", "bwd"):
                idle |= {f"{h}.A_{d}_log", f"{h}.coupling_{d}"}
    if seasonal and period >= L:
        idle.add("seasonal.A_time_log")
    zero = {name for name, b in zip(names, want[1:]) if float(b.abs().max()) == 0.0}
    assert zero == idle & set(names)
