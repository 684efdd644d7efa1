"""ssm.SS2D, ssm.NSSMamba, ssm.Mamba2D against independent compositions of their parts
(explicit scan orders and per-direction loops), and the ImageClassifier backbone."""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from tolerances import assert_close, assert_close_summed

import ssm
from ssm.optim import param_groups
from kernels import selective_scan, selective_scan_2d
from ssm import scan_orders

LAYERS = [ssm.SS2D, ssm.NSSMamba, ssm.Mamba2D]


def _inner(layer, u):
    """x after in_proj, the k×k depthwise conv ("same" padding) and SiLU (B, E, H, W), and z
    (B, H, W, E), from the raw weights (F.linear / F.conv2d, not the layer's modules)."""
    x, z = F.linear(u, layer.in_proj.weight, layer.in_proj.bias).chunk(2, dim=-1)
    k = layer.conv2d.weight.shape[-1]
    x = F.silu(F.conv2d(x.permute(0, 3, 1, 2), layer.conv2d.weight, layer.conv2d.bias, padding=k // 2,
                        groups=layer.d_inner))
    return x, z


def _direction_scan(layer, k, seq):
    """Direction k's selective scan of seq (B, E, L) with its own projections."""
    p = layer.ssm
    E, N, R = p.d_inner, p.d_state, p.dt_rank
    dbl = torch.einsum("bel,ce->bcl", seq, p.x_proj_weight[k])
    dts, B, C = dbl.split([R, N, N], dim=1)
    delta = torch.einsum("brl,er->bel", dts, p.dt_projs_weight[k])
    rows = slice(k * E, (k + 1) * E)
    return selective_scan(seq, delta, -torch.exp(p.A_logs[rows]), B, C, p.Ds[rows], delta_bias=p.dt_projs_bias[k],
                          delta_softplus=True, backend="reference")


def _finish(layer, y, z):
    """y (B, H, W, E) -> out_proj(norm(y) * silu(z)), from the raw weights."""
    norm = layer.out_norm
    if isinstance(norm, nn.LayerNorm):
        y = F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return F.linear(y * F.silu(z), layer.out_proj.weight, layer.out_proj.bias)


def _orders(cls, layer, H, W, K):
    """The K scanned orders as permutations of row-major pixels; unidirectional layers scan
    their two forward walks (rows, columns / NSS of x and of xᵀ), not a walk and its reverse."""
    pixels = torch.arange(H * W).view(H, W)
    if cls is ssm.SS2D:  # row-major, column-major, both reversed
        rows, cols = pixels.reshape(-1), pixels.T.reshape(-1)
        return [rows, cols, rows.flip(0), cols.flip(0)][:K]

    def walk(image):  # NSS over an image of pixel indices
        return image.reshape(-1)[scan_orders.nss(*image.shape, layer.stripe, layer.shift)]

    x, xt, rot, rot_t = walk(pixels), walk(pixels.T), walk(pixels.flip(0, 1)), walk(pixels.flip(0, 1).T)
    return [x, rot, xt, rot_t] if K == 4 else [x, xt]


def _multi_order_reference(cls, layer, u, bidirectional):
    """SS2D / NSSMamba from the raw weights: one reference selective scan per explicit order,
    brought back to row-major order, summed (SS2D) or mixed by sequence-shuffle attention."""
    Bsz, H, W, _ = u.shape
    x, z = _inner(layer, u)
    flat = x.reshape(Bsz, layer.d_inner, H * W)
    K = 4 if bidirectional else 2
    outs = []
    for k, perm in enumerate(_orders(cls, layer, H, W, K)):
        ys = _direction_scan(layer, k, flat[..., perm])
        outs.append(ys[..., torch.argsort(perm)].view(Bsz, layer.d_inner, H, W))
    if cls is ssm.SS2D:
        y = sum(outs)
    else:  # sequence-shuffle attention: a sigmoid K x K mix per channel of the pooled outputs
        pooled = torch.stack([o.mean(dim=(-2, -1)) for o in outs], dim=2)  # (B, E, K)
        w = layer.attention.mix.weight.view(layer.d_inner, K, K)
        b = layer.attention.mix.bias.view(layer.d_inner, K)
        weights = torch.sigmoid(torch.einsum("ekj,bej->bek", w, pooled) + b)
        y = sum(weights[:, :, k, None, None] * outs[k] for k in range(K))
    return _finish(layer, y.permute(0, 2, 3, 1), z)


