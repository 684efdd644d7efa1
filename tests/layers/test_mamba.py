"""ssm.Mamba: defaults and init, optimizer hints, forward and gradients against a float64
re-implementation written here with plain loops, step against forward, input checks,
backends, noise injection, and a peer oracle (mambapy)."""

import functools
import importlib
import math
import pathlib

import pytest
import torch
from devices import TRITON_DEVICE
from reference import run_steps
from tolerances import assert_close, assert_close_summed

import kernels
import ssm
from ssm.optim import param_groups
from ssm.robustness import FourierModeNoise, channel_timescale, inject_noise

F64 = torch.float64
ROOT = pathlib.Path(__file__).resolve().parents[2]
# The layer calls kernels.selective_scan with the default backend, whose CPU path ("torch")
# lives in kernels/selective_scan/pytorch.py; until that file exists the tests run the layer
# on the reference scan.
HAS_FAST_SCAN = (ROOT / "kernels" / "selective_scan" / "pytorch.py").exists()
SCAN_BACKEND = None if HAS_FAST_SCAN else "reference"


@pytest.fixture(autouse=True)
def scan_backend():
    with kernels.use_backend(SCAN_BACKEND):
        yield


# ---------------------------------------------------------------------------------------
# The float64 oracle: the Mamba block from its equations, one tap and one step at a time.


def silu(v):
    return v / (1 + torch.exp(-v))


def softplus(v):
    return torch.where(v > 20, v, torch.log1p(torch.exp(v)))


def direction(layer, x, z, suffix=""):
    """One scan direction on x, z (B, L, E) in float64 (autograd through the loops)."""
    conv = getattr(layer, f"conv1d{suffix}")
    x_proj, dt_proj = getattr(layer, f"x_proj{suffix}"), getattr(layer, f"dt_proj{suffix}")
    A = -torch.exp(getattr(layer, "A_b_log" if suffix else "A_log").to(F64))
    D = getattr(layer, f"D{suffix}").to(F64)
    Bsz, L, E = x.shape
    K, N, R = layer.d_conv, layer.d_state, layer.dt_rank
    w = conv.weight.to(F64)[:, 0, :]  # (E, K): tap k multiplies x[t - (K - 1 - k)]
    xc = torch.zeros_like(x) if conv.bias is None else conv.bias.to(F64).expand(Bsz, L, E).clone()
    for k in range(K):
        lag = K - 1 - k
        if lag < L:
            xc[:, lag:] = xc[:, lag:] + w[:, k] * x[:, : L - lag]
    xc = silu(xc)
    dbc = xc @ x_proj.weight.to(F64).T
    delta_in, Bm, Cm = dbc[..., :R], dbc[..., R : R + N], dbc[..., R + N :]
    delta = softplus(delta_in @ dt_proj.weight.to(F64).T + dt_proj.bias.to(F64))  # (B, L, E)
    h = torch.zeros(Bsz, E, N, dtype=F64)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * xc[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + D * xc[:, t])
    return torch.stack(ys, dim=1) * silu(z)


def mamba_oracle(layer, u):
    """The Mamba block (math.md §9.3) on u (B, L, d_model), float64; bidirectional: the mean
    of the forward direction and the flipped backward one."""
    u = u.to(F64)
    xz = u @ layer.in_proj.weight.to(F64).T
    if layer.in_proj.bias is not None:
        xz = xz + layer.in_proj.bias.to(F64)
    E = layer.d_inner
    x, z = xz[..., :E], xz[..., E:]
    y = direction(layer, x, z)
    if layer.bidirectional:
        y = (y + direction(layer, x.flip(1), z.flip(1), "_b").flip(1)) / 2
    out = y @ layer.out_proj.weight.to(F64).T
    if layer.out_proj.bias is not None:
        out = out + layer.out_proj.bias.to(F64)
    return out


CONFIGS = [
    dict(),
    dict(d_state=3, d_conv=2, expand=1, dt_rank=2, bias=True, conv_bias=False),
    dict(d_state=5, d_conv=3, dt_init="constant", dt_scale=2.0),
    dict(d_state=4, bidirectional=True),
]


