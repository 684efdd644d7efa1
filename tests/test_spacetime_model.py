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


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / 2**0.5))


def test_later_encoder_blocks_skip_preprocessing_and_use_one_kernel_set_per_channel():
    """Guards SpaceTime's encoder: only block 0 has ResidualSSM and n_kernels sets; later: u + s + W GELU(s) + b."""
    torch.manual_seed(7)
    model = small(n_encoder_blocks=2)
    assert isinstance(model.encoder[0].preprocess, ssm.ResidualSSM) and model.encoder[0].ssm.n_kernels == 2
    d_model, d_state = 16, 5
    for block in model.encoder[1:]:
        assert block.preprocess is None and block.ssm.n_kernels == d_model
        # d_model sets of (a, b, c) of size d_state, the skip D, and the d_model x d_model MLP
        n_params = d_model * d_state * 3 + d_model + d_model * d_model + d_model
        assert sum(p.numel() for p in block.parameters()) == n_params
        u = torch.randn(2, 12, d_model, dtype=F64)
        s = block.ssm(u)
        expected = u + s + gelu(s) @ block.mlp[2].weight.T + block.mlp[2].bias
        torch.testing.assert_close(block(u), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm_order, decoder_norm_order, expected", [(0, None, 0), (1, None, 1), (1, 0, 0), (0, 1, 1)])
def test_decoder_norm_order_defaults_to_the_encoders(norm_order, decoder_norm_order, expected):
    """Guards decoder_norm_order=None -> the decoder normalizes like the encoder (norm_order), else as given."""
    torch.manual_seed(8)
    model = small(norm_order=norm_order, decoder_norm_order=decoder_norm_order, decoder_init_std=0.3)
    reference = ssm.ClosedLoopCompanionSSM(16, 5, norm_order=expected, init_std=0.3).double()
    reference.load_state_dict(model.decoder.state_dict())
    z = torch.randn(2, 20, 16, dtype=F64)
    torch.testing.assert_close(model.decoder(z, 6), reference(z, 6), rtol=1e-12, atol=1e-12)


def layer_norm_by_hand(x, module):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


def forecaster_by_hand(net, x, targets, masks=None):
    """MultivariateForecaster's formula written out with loops over samples, steps and variates (masks[i]
    (B, lag, V, d_model) multiplies residual branch i, standing in for its dropout)."""
    B, lag, V = x.shape
    out = []
    for b in range(B):
        e = torch.stack([torch.stack([x[b, t, v] * net.value_embedding.weight[:, 0] + net.value_embedding.bias
                                      + net.variate_embedding[v] for v in range(V)]) for t in range(lag)])
        for i, (norm, layer) in enumerate(zip(net.norms, net.layers)):
            branch = layer_norm_by_hand(e, norm) @ layer.weight.T + layer.bias
            e = e + (branch if masks is None else masks[i][b] * branch)
        rows = []
        for h in range(net.horizon):
            row = []
            for v in targets:
                f = sum(net.time_head.weight[h, t] * e[t, v] for t in range(lag)) + net.time_head.bias[h]
                row.append(layer_norm_by_hand(f, net.head_norm) @ net.channel_head.weight[0] + net.channel_head.bias[0])
            rows.append(torch.stack(row))
        out.append(torch.stack(rows))
    return torch.stack(out)


def test_multivariate_forecaster_matches_embedding_blocks_and_heads_by_hand():
    """Guards MultivariateForecaster forward and backward against its formula written out with loops."""
    from ssm.models import MultivariateForecaster

    torch.manual_seed(9)
    net = MultivariateForecaster(6, 2, lambda d: torch.nn.Linear(d, d), lag=5, horizon=4, n_variates=3, n_targets=2)
    net = net.double()
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    x = torch.randn(2, 5, 3, dtype=F64, requires_grad=True)
    weights = torch.randn(2, 4, 2, dtype=F64)
    got, want = net(x), forecaster_by_hand(net, x, targets=(1, 2))  # the last n_targets = 2 variates
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    params = [x] + list(net.parameters())
    grads_got = torch.autograd.grad((got * weights).sum(), params)
    grads_want = torch.autograd.grad((want * weights).sum(), params)
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_aux_loss_gradients_reach_the_encoder_through_both_terms():
    """Guards the backward of the aux losses: grads of the lag and decoder_input losses equal the written-out RMSEs'."""
    torch.manual_seed(11)
    model = small(lag=12, burn_in=2)
    x = torch.randn(2, 12, 1, dtype=F64)
    _, aux = model(x)
    series = x.transpose(1, 2).reshape(-1, 12, 1)
    z = series.expand(-1, -1, 16)
    for block in model.encoder:
        z = block(z)
    y_open, u_hat = model.decoder.open_loop(z)
    rmse = lambda e: e.square().mean().sqrt()  # noqa: E731
    lag_loss = rmse(model.head(y_open[:, 1:11]) - series[:, 2:])
    input_loss = rmse(u_hat[:, 1:11] - z[:, 2:])
    params = [p for p in model.parameters() if p.requires_grad]
    for got, want in ((aux["lag"], lag_loss), (aux["decoder_input"], input_loss)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        g_got = torch.autograd.grad(got, params, retain_graph=True, allow_unused=True)
        g_want = torch.autograd.grad(want, params, retain_graph=True, allow_unused=True)
        for a, b in zip(g_got, g_want):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class FixedMasks(torch.nn.Module):
    """A stand-in for nn.Dropout that multiplies its k-th call's input by masks[k]."""

    def __init__(self, masks):
        super().__init__()
        self.masks, self.calls = list(masks), 0

    def forward(self, x):
        self.calls += 1
        return x * self.masks[self.calls - 1]


def test_multivariate_forecaster_dropout_acts_on_each_residual_branch_only():
    """Guards the dropout placement of MultivariateForecaster: e ← e + Drop(layer(LN(e))), once per block."""
    from ssm.models import MultivariateForecaster

    torch.manual_seed(12)
    net = MultivariateForecaster(4, 2, lambda d: torch.nn.Linear(d, d), lag=3, horizon=2, n_variates=2).double()
    x = torch.randn(2, 3, 2, dtype=F64)
    masks = [2.0 * torch.randint(0, 2, (2, 3, 2, 4)).double() for _ in range(2)]
    net.dropout = FixedMasks(masks)
    torch.testing.assert_close(net(x), forecaster_by_hand(net, x, targets=(0, 1), masks=masks), rtol=1e-12, atol=1e-12)
    assert net.dropout.calls == 2


def test_padded_forecaster_without_n_targets_forecasts_every_series():
    """Guards PaddedForecaster(n_targets=None): all V series of layer([x; 0])[:, lag:] are returned."""
    torch.manual_seed(13)
    net = PaddedForecaster(functools.partial(ssm.S4D, d_state=4), lag=7, horizon=3, n_variates=3).double()
    x = torch.randn(2, 7, 3, dtype=F64)
    full = net.layer(torch.cat([x, torch.zeros(2, 3, 3, dtype=F64)], 1))
    torch.testing.assert_close(net(x), full[:, 7:], rtol=0, atol=0)


def test_default_burn_in_of_a_window_shorter_than_d_state_scores_its_last_step():
    """Guards the default burn_in = min(d_state, lag - 1): a 4-step window with d_state 5 scores step 3 from step 2."""
    torch.manual_seed(14)
    model = small().eval()  # d_state 5
    x = torch.randn(2, 4, 1, dtype=F64)
    _, aux = model(x)
    assert set(aux) == {"lag", "decoder_input"}
    z = x.expand(-1, -1, 16)
    for block in model.encoder:
        z = block(z)
    y_open, u_hat = model.decoder.open_loop(z)
    rmse = lambda e: e.square().mean().sqrt()  # noqa: E731
    torch.testing.assert_close(aux["lag"], rmse(model.head(y_open[:, 2:3]) - x[:, 3:]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(aux["decoder_input"], rmse(u_hat[:, 2:3] - z[:, 3:]), rtol=1e-12, atol=1e-12)