def _mamba2d_reference(layer, u, bidirectional):
    """Mamba2D from the raw weights: the reference 2D selective scan of x and, bidirectional,
    of x rotated by 180° with the second parameter set, rotated back and added."""
    x, z = _inner(layer, u)
    p = layer.ssm
    E, N, R = p.d_inner, p.d_state, p.dt_rank
    y = 0
    for k in range(2 if bidirectional else 1):
        xk = x.flip(-2, -1) if k else x
        dbl = torch.einsum("behw,ce->bchw", xk, p.x_proj_weight[k])
        dts, B, C = dbl.split([R, N, N], dim=1)
        delta = torch.einsum("brhw,er->behw", dts, p.dt_projs_weight[k])
        rows = slice(k * E, (k + 1) * E)
        yk = selective_scan_2d(xk, delta, -torch.exp(p.A_logs[rows]), B, C, p.Ds[rows], delta_bias=p.dt_projs_bias[k],
                               delta_softplus=True, backend="reference")
        y = y + (yk.flip(-2, -1) if k else yk)
    return _finish(layer, y.permute(0, 2, 3, 1), z)


def _reference(cls, layer, u, bidirectional):
    if cls is ssm.Mamba2D:
        return _mamba2d_reference(layer, u, bidirectional)
    return _multi_order_reference(cls, layer, u, bidirectional)


@pytest.mark.parametrize("cls", [ssm.SS2D, ssm.NSSMamba])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("H, W", [(1, 1), (3, 5), (4, 4), (5, 9)])
def test_multi_order_layers_match_explicit_orders(cls, bidirectional, H, W):
    torch.manual_seed(0)
    layer = cls(8, d_state=3, bidirectional=bidirectional).double()
    u = torch.randn(2, H, W, 8, dtype=torch.float64)
    assert_close(layer(u), _multi_order_reference(cls, layer, u, bidirectional))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_mamba2d_matches_2d_scan_and_rotation(bidirectional):
    torch.manual_seed(0)
    layer = ssm.Mamba2D(8, d_state=3, bidirectional=bidirectional).double()
    u = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    assert_close(layer(u), _mamba2d_reference(layer, u, bidirectional))


