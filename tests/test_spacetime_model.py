"""ssm.SpaceTime and ssm.models.PaddedForecaster: shapes, the block and loss definitions
recomputed from their parts, any-horizon forecasts, and clear errors."""

import functools

import pytest
import torch

import ssm
from ssm.models import PaddedForecaster, SpaceTimeBlock

F64 = torch.float64


def small(**kwargs):
    defaults = dict(lag=20, horizon=6, d_model=16, d_state=5, n_kernels=2, max_avg_window=8, dropout=0.0)
    return ssm.SpaceTime(**{**defaults, **kwargs}).double()


def test_paper_defaults_have_the_reference_parameter_count():
    """One encoder block (16 sets of (a, b, c) at d = 64, D, a 128 x 128 MLP), a decoder with
    (a, b, c, k) per channel, a 128 -> 1 head; the ResidualSSM is fixed."""
    model = ssm.SpaceTime(lag=336, horizon=720)
    expected = 16 * 64 * 3 + 128 + (128 * 128 + 128) + 128 * 64 * 4 + (128 + 1)
    assert sum(p.numel() for p in model.parameters()) == expected
    block = model.encoder[0]
    assert block.ssm.n_kernels == 16 and block.ssm.norm_order == 1 and isinstance(block.preprocess, ssm.ResidualSSM)
    assert model.decoder.n_kernels == 128 and model.decoder.d_state == 64


def test_encoder_block_is_preprocess_plus_ssm_plus_mlp():
    torch.manual_seed(0)
    block = SpaceTimeBlock(16, 4, 2, dropout=0.0, preprocess=True, max_avg_window=8).double()
    u = torch.randn(2, 12, 16, dtype=F64)
    z = block.preprocess(u)
    s = block.ssm(z)
    expected = z + s + block.mlp[2](torch.nn.functional.gelu(s))
    torch.testing.assert_close(block(u), expected)


@pytest.mark.parametrize("variates, V, n_targets", [("independent", 1, None), ("independent", 3, 1), ("joint", 3, 2)])
def test_forecast_shapes_and_aux_losses_from_the_parts(variates, V, n_targets):
    torch.manual_seed(1)
    model = small(n_variates=V, n_targets=n_targets, variates=variates).eval()
    x = torch.randn(4, 20, V, dtype=F64)
    forecast, aux = model(x)
    T = V if n_targets is None else n_targets
    assert forecast.shape == (4, 6, T) and set(aux) == {"lag", "decoder_input"}
    series = x.transpose(1, 2).reshape(-1, 20, 1) if variates == "independent" else x
    z = model.embedding(series) if variates == "joint" else series.expand(-1, -1, 16)
    for block in model.encoder:
        z = block(z)
    y = model.head(model.decoder(z, 6))
    expected = y.reshape(4, V, 6).transpose(1, 2)[..., -T:] if variates == "independent" else y
    torch.testing.assert_close(forecast, expected)
    y_open, u_hat = model.decoder.open_loop(z)
    s = 5  # burn-in: d_state
    target = series if variates == "independent" else series[..., -T:]
    rmse = lambda e: e.square().mean().sqrt()  # noqa: E731
    torch.testing.assert_close(aux["lag"], rmse(model.head(y_open[:, s - 1 : 19]) - target[:, s:]))
    torch.testing.assert_close(aux["decoder_input"], rmse(u_hat[:, s - 1 : 19] - z[:, s:]))


def test_forecast_takes_any_horizon_and_lag():
    torch.manual_seed(2)
    model = small().eval()
    x = torch.randn(2, 20, 1, dtype=F64)
    long = model.forecast(x, 40)
    assert long.shape == (2, 40, 1)
    torch.testing.assert_close(long[:, :6], model(x)[0])  # one closed loop serves every horizon
    assert model.forecast(torch.randn(2, 9, 1, dtype=F64)).shape == (2, 6, 1)
    torch.testing.assert_close(model.forecast(x, 40.0), long)  # a whole-number float is fine
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="horizon must be a positive integer"):
            model.forecast(x, bad)


@pytest.mark.parametrize("aux_loss", ["mse", "mae"])
def test_aux_loss_kinds_and_switches(aux_loss):
    torch.manual_seed(3)
    model = small(aux_loss=aux_loss, burn_in=3)
    x = torch.randn(2, 20, 1, dtype=F64)
    _, aux = model(x)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in aux.values())
    assert torch.is_tensor(small(aux_losses=False)(x))
    forecast, aux = model(x[:, :3])  # window no longer than the burn-in: nothing to score
    assert aux == {} and forecast.shape == model(x)[0].shape


def test_single_closed_loop_layer_on_the_raw_series():
    torch.manual_seed(4)
    model = ssm.SpaceTime(lag=10, horizon=4, d_model=1, d_state=3, n_encoder_blocks=0, decoder="shift",
                          decoder_norm_order=0, head=False, dropout=0.0).double()
    assert isinstance(model.decoder, ssm.ClosedLoopShiftSSM) and isinstance(model.head, torch.nn.Identity)
    x = torch.randn(2, 10, 1, dtype=F64)
    torch.testing.assert_close(model(x)[0], model.decoder(x, 4))


def test_trains_a_step_with_finite_gradients():
    torch.manual_seed(5)
    model = small(n_variates=2, dropout=0.1)
    x, y = torch.randn(3, 20, 2, dtype=F64), torch.randn(3, 6, 2, dtype=F64)
    forecast, aux = model(x)
    ((forecast - y).square().mean() + sum(aux.values())).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variates="mixed"), "variates"),
        (dict(aux_loss="huber"), "aux_loss"),
        (dict(n_targets=3), "n_targets"),
        (dict(dropout=1.0), "dropout"),
        (dict(decoder="diagonal"), "decoder"),
        (dict(n_encoder_blocks=-1), "n_encoder_blocks"),
        (dict(head=False), "head=False"),
        (dict(burn_in=0), "burn_in"),
        (dict(n_kernels=3), "must divide"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_bad_inputs():
    model = small(n_variates=2)
    with pytest.raises(ValueError, match=r"\(batch, lag, 2\)"):
        model(torch.randn(2, 20, 3, dtype=F64))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(2, 20, 2, dtype=torch.long))


def test_padded_forecaster_reads_the_free_response():
    torch.manual_seed(6)
    net = PaddedForecaster(functools.partial(ssm.S4D, d_state=4), lag=12, horizon=5, n_variates=2, n_targets=1).double()
    x = torch.randn(3, 12, 2, dtype=F64)
    full = net.layer(torch.cat([x, torch.zeros(3, 5, 2, dtype=F64)], 1))
    torch.testing.assert_close(net(x), full[:, 12:, -1:])
    with pytest.raises(ValueError, match=r"\(batch, lag, 2\)"):
        net(torch.randn(3, 12, 1, dtype=F64))
    with pytest.raises(ValueError, match=r"\(batch, lag, 2\), got \(3, 0, 2\)"):
        net(torch.randn(3, 0, 2, dtype=F64))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(3, 12, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="n_targets"):
        PaddedForecaster(functools.partial(ssm.S4D, d_state=4), lag=12, horizon=5, n_variates=2, n_targets=3)
