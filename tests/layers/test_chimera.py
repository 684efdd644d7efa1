"""ssm.Chimera's 2D recurrence against a sequential loop written here from the equations,
its shift invariance (a 2D convolution) with constant parameters, the variate directions,
and the layer / forecaster shapes and gradients."""

import functools

import pytest
import torch
from tolerances import assert_close

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