def _perturb(layer, seed):
    """Move every parameter off its structured init (D = 1, equal A rows, LayerNorm 1 / 0)
    so that no gradient entry is special; Δ biases land in [-2, 0] (Δ of order 0.1 to 0.7)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if name.endswith("dt_projs_bias"):
                p.copy_(-2 * torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.add_(0.2 * noise)
    return layer


def _grads(out, inputs, cotangent):
    return torch.autograd.grad(out, inputs, cotangent)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("options", [{}, dict(d_conv=5, bias=True, conv_bias=False, expand=1)],
                         ids=["defaults", "dconv5-bias-noconvbias"])
def test_image_layer_gradients_match_reference(cls, bidirectional, options):
    """d out / d u and d out / d every parameter of the layer equal autograd through the
    independent forward oracle (explicit orders / reference scans, raw weights)."""
    torch.manual_seed(0)
    layer = _perturb(cls(8, d_state=3, bidirectional=bidirectional, **options).double(), 1)
    H, W = 3, 5
    u = torch.randn(2, H, W, 8, dtype=torch.float64, requires_grad=True)
    names, params = zip(*layer.named_parameters())
    g = torch.randn(2, H, W, 8, dtype=torch.float64)
    out = layer(u)
    expected_out = _reference(cls, layer, u, bidirectional)
    assert_close(out, expected_out)
    got = _grads(out, [u, *params], g)
    expected = _grads(expected_out, [u, *params], g)
    assert_close(got[0], expected[0], msg=lambda m: f"d/du: {m}")
    assert float(got[0].abs().max()) > 0
    for name, a, b in zip(names, got[1:], expected[1:]):
        assert_close_summed(a, b, msg=lambda m, name=name: f"d/d{name}: {m}")


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(
    "options, H, W",
    [
        (dict(d_conv=1), 3, 5),
        (dict(d_conv=5, bias=True, conv_bias=False), 5, 3),
        (dict(d_conv=1, bias=True, conv_bias=False, expand=1), 1, 7),
        (dict(d_conv=5, bias=True, out_norm="none"), 7, 5),
        (dict(d_conv=3, conv_bias=False, out_norm="layer"), 3, 3),
    ],
    ids=["dconv1", "dconv5-bias-noconvbias", "dconv1-bias-noconvbias-expand1", "dconv5-bias-nonorm",
         "noconvbias-layernorm"],
)
def test_image_layers_match_reference_at_non_default_options(cls, bidirectional, options, H, W):
    torch.manual_seed(0)
    layer = _perturb(cls(8, d_state=3, bidirectional=bidirectional, **options).double(), 2)
    bias, conv_bias = options.get("bias", False), options.get("conv_bias", True)
    # the options reach the layer (the oracle reads the raw weights, so it cannot see a missing bias)
    assert tuple(layer.conv2d.weight.shape[-2:]) == (options["d_conv"],) * 2
    assert (layer.conv2d.bias is not None) == conv_bias
    assert (layer.in_proj.bias is not None) == bias and (layer.out_proj.bias is not None) == bias
    if "out_norm" in options:
        assert isinstance(layer.out_norm, nn.LayerNorm) == (options["out_norm"] == "layer")
    u = torch.randn(2, H, W, 8, dtype=torch.float64)
    assert_close(layer(u), _reference(cls, layer, u, bidirectional))


def test_ss2d_unidirectional_is_causal_in_raster_and_column_order():
    torch.manual_seed(0)
    layer = ssm.SS2D(4, d_state=2, d_conv=1, bidirectional=False).double()
    u = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    v = u.clone()
    v[0, 3, 3] += 1.0  # the last pixel in both row-major and column-major order
    with torch.no_grad():
        diff = (layer(u) - layer(v)).abs().sum(-1)[0]
    assert diff[3, 3] > 0 and float(diff.flatten()[:-1].max()) == 0.0


@pytest.mark.parametrize("cls", LAYERS)
def test_every_parameter_gets_a_gradient_and_shapes_hold(cls):
    torch.manual_seed(0)
    layer = cls(8, d_state=4)
    u = torch.randn(2, 5, 3, 8)
    y = layer(u)
    assert y.shape == u.shape and y.dtype == u.dtype
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cls", LAYERS)
def test_ssm_tensors_carry_optimizer_hints(cls):
    layer = cls(8, d_state=4, lr={"A": 1e-3, "D": 2e-3, "dt": 3e-3})
    assert layer.ssm.A_logs._optim == {"lr": 1e-3, "weight_decay": 0.0}
    assert layer.ssm.Ds._optim == {"lr": 2e-3, "weight_decay": 0.0}
    assert layer.ssm.dt_projs_bias._optim == {"lr": 3e-3, "weight_decay": 0.0}
    assert torch.allclose(layer.ssm.A_logs.exp()[0], torch.arange(1, 5, dtype=torch.float32))
    dt = F.softplus(layer.ssm.dt_projs_bias.detach())
    assert float(dt.min()) >= 1e-4 and float(dt.max()) <= 0.1 + 1e-6



@pytest.mark.parametrize("cls", LAYERS)
def test_lr_zero_freezes_the_ssm_tensors(cls):
    """``lr`` 0 means frozen, as in ssm.Mamba: A_logs becomes a buffer, the Δ bias stops
    requiring a gradient and neither reaches the optimizer; D keeps its own hint."""
    layer = cls(8, d_state=4, lr={"A": 0.0, "dt": 0.0})
    assert "ssm.A_logs" in dict(layer.named_buffers()) and "ssm.A_logs" not in dict(layer.named_parameters())
    assert not layer.ssm.dt_projs_bias.requires_grad
    optimized = {id(p) for g in param_groups(layer) for p in g["params"]}
    assert id(layer.ssm.dt_projs_bias) not in optimized and id(layer.ssm.Ds) in optimized
    assert layer.ssm.Ds._optim == {"weight_decay": 0.0}
    layer(torch.randn(1, 3, 4, 8)).square().sum().backward()
    assert layer.ssm.dt_projs_bias.grad is None and layer.ssm.Ds.grad is not None


@pytest.mark.parametrize("cls", LAYERS)
def test_dropout_acts_on_the_output(cls):
    """Dropout is on the layer's output (after out_proj): in training every output entry is
    either 0 or the evaluation output scaled by 1 / (1 - p). Dropout on out_proj's input
    would mix the kept and dropped channels and give neither."""
    torch.manual_seed(0)
    layer = cls(8, d_state=2, dropout=0.5).double()
    u = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    kept = layer.eval()(u) * 2.0
    torch.manual_seed(1)
    out = layer.train()(u)
    dropped = out == 0
    assert 0 < int(dropped.sum()) < out.numel()
    assert_close(out[~dropped], kept[~dropped])


def test_nss_orders_follow_a_change_of_shift_alone():
    """The kept scan orders are keyed by shift as well as by size and stripe: switching only
    ``shift`` (same stripe, same image size) scans the shifted walk, as a fresh layer does."""
    torch.manual_seed(0)
    layer = ssm.NSSMamba(8, d_state=3, stripe=4).double()
    u = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    unshifted = layer(u)
    layer.shift = True
    fresh = ssm.NSSMamba(8, d_state=3, stripe=4, shift=True).double()
    fresh.load_state_dict(layer.state_dict())
    perms, _ = layer.orders(4, 8, torch.device("cpu"))
    assert torch.equal(perms, scan_orders.nss_directions(4, 8, 4, True))
    shifted = layer(u)
    assert_close(shifted, fresh(u))
    assert (shifted - unshifted).abs().max() > 1e-6


def test_selective_projections_scan_checks_the_directions_and_channels():
    proj = ssm.layers.selective.SelectiveProjections(6, 3, 1, k=2)
    assert proj.scan(torch.randn(1, 2, 6, 5)).shape == (1, 2, 6, 5)
    for shape in ((1, 3, 6, 5), (1, 2, 4, 5), (1, 6, 2, 5)):
        with pytest.raises(ValueError, match=r"expected xs of shape \(B, 2, 6, L\)"):
            proj.scan(torch.randn(*shape))

@pytest.mark.parametrize("cls", LAYERS)
def test_bad_inputs(cls):
    layer = cls(8, d_state=4)
    with pytest.raises(ValueError, match="expected x of shape"):
        layer(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="expected x of shape"):
        layer(torch.randn(2, 5, 3, 7))
    with pytest.raises(ValueError, match="d_conv"):
        cls(8, d_conv=2)


@pytest.mark.parametrize("cls", [*LAYERS, ssm.Chimera])
def test_layers_without_a_recurrent_step_say_so(cls):
    layer = cls(8, d_state=4)
    with pytest.raises(RuntimeError, match=f"{cls.__name__} has no recurrent step.*use forward"):
        layer.init_state(2)
    with pytest.raises(RuntimeError, match=f"{cls.__name__} has no recurrent step.*use forward"):
        layer.step(torch.randn(2, 8), None)


@pytest.mark.parametrize("cls, directions, norm", [(ssm.SS2D, 4, nn.LayerNorm), (ssm.NSSMamba, 4, nn.LayerNorm),
                                                    (ssm.Mamba2D, 1, nn.Identity)])
def test_defaults_and_their_overrides(cls, directions, norm):
    """VMamba and MaIR scan four directions with a LayerNorm before the gate; 2DMamba one, without."""
    layer = cls(8, d_state=2)
    assert layer.ssm.k == directions and isinstance(layer.out_norm, norm)
    flipped = cls(8, d_state=2, bidirectional=directions == 1, out_norm="none" if norm is nn.LayerNorm else "layer")
    assert flipped.ssm.k == 2 and not isinstance(flipped.out_norm, norm)
    with pytest.raises(ValueError, match="out_norm"):
        cls(8, out_norm="batch")


def test_nss_mamba_rejects_bad_stripe():
    with pytest.raises(ValueError, match="stripe"):
        ssm.NSSMamba(8, stripe=0)


@pytest.mark.parametrize("cls", LAYERS)
def test_image_classifier_shapes_inputs_and_training_step(cls):
    torch.manual_seed(0)
    net = ssm.ImageClassifier(8, 4, functools.partial(cls, d_state=2), 10, (7, 6), d_input=1, depths=[2, 2],
                              patch_size=2, mlp_ratio=2.0, drop_path=0.1,
                              alternate_shift=cls is ssm.NSSMamba)
    x = torch.randn(3, 42, 1)
    logits = net(x)
    assert logits.shape == (3, 10)
    assert_close(net.eval()(x), net(x.view(3, 7, 6, 1)))
    net.train()
    F.cross_entropy(net(x), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in net.parameters())
    if cls is ssm.NSSMamba:
        shifts = [b.mixer.shift for stage in net.stages for b in stage if hasattr(b, "mixer")]
        assert shifts == [False, True, False, True]


def test_image_classifier_starts_its_linears_as_vmamba_does():
    """Every nn.Linear: truncated normal of std 0.02, zero bias (VMamba's and MaIR's
    _init_weights); the selective-scan parameters keep their own inits (Δ bias in range)."""
    torch.manual_seed(3)
    net = ssm.ImageClassifier(64, 2, functools.partial(ssm.SS2D, d_state=4), 10, (8, 8), d_input=1, mlp_ratio=2.0)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 2 + 2 * 2 + 1  # in/out projections, MLPs, head
    for m in linears:
        assert m.weight.std().item() == pytest.approx(0.02, rel=0.15) and m.weight.abs().max() <= 2.0
        assert m.bias is None or not m.bias.any()
    dt = F.softplus(net.stages[0][0].mixer.ssm.dt_projs_bias)
    assert 1e-4 <= dt.min().item() and dt.max().item() <= 0.1 + 1e-6


def test_image_classifier_tokens_postnorm_last_pooling():
    net = ssm.ImageClassifier(8, 2, functools.partial(ssm.SS2D, d_state=2), 3, (4, 4), n_tokens=256, norm="batch",
                              prenorm=False, pooling="last")
    assert net(torch.randint(0, 256, (2, 16))).shape == (2, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depths=[1, 2]), "summing to n_layers"),
        (dict(pooling="max"), "pooling"),
        (dict(alternate_shift=True), "shift"),
        (dict(image_shape=(4,)), "image_shape"),
    ],
)
def test_image_classifier_bad_config(kwargs, match):
    args = dict(d_model=8, n_layers=2, layer=functools.partial(ssm.SS2D, d_state=2), d_output=3,
                image_shape=(4, 4), d_input=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ssm.ImageClassifier(**args)


def test_image_classifier_rejects_wrong_input_shape():
    net = ssm.ImageClassifier(8, 1, functools.partial(ssm.SS2D, d_state=2), 3, (4, 4), d_input=1)
    with pytest.raises(ValueError, match="expected x of shape"):
        net(torch.randn(2, 15, 1))


def test_nss_orders_are_kept_per_size_and_setting():
    torch.manual_seed(0)
    layer = ssm.NSSMamba(8, d_state=3).double()
    first = layer.orders(3, 5, torch.device("cpu"))
    assert layer.orders(3, 5, torch.device("cpu"))[0] is first[0]  # built once
    inputs = {(H, W): torch.randn(2, H, W, 8, dtype=torch.float64) for H, W in [(3, 5), (4, 4)]}
    for stripe, shift in [(4, False), (2, True)]:
        layer.stripe, layer.shift = stripe, shift
        fresh = ssm.NSSMamba(8, d_state=3, stripe=stripe, shift=shift).double()
        fresh.load_state_dict(layer.state_dict())
        for size in [(3, 5), (4, 4), (3, 5)]:  # alternating sizes reuse their own orders
            assert_close(layer(inputs[size]), fresh(inputs[size]))
            perms, inverse = layer.orders(*size, torch.device("cpu"))
            assert torch.equal(perms, scan_orders.nss_directions(*size, stripe, shift))
            assert torch.equal(inverse, scan_orders.inverse(perms))



@pytest.mark.parametrize("name", ["SS2D", "NSSMamba", "Mamba2D"])
def test_a_forward_in_inference_mode_first_does_not_break_training(name):
    """NSSMamba cached its scan orders as inference tensors when its first forward ran under
    torch.inference_mode() (an evaluation before training), and every later differentiated
    forward failed."""
    torch.manual_seed(0)
    layer = getattr(ssm, name)(8, d_state=2)
    x = torch.randn(2, 4, 6, 8)
    with torch.inference_mode():
        expected = layer(x)
    y = layer(x)
    y.sum().backward()
    assert_close(y.detach(), expected.clone())
    assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)

def test_unidirectional_ss2d_sees_the_row_major_and_column_major_predecessors():
    """What the docstring states, read off the input gradient of one output pixel (d_conv=1:
    no convolution neighbours): nonzero exactly on the union of both orders' prefixes."""
    torch.manual_seed(0)
    layer = ssm.SS2D(4, d_state=2, d_conv=1, bidirectional=False).double()
    H, W, (i, j) = 3, 4, (1, 2)
    x = torch.randn(1, H, W, 4, dtype=torch.float64, requires_grad=True)
    layer(x)[0, i, j].sum().backward()
    seen = x.grad[0].abs().sum(-1) > 0
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    row_major = (rows < i) | ((rows == i) & (cols <= j))
    column_major = (cols < j) | ((cols == j) & (rows <= i))
    assert torch.equal(seen, row_major | column_major)