def cfg_id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items()) or "defaults"


def perturbed(layer):
    """Move A_log and D off their init (all equal A rows, D = 1) so that a mixed-up channel
    or state would show."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith(("A", "D")):
                p.add_(0.3 * torch.randn_like(p))
    return layer


# ---------------------------------------------------------------------------------------
# Shapes, defaults, initialization


@pytest.mark.parametrize("d_model, rank", [(16, 1), (17, 2), (33, 3)])
def test_defaults_and_parameter_shapes(d_model, rank):
    torch.manual_seed(0)
    layer = ssm.Mamba(d_model)
    E, N = 2 * d_model, 16
    assert (layer.d_state, layer.d_conv, layer.expand, layer.d_inner, layer.dt_rank) == (16, 4, 2, E, rank)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {
        "in_proj.weight": (2 * E, d_model),
        "conv1d.weight": (E, 1, 4),
        "conv1d.bias": (E,),
        "x_proj.weight": (rank + 2 * N, E),
        "dt_proj.weight": (E, rank),
        "dt_proj.bias": (E,),
        "A_log": (E, N),
        "D": (E,),
        "out_proj.weight": (d_model, E),
    }
    assert layer.conv1d.padding == (3,) and layer.conv1d.groups == E


def test_A_log_is_S4D_real_and_D_is_one():
    layer = ssm.Mamba(6, d_state=5)
    expected = torch.log(torch.arange(1, 6, dtype=torch.float32)).expand(12, 5)
    torch.testing.assert_close(layer.A_log.detach(), expected)
    torch.testing.assert_close(-torch.exp(layer.A_log.detach()[3]), -torch.arange(1.0, 6.0))
    torch.testing.assert_close(layer.D.detach(), torch.ones(12))


@pytest.mark.parametrize("dt_min, dt_max", [(1e-3, 1e-1), (1e-2, 0.5)])
def test_dt_bias_init_is_inverse_softplus_of_log_uniform_dt(dt_min, dt_max):
    torch.manual_seed(1)
    layer = ssm.Mamba(64, dt_min=dt_min, dt_max=dt_max)  # 128 channels
    dt = torch.nn.functional.softplus(layer.dt_proj.bias.detach().double())
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    # log-uniform: log Δ spreads over the whole range
    span = math.log(dt_max) - math.log(dt_min)
    logs = (dt.log() - math.log(dt_min)) / span
    assert logs.min() < 0.1 and logs.max() > 0.9 and 0.35 < logs.mean() < 0.65
    assert getattr(layer.dt_proj.bias, "_no_reinit", False)


def test_dt_init_floor_clamps_dt():
    torch.manual_seed(2)
    layer = ssm.Mamba(8, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4)
    dt = torch.nn.functional.softplus(layer.dt_proj.bias.detach().double())
    torch.testing.assert_close(dt, torch.full_like(dt, 1e-4), rtol=1e-5, atol=0)


def test_dt_proj_weight_init_random_and_constant():
    torch.manual_seed(3)
    std = 4**-0.5 * 0.5
    rand = ssm.Mamba(64, dt_scale=0.5)  # dt_rank = 4
    w = rand.dt_proj.weight.detach()
    assert w.abs().max() <= std and w.abs().max() > 0.9 * std and w.std() > 0.4 * std
    const = ssm.Mamba(64, dt_init="constant", dt_scale=0.5, dt_rank=4)
    torch.testing.assert_close(const.dt_proj.weight.detach(), torch.full((128, 4), std))


def test_biases_follow_the_flags():
    layer = ssm.Mamba(5, bias=True, conv_bias=False)
    assert layer.in_proj.bias is not None and layer.out_proj.bias is not None and layer.conv1d.bias is None
    default = ssm.Mamba(5)
    assert default.in_proj.bias is None and default.out_proj.bias is None and default.conv1d.bias is not None


def test_A_log_and_D_have_no_weight_decay():
    layer = ssm.Mamba(5)
    assert layer.A_log._optim == {"weight_decay": 0.0} and layer.D._optim == {"weight_decay": 0.0}
    groups = param_groups(layer, weight_decay=0.1)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert {id(layer.A_log), id(layer.D), id(layer.dt_proj.bias), id(layer.conv1d.bias)} <= no_decay
    decay = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert id(layer.in_proj.weight) in decay and id(layer.x_proj.weight) in decay


def test_lr_hints_for_the_ssm_tensors():
    layer = ssm.Mamba(5, lr=1e-3)
    for p in (layer.A_log, layer.D, layer.dt_proj.bias):
        assert p._optim == {"lr": 1e-3, "weight_decay": 0.0}
    per_key = ssm.Mamba(5, lr={"A": 0.0, "dt": 0.0})
    assert "A_log" in dict(per_key.named_buffers()) and not per_key.dt_proj.bias.requires_grad
    assert per_key.D._optim == {"weight_decay": 0.0}
    assert all(p is not per_key.dt_proj.bias for g in param_groups(per_key) for p in g["params"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=0), "d_model must be a positive integer"),
        (dict(d_model=4, d_state=2.5), "d_state must be a positive integer"),
        (dict(d_model=4, dt_rank=0), "dt_rank must be 'auto' or a positive integer"),
        (dict(d_model=4, dt_min=0.2, dt_max=0.1), "dt_min <= dt_max"),
        (dict(d_model=4, dt_init="xavier"), "dt_init must be one of"),
    ],
)
def test_bad_constructor_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssm.Mamba(**kwargs)


# ---------------------------------------------------------------------------------------
# Forward and gradients against the oracle


@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
@pytest.mark.parametrize("L", [1, 2, 9])
def test_forward_matches_float64_oracle(cfg, L):
    torch.manual_seed(4)
    layer = perturbed(ssm.Mamba(5, **cfg).double())
    u = torch.randn(2, L, 5, dtype=F64)
    y = layer(u)
    assert y.shape == u.shape and y.dtype == F64
    assert_close(y, mamba_oracle(layer, u))


def test_empty_sequence_gives_empty_output():
    layer = ssm.Mamba(5, d_state=3)
    assert layer(torch.randn(2, 0, 5)).shape == (2, 0, 5)


@pytest.mark.parametrize("cfg", CONFIGS[:2] + CONFIGS[3:], ids=cfg_id)
def test_forward_float32_agrees_with_float64_oracle(cfg):
    torch.manual_seed(5)
    layer = perturbed(ssm.Mamba(7, **cfg))
    u = torch.randn(3, 20, 7)
    y = layer(u)
    assert y.dtype == torch.float32
    assert_close(y, mamba_oracle(layer, u), dtype=torch.float32)


@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[3]], ids=cfg_id)
def test_gradients_reach_every_parameter_and_match_the_oracle(cfg):
    torch.manual_seed(6)
    layer = perturbed(ssm.Mamba(5, **cfg).double())
    u = torch.randn(2, 6, 5, dtype=F64)
    weight = torch.randn(2, 6, 5, dtype=F64)
    grads = []
    for fn in (layer, functools.partial(mamba_oracle, layer)):
        layer.zero_grad()
        x = u.clone().requires_grad_(True)
        (fn(x) * weight).sum().backward()
        grads.append([x.grad] + [p.grad for p in layer.parameters()])
    names = ["input"] + [n for n, _ in layer.named_parameters()]
    for name, got, want in zip(names, *grads):
        assert got is not None and got.abs().max() > 0, f"no gradient for {name}"
        assert_close_summed(got, want, msg=name)


# ---------------------------------------------------------------------------------------
# Recurrent step


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=cfg_id)
@pytest.mark.parametrize("L", [1, 7])
def test_step_matches_forward_float64(cfg, L):
    torch.manual_seed(7)
    layer = perturbed(ssm.Mamba(5, **cfg).double()).eval()
    u = torch.randn(3, L, 5, dtype=F64)
    with torch.no_grad():
        assert_close(run_steps(layer, u), layer(u))


def test_step_matches_forward_float32():
    torch.manual_seed(8)
    layer = perturbed(ssm.Mamba(7, d_state=6))
    u = torch.randn(2, 11, 7)
    with torch.no_grad():
        assert_close(run_steps(layer, u), layer(u), dtype=torch.float32)


@pytest.mark.skipif(
    "triton" not in importlib.import_module("kernels.selective_state_update")._IMPLEMENTATIONS,
    reason="triton is not installed",
)
def test_step_on_the_triton_kernel_matches_forward():
    """Decoding (no grad) runs the forward-only Triton step kernel, on ``TRITON_DEVICE``; the
    forward it is compared with runs on CPU."""
    torch.manual_seed(15)
    layer = perturbed(ssm.Mamba(5, d_state=4))
    u = torch.randn(2, 6, 5)
    with torch.no_grad():
        expected = layer(u)
        layer.to(TRITON_DEVICE)
        with kernels.use_backend("triton"):
            assert_close(run_steps(layer, u.to(TRITON_DEVICE)), expected, dtype=torch.float32)


def test_init_state_and_step_are_functional():
    layer = ssm.Mamba(5, d_state=3, d_conv=2).double()
    state = layer.init_state(4)
    conv, h = state
    assert isinstance(state, ssm.layers.MambaState) and state.conv is conv and state.ssm is h
    assert conv.shape == (4, 10, 2) and h.shape == (4, 10, 3) and conv.dtype == h.dtype == F64
    assert not conv.any() and not h.any()
    assert layer.float().init_state(1).ssm.dtype == torch.float32
    layer.double()
    u = torch.randn(4, 5, dtype=F64)
    y, new = layer.step(u, state)
    assert y.shape == (4, 5) and not conv.any() and not h.any()  # the old state is untouched
    assert new.conv[:, :, -1].abs().max() > 0 and new.ssm.abs().max() > 0


def test_step_is_differentiable():
    torch.manual_seed(9)
    layer = ssm.Mamba(5, d_state=3).double()
    state = layer.init_state(2)
    for t in range(3):
        y, state = layer.step(torch.randn(2, 5, dtype=F64), state)
    y.sum().backward()
    assert layer.A_log.grad is not None and layer.dt_proj.bias.grad.abs().max() > 0


# ---------------------------------------------------------------------------------------
# Input checks


def test_bad_inputs_are_rejected_with_the_expected_shape():
    layer = ssm.Mamba(5, d_state=3)
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, length, 5\), got \(2, 7\)"):
        layer(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"\(batch, length, 5\), got \(2, 7, 4\)"):
        layer(torch.randn(2, 7, 4))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 7, 5, dtype=torch.long))
    state = layer.init_state(2)
    with pytest.raises(ValueError, match=r"x_t of shape \(batch, 5\)"):
        layer.step(torch.randn(2, 1, 5), state)
    with pytest.raises(ValueError, match=r"conv state has shape \(2, 10, 4\), expected \(3, 10, 4\)"):
        layer.step(torch.randn(3, 5), state)
    with pytest.raises(ValueError, match=r"ssm state has shape \(2, 10, 4\), expected \(2, 10, 3\)"):
        layer.step(torch.randn(2, 5), (state.conv, torch.zeros(2, 10, 4)))
    with pytest.raises(ValueError, match=r"conv state has dtype torch.float16, expected torch.float32"):
        layer.step(torch.randn(2, 5), (state.conv.half(), state.ssm))
    layer.double()  # a state made before the cast would keep float32 precision
    with pytest.raises(ValueError, match=r"conv state has dtype torch.float32, expected torch.float64.*init_state"):
        layer.step(torch.randn(2, 5, dtype=torch.float64), state)
    with pytest.raises(TypeError, match="init_state"):
        layer.step(torch.randn(2, 5, dtype=torch.float64), state.ssm)


def test_bidirectional_has_no_step():
    layer = ssm.Mamba(5, bidirectional=True)
    for call in (lambda: layer.init_state(2), lambda: layer.step(torch.randn(2, 5), None)):
        with pytest.raises(RuntimeError, match="bidirectional"):
            call()


def test_bidirectional_sees_the_future_and_the_causal_layer_does_not():
    torch.manual_seed(10)
    u = torch.randn(1, 8, 5, dtype=F64)
    u2 = u.clone()
    u2[:, 5:] += 1.0
    causal = ssm.Mamba(5, d_state=4).double()
    assert_close(causal(u)[:, :5], causal(u2)[:, :5])
    bi = ssm.Mamba(5, d_state=4, bidirectional=True).double()
    assert (bi(u)[:, :5] - bi(u2)[:, :5]).abs().max() > 1e-6


# ---------------------------------------------------------------------------------------
# Backends, blocks, noise


@pytest.mark.skipif(not HAS_FAST_SCAN, reason="kernels/selective_scan/pytorch.py (the default CPU scan) is not there yet")
def test_reference_backend_matches_the_default_backend():
    torch.manual_seed(11)
    layer = perturbed(ssm.Mamba(6, d_state=5, bidirectional=True))
    u = torch.randn(2, 13, 6)
    results = []
    for backend in (None, "reference"):
        layer.zero_grad()
        x = u.clone().requires_grad_(True)
        with kernels.use_backend(backend):
            y = layer(x)
        y.square().sum().backward()
        results.append([y, x.grad] + [p.grad for p in layer.parameters()])
    for got, want in zip(*results):
        assert_close_summed(got, want, dtype=torch.float32)


def test_mamba_classifier_with_output_none_runs_and_trains():
    torch.manual_seed(12)
    model = ssm.SequenceClassifier(
        d_model=6, n_layers=2, layer=functools.partial(ssm.Mamba, d_state=4), d_output=3, n_tokens=9,
        norm="layer", prenorm=True, output="none",
    )
    block = model.backbone.blocks[0]
    assert isinstance(block.layer, ssm.Mamba) and isinstance(block.output, torch.nn.Identity)
    logits = model(torch.randint(0, 9, (2, 10)))
    assert logits.shape == (2, 3)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_inject_noise_adds_noise_to_the_input_of_every_mamba_layer():
    torch.manual_seed(13)
    model = ssm.SequenceClassifier(
        d_model=4, n_layers=2, layer=functools.partial(ssm.Mamba, d_state=3), d_output=2, d_input=1, output="none",
    ).eval()
    x = torch.randn(2, 12, 1)
    with torch.no_grad():
        clean = model(x)
        seen = []
        noise = FourierModeNoise(3.0, amplitude=1.0)

        def recording(layer, inp):
            seen.append((layer, inp.shape))
            return noise(layer, inp)

        with inject_noise(model, recording) as layers:
            noisy = model(x)
        torch.testing.assert_close(model(x), clean)
    assert len(layers) == 2 and all(isinstance(m, ssm.Mamba) for m in layers)
    assert [m for m, _ in seen] == layers and all(s == (2, 12, 4) for _, s in seen)
    assert not torch.allclose(clean, noisy)
    layer = layers[0]
    dt = torch.nn.functional.softplus(layer.dt_proj.bias.detach())
    torch.testing.assert_close(channel_timescale(layer), dt.log().mean().exp().expand(4))


# ---------------------------------------------------------------------------------------
# Peer oracle


@pytest.mark.parametrize("cfg", [dict(), dict(d_state=5, d_conv=3, expand=1, dt_rank=3)], ids=cfg_id)
def test_matches_mambapy_forward_and_step(cfg):
    mambapy = pytest.importorskip("mambapy.mamba")
    torch.manual_seed(14)
    d_model = 9
    ours = perturbed(ssm.Mamba(d_model, **cfg))
    config = mambapy.MambaConfig(
        d_model=d_model, n_layers=1, d_state=ours.d_state, expand_factor=ours.expand, d_conv=ours.d_conv,
        dt_rank=ours.dt_rank, pscan=False,
    )
    peer = mambapy.MambaBlock(config)
    peer.load_state_dict(ours.state_dict())
    u = torch.randn(2, 13, d_model)
    with torch.no_grad():
        assert_close(ours(u), peer(u), dtype=torch.float32)
        state = ours.init_state(2)
        cache = (torch.zeros(2, ours.d_inner, ours.d_state), torch.zeros(2, ours.d_inner, ours.d_conv - 1))
        for t in range(4):
            y, state = ours.step(u[:, t], state)
            y_peer, cache = peer.step(u[:, t], cache)
            assert_close(y, y_peer, dtype=torch.float32)


def test_a_mask_of_the_wrong_shape_is_a_clear_error():
    layer = ssm.Mamba(4, d_state=2)
    u = torch.randn(2, 6, 4)
    for mask in (torch.ones(2, 5, 1), torch.ones(3, 6, 1), [1, 1]):
        with pytest.raises(ValueError, match=r"mask of shape \(2, 6, 1\)"):
            layer(u, mask=mask)
    torch.testing.assert_close(layer(u, mask=torch.ones(2, 6, dtype=torch.bool)), layer(u))



@pytest.mark.parametrize("make", [lambda: ssm.Mamba(8, bidirectional=True), lambda: ssm.SS2D(8)])
def test_dt_bias_keeps_no_reinit_on_copies(make):
    """mamba_ssm's generic init zeroes every Linear bias not flagged _no_reinit; deepcopy
    (e.g. a stack of copied blocks), pickling and load_state_dict(assign=True) dropped the flag."""
    import copy
    import pickle

    layer = make()
    fresh = make()
    fresh.load_state_dict(layer.state_dict(), assign=True)
    for copied in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer)), fresh):
        biases = [p for name, p in copied.named_parameters() if "dt_proj" in name and name.endswith("bias")]
        assert biases and all(getattr(p, "_no_reinit", False) for p in biases)
        others = [p for name, p in copied.named_parameters() if not ("dt_proj" in name and name.endswith("bias"))]
        assert not any(getattr(p, "_no_reinit", False) for p in others)


def test_factory_arguments_as_in_mamba_ssms_constructor():
    """device / dtype as for nn.Linear (the same initial values as casting afterwards), and
    layer_idx recorded."""
    torch.manual_seed(50)
    made = ssm.Mamba(8, d_state=4, dtype=torch.float64, layer_idx=2)
    torch.manual_seed(50)
    cast = ssm.Mamba(8, d_state=4).double()
    assert made.layer_idx == 2 and cast.layer_idx is None
    for (name, p), q in zip(made.named_parameters(), cast.parameters()):
        assert p.dtype == torch.float64 and torch.equal(p, q), name
    assert made.A_log._no_weight_decay and made.dt_proj.bias._no_reinit  # flags survive the cast
    assert all(p.is_meta for p in ssm.Mamba(8, device="meta").parameters())
    with pytest.raises(ValueError, match="floating torch.dtype"):
        ssm.Mamba(8, dtype=torch.int64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_factory_dtype_keeps_A_log_and_D_in_float32(dtype):
    """mamba_ssm creates A_log and D in float32 whatever its dtype argument: A = -exp(A_log)
    in bfloat16 would keep about 3 significant digits."""
    torch.manual_seed(51)
    layer = ssm.Mamba(8, d_state=4, dtype=dtype, bidirectional=True)
    kept = {"A_log", "D", "A_b_log", "D_b"}
    for name, p in layer.named_parameters():
        assert p.dtype == (torch.float32 if name in kept else dtype), name
    torch.manual_seed(51)
    exact = ssm.Mamba(8, d_state=4, bidirectional=True)
    torch.testing.assert_close(layer.A_log, exact.A_log, rtol=0, atol=0)  # not rounded through half
    u = torch.randn(2, 5, 8).to(dtype)
    assert layer(u).dtype == dtype
    causal = ssm.Mamba(8, d_state=4, dtype=dtype)
    y, state = causal.step(u[:, 0], causal.init_state(2))
    assert y.dtype == dtype and state.ssm.dtype == torch.float32
