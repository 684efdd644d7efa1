"""Residual blocks, backbones, encoders, pooling and the sequence classifier."""

import copy
import functools
import math

import pytest
import torch
from torch import nn

import ssm
from ssm.models import LinearEncoder, TokenEncoder, pool

D_MODEL = 4
S4D_SMALL = functools.partial(ssm.S4D, d_state=4)


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def glu(x):
    a, b = x.chunk(2, dim=-1)
    return a / (1 + torch.exp(-b))


def layer_norm(x, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def batch_norm_train(x, eps=1e-5):
    """Per channel over (batch, length), biased variance (training mode)."""
    mean = x.mean((0, 1), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 1), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


NORM_BY_HAND = {"layer": layer_norm, "batch": batch_norm_train, "none": lambda x: x}


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_residual_block_matches_hand_computation(norm, prenorm):
    torch.manual_seed(0)
    block = ssm.ResidualBlock(D_MODEL, nn.Identity(), norm=norm, prenorm=prenorm).double()
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    lin = block.output[0]
    branch = lambda z: glu(z @ lin.weight.T + lin.bias)  # noqa: E731
    nrm = NORM_BY_HAND[norm]
    expected = x + branch(gelu(nrm(x))) if prenorm else nrm(x + branch(gelu(x)))
    y = block(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_block_without_residual_is_the_branch_alone(norm, prenorm):
    """residual=False (the S4-PTD robustness stack): out = branch(x̃), then the post-norm."""
    torch.manual_seed(1)
    block = ssm.ResidualBlock(D_MODEL, nn.Identity(), norm=norm, prenorm=prenorm, residual=False).double()
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64, requires_grad=True)
    lin = block.output[0]
    nrm = NORM_BY_HAND[norm]
    branch = glu(gelu(nrm(x) if prenorm else x) @ lin.weight.T + lin.bias)
    expected = branch if prenorm else nrm(branch)
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)
    net = ssm.SequenceClassifier(D_MODEL, 2, S4D_SMALL, 3, d_input=2, residual=False)
    assert all(not b.residual for b in net.backbone.blocks)
    assert all(b.residual for b in ssm.SequenceClassifier(D_MODEL, 2, S4D_SMALL, 3, d_input=2).backbone.blocks)


@pytest.mark.parametrize("output", ["half_glu1", "half_glu2"])
def test_residual_block_half_glu_outputs_match_hand_computation(output):
    torch.manual_seed(0)
    scale = nn.Linear(D_MODEL, D_MODEL).double()  # a layer whose output y differs from its input
    block = ssm.ResidualBlock(D_MODEL, scale, norm="none", prenorm=True, output=output).double()
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    y = scale(x)
    g = gelu(y)
    gate = torch.sigmoid(g @ block.output.weight.T + block.output.bias)
    expected = x + (g if output == "half_glu1" else y) * gate
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="output must be one of"):
        ssm.ResidualBlock(D_MODEL, nn.Identity(), output="full")


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_residual_block_without_output_map_adds_the_layer_output(norm, prenorm):
    """output="none" (full mixers such as Mamba): x + layer(norm(x)), or norm(x + layer(x))."""
    torch.manual_seed(0)
    mixer = nn.Linear(D_MODEL, D_MODEL).double()
    block = ssm.ResidualBlock(D_MODEL, mixer, norm=norm, prenorm=prenorm, output="none").double()
    assert isinstance(block.output, nn.Identity)
    assert sum(p.numel() for p in block.parameters()) == sum(
        p.numel() for p in list(mixer.parameters()) + list(block.norm.parameters())
    )
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    nrm = NORM_BY_HAND[norm]
    expected = x + mixer(nrm(x)) if prenorm else nrm(x + mixer(x))
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_backbone_of_mamba_blocks_without_output_map():
    torch.manual_seed(0)
    backbone = ssm.SequenceBackbone(D_MODEL, 2, functools.partial(ssm.Mamba, d_state=4), output="none").double()
    x = torch.randn(2, 9, D_MODEL, dtype=torch.float64)
    h = x
    for block in backbone.blocks:
        h = h + block.layer(layer_norm(h) * block.norm.weight + block.norm.bias)
    torch.testing.assert_close(backbone(x), layer_norm(h), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_residual_block_with_s4d_keeps_shape(norm, prenorm):
    torch.manual_seed(1)
    block = ssm.ResidualBlock(D_MODEL, S4D_SMALL(D_MODEL), norm=norm, prenorm=prenorm, dropout=0.1)
    y = block(torch.randn(3, 17, D_MODEL))
    assert y.shape == (3, 17, D_MODEL) and torch.isfinite(y).all()


def test_residual_block_eval_mode_disables_dropout():
    torch.manual_seed(2)
    block = ssm.ResidualBlock(D_MODEL, S4D_SMALL(D_MODEL), dropout=0.5).eval()
    x = torch.randn(3, 17, D_MODEL)
    torch.testing.assert_close(block(x), block(x), rtol=0, atol=0)
    no_drop = ssm.ResidualBlock(D_MODEL, block.layer, dropout=0.0).eval()
    no_drop.load_state_dict(block.state_dict())
    torch.testing.assert_close(block(x), no_drop(x))


def test_residual_block_rejects_bad_arguments_and_inputs():
    torch.manual_seed(3)
    with pytest.raises(ValueError, match="dropout"):
        ssm.ResidualBlock(D_MODEL, nn.Identity(), dropout=1.0)
    with pytest.raises(ValueError, match="norm"):
        ssm.ResidualBlock(D_MODEL, nn.Identity(), norm="group")
    block = ssm.ResidualBlock(D_MODEL, nn.Identity())
    with pytest.raises(ValueError, match=rf"\(batch, length, {D_MODEL}\)"):
        block(torch.randn(3, 7, D_MODEL + 1))


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_backbone_shapes_and_structure(norm, prenorm):
    torch.manual_seed(4)
    calls = []

    def factory(d):
        calls.append(d)
        return S4D_SMALL(d)

    backbone = ssm.SequenceBackbone(D_MODEL, 3, factory, norm=norm, prenorm=prenorm)
    assert calls == [D_MODEL] * 3 and len(backbone.blocks) == 3
    y = backbone(torch.randn(2, 17, D_MODEL))
    assert y.shape == (2, 17, D_MODEL)
    has_final = not isinstance(backbone.final_norm, nn.Identity)
    assert has_final == (prenorm and norm != "none")


def test_backbone_prenorm_applies_final_norm_after_blocks():
    torch.manual_seed(5)
    backbone = ssm.SequenceBackbone(D_MODEL, 2, lambda d: nn.Identity(), norm="layer").double()
    x = torch.randn(2, 7, D_MODEL, dtype=torch.float64)
    h = x
    for block in backbone.blocks:
        h = block(h)
    torch.testing.assert_close(backbone(x), layer_norm(h), rtol=1e-10, atol=1e-10)


def test_backbone_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_layers"):
        ssm.SequenceBackbone(D_MODEL, 0, S4D_SMALL)
    with pytest.raises(TypeError, match="factory"):
        ssm.SequenceBackbone(D_MODEL, 2, None)


def lengths_hand_pool(x, lengths, mode):
    out = []
    for b in range(x.shape[0]):
        n = int(lengths[b])
        if mode == "mean":
            total = torch.zeros(x.shape[-1], dtype=x.dtype)
            for t in range(n):
                total = total + x[b, t]
            out.append(total / n)
        else:
            out.append(x[b, n - 1])
    return torch.stack(out)


@pytest.mark.parametrize("mode", ["mean", "last"])
def test_pool_with_lengths_matches_hand_computation(mode):
    torch.manual_seed(6)
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    lengths = torch.tensor([9, 1, 5, 3])
    torch.testing.assert_close(pool(x, lengths, mode), lengths_hand_pool(x, lengths, mode))


@pytest.mark.parametrize("mode", ["mean", "last"])
def test_pool_without_lengths_uses_full_sequence(mode):
    torch.manual_seed(7)
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    full = torch.full((4,), 9)
    torch.testing.assert_close(pool(x, None, mode), lengths_hand_pool(x, full, mode))


@pytest.mark.parametrize(
    "lengths", [torch.tensor([0, 3]), torch.tensor([3, 10]), torch.tensor([3, 3, 3])],
    ids=["zero", "too-long", "wrong-batch"],
)
def test_pool_rejects_bad_lengths(lengths):
    torch.manual_seed(8)
    with pytest.raises(ValueError, match="lengths"):
        pool(torch.randn(2, 9, 3), lengths, "mean")


def test_pool_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        pool(torch.randn(2, 9, 3), None, "max")


def test_token_encoder_looks_up_embeddings_and_rejects_bad_ids():
    torch.manual_seed(9)
    enc = TokenEncoder(5, D_MODEL)
    ids = torch.tensor([[0, 4, 2], [1, 1, 3]])
    torch.testing.assert_close(enc(ids), enc.weight[ids])
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        enc(ids[..., None])
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        enc(ids.float())
    with pytest.raises(ValueError, match=r"\[0, 5\), got range \[0, 5\]"):
        enc(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        enc(torch.tensor([[-1, 2]]))


def test_linear_encoder_maps_features_and_rejects_bad_input():
    torch.manual_seed(10)
    enc = LinearEncoder(2, D_MODEL)
    x = torch.randn(3, 7, 2)
    torch.testing.assert_close(enc(x), x @ enc.weight.T + enc.bias)
    for bad in (torch.randn(7, 2), torch.randn(3, 7, 3), torch.ones(3, 7, 2, dtype=torch.int64)):
        with pytest.raises(ValueError, match=r"\(batch, length, 2\)"):
            enc(bad)


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("norm, prenorm", [("layer", True), ("batch", False), ("none", True)])
def test_classifier_output_shapes(pooling, norm, prenorm):
    torch.manual_seed(11)
    tokens = ssm.SequenceClassifier(
        D_MODEL, 2, S4D_SMALL, 3, n_tokens=7, norm=norm, prenorm=prenorm, pooling=pooling
    )
    assert tokens(torch.randint(0, 7, (5, 13))).shape == (5, 3)
    feats = ssm.SequenceClassifier(
        D_MODEL, 2, S4D_SMALL, 3, d_input=2, norm=norm, prenorm=prenorm, pooling=pooling
    )
    assert feats(torch.randn(5, 13, 2), torch.tensor([13, 1, 4, 7, 2])).shape == (5, 3)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_classifier_ignores_right_padding_given_lengths(pooling):
    # Causal S4D layers and per-position LayerNorm: tokens past lengths[b] cannot matter.
    torch.manual_seed(12)
    model = ssm.SequenceClassifier(D_MODEL, 2, S4D_SMALL, 3, n_tokens=7, pooling=pooling).eval()
    x = torch.randint(0, 7, (3, 13))
    lengths = torch.tensor([13, 4, 8])
    x2 = x.clone()
    x2[1, 4:] = (x2[1, 4:] + 1) % 7
    x2[2, 8:] = (x2[2, 8:] + 3) % 7
    with torch.no_grad():
        a, b = model(x, lengths), model(x2, lengths)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # Without lengths the padding does count (the check above can fail).
        assert not torch.allclose(model(x)[1:], model(x2)[1:], atol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, {"n_tokens": 7, "d_input": 2}], ids=["neither", "both"])
def test_classifier_requires_exactly_one_encoder(kwargs):
    with pytest.raises(ValueError, match="exactly one"):
        ssm.SequenceClassifier(D_MODEL, 1, S4D_SMALL, 3, **kwargs)


def test_classifier_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="pooling"):
        ssm.SequenceClassifier(D_MODEL, 1, S4D_SMALL, 3, n_tokens=7, pooling="max")


def test_sequence_batchnorm_survives_the_ddp_conversion_and_loads_old_checkpoints():
    """trainer=ddp converts BatchNorms to SyncBatchNorm: the converted model must still
    normalize over channels (a BatchNorm subclass was replaced whole and then normalized the
    (B, L, C) input over L)."""
    from ssm.blocks import SequenceBatchNorm

    torch.manual_seed(0)
    norm = SequenceBatchNorm(4)
    x = torch.randn(3, 7, 4)
    norm(x)  # one training step of running statistics
    norm.eval()
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(norm)).eval()
    assert isinstance(converted.bn, torch.nn.SyncBatchNorm)
    torch.testing.assert_close(converted(x), norm(x))  # eval mode: the running statistics, on CPU
    expected = (x - norm.bn.running_mean) / torch.sqrt(norm.bn.running_var + norm.bn.eps)
    torch.testing.assert_close(norm(x), expected * norm.bn.weight + norm.bn.bias)
    old_layout = {name: t.clone() for name, t in norm.bn.state_dict().items()}  # keys without "bn."
    fresh = SequenceBatchNorm(4)
    fresh.load_state_dict(old_layout)
    torch.testing.assert_close(fresh.eval()(x), norm(x))


def test_residual_block_checks_its_padding_mask():
    """A (B, L) mask broadcast along the wrong axes and a mask of 2s scaled the input, silently."""
    torch.manual_seed(0)
    block = ssm.blocks.ResidualBlock(3, ssm.S4D(3, d_state=4))
    x = torch.randn(3, 3, 3)
    for bad, match in [(torch.ones(3, 3), r"shape \(3, 3, 1\)"), (2 * torch.ones(3, 3, 1), "only 0 and 1")]:
        with pytest.raises(ValueError, match=match):
            block(x, bad)
    for good in (torch.ones(3, 3, 1, dtype=torch.bool), torch.ones(3, 3, 1)):
        torch.testing.assert_close(block(x, good), block(x))


@pytest.mark.parametrize("x, kwargs, match", [
    (torch.randn(2, 5), {}, r"shape \(batch, length, channels\)"),
    (torch.randn(2, 5, 3), {"mode": "last_k", "k": 1.5}, "k must be a positive integer"),
    (torch.randn(2, 5, 3), {"mode": "last_k", "k": True}, "k must be a positive integer"),
])
def test_pool_rejects_bad_input_clearly(x, kwargs, match):
    from ssm.models.pooling import pool

    with pytest.raises(ValueError, match=match):
        pool(x, **kwargs)


# ---------------------------------------------------------------- dropout placement, last_k, images


class FixedMasks(nn.Module):
    """A stand-in for nn.Dropout that multiplies its k-th call's input by masks[k]."""

    def __init__(self, masks):
        super().__init__()
        self.masks, self.calls = list(masks), 0

    def forward(self, x):
        mask = self.masks[self.calls]
        self.calls += 1
        return x * mask


@pytest.mark.parametrize("output", ["glu", "half_glu1", "half_glu2", "none"])
def test_residual_block_dropout_acts_on_the_activation_and_on_the_branch(output):
    """Guards where Dropout sits: g = Drop(GELU(y)) feeds the output map, and out = x + Drop(z)."""
    torch.manual_seed(0)
    mixer = nn.Linear(D_MODEL, D_MODEL).double()
    block = ssm.ResidualBlock(D_MODEL, mixer, norm="none", output=output).double()
    x = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    masks = [2.0 * torch.randint(0, 2, x.shape).double() for _ in range(2)]
    block.dropout = FixedMasks(masks)
    y = x @ mixer.weight.T + mixer.bias
    if output == "none":
        expected = x + masks[0] * y
    else:
        g = masks[0] * gelu(y)
        if output == "glu":
            z = glu(g @ block.output[0].weight.T + block.output[0].bias)
        else:
            gate = torch.sigmoid(g @ block.output.weight.T + block.output.bias)
            z = (g if output == "half_glu1" else y) * gate
        expected = x + masks[1] * z
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    assert block.dropout.calls == (1 if output == "none" else 2)


def test_residual_block_training_dropout_drops_or_rescales_each_branch_entry():
    """Guards the residual-branch dropout in training: out - x is 0 or z / (1 - p) entry by entry."""
    torch.manual_seed(1)
    p = 0.5
    block = ssm.ResidualBlock(D_MODEL, nn.Identity(), norm="none", output="none", dropout=p).double().train()
    x = torch.randn(20, 30, D_MODEL, dtype=torch.float64)
    ratio = (block(x) - x) / x
    dropped, kept = ratio.abs() < 1e-12, (ratio - 1 / (1 - p)).abs() < 1e-12
    assert bool((dropped | kept).all())
    assert 0.4 < kept.double().mean().item() < 0.6


@pytest.mark.parametrize("k", [1, 3])
def test_pool_last_k_is_the_last_k_valid_steps_in_order(k):
    """Guards pool(mode="last_k"): out[b, j] = x[b, lengths[b] - k + j] (and x[b, L - k + j] without lengths)."""
    torch.manual_seed(13)
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    lengths = torch.tensor([9, 3, 5, 4])
    expected = torch.stack([torch.stack([x[b, int(lengths[b]) - k + j] for j in range(k)]) for b in range(4)])
    torch.testing.assert_close(pool(x, lengths, "last_k", k), expected, rtol=0, atol=0)
    full = torch.stack([torch.stack([x[b, 9 - k + j] for j in range(k)]) for b in range(4)])
    torch.testing.assert_close(pool(x, None, "last_k", k), full, rtol=0, atol=0)


def test_pool_last_k_rejects_sequences_shorter_than_k():
    """Guards the lengths >= k check: a shorter sequence would silently wrap to steps from its end."""
    x = torch.randn(2, 9, 3)
    with pytest.raises(ValueError, match=r"values in \[3, 9\]"):
        pool(x, torch.tensor([9, 2]), "last_k", 3)
    with pytest.raises(ValueError, match="1 <= k <= L"):
        pool(x, None, "last_k", 10)


def test_classifier_last_k_logits_are_the_head_at_each_of_the_last_n_predict_steps():
    """Guards SequenceClassifier(pooling="last_k"): logits[b, j] = head(h[b, lengths[b] - n_predict + j])."""
    torch.manual_seed(14)
    model = ssm.SequenceClassifier(D_MODEL, 1, S4D_SMALL, 5, d_input=2, pooling="last_k", n_predict=3).double()
    x = torch.randn(3, 8, 2, dtype=torch.float64)
    lengths = torch.tensor([8, 3, 6])
    h = model.backbone(model.encoder(x), lengths)
    W, b = model.head.weight, model.head.bias
    expected = torch.stack([
        torch.stack([h[i, int(lengths[i]) - 3 + j] @ W.T + b for j in range(3)]) for i in range(3)
    ])
    torch.testing.assert_close(model(x, lengths), expected, rtol=1e-12, atol=1e-12)
    assert model(x).shape == (3, 3, 5)


def test_drop_path_drops_whole_samples_with_probability_p_and_rescales_the_rest():
    """Guards DropPath: in training each sample is 0 or x / (1 - p), kept with probability 1 - p; eval is identity."""
    from ssm.models.image import DropPath

    torch.manual_seed(15)
    p = 0.25
    layer = DropPath(p).train()
    x = torch.rand(4000, 3, 2, dtype=torch.float64) + 0.5
    ratio = layer(x) / x
    per_sample = ratio.reshape(4000, -1)
    assert bool(((per_sample - per_sample[:, :1]).abs() < 1e-12).all())  # one decision per sample
    kept = (per_sample[:, 0] - 1 / (1 - p)).abs() < 1e-12
    assert bool((kept | (per_sample[:, 0] == 0)).all())
    assert 0.72 < kept.double().mean().item() < 0.78
    torch.testing.assert_close(layer.eval()(x), x, rtol=0, atol=0)
    torch.testing.assert_close(DropPath(0.0).train()(x), x, rtol=0, atol=0)


def conv_by_loops(x, weight, bias, stride):
    """Channels-last x (B, H, W, C) -> (B, H', W', O) by an explicit loop over output pixels."""
    O, C, k, _ = weight.shape
    B, H, W, _ = x.shape
    Ho, Wo = (H - k) // stride + 1, (W - k) // stride + 1
    out = torch.zeros(B, Ho, Wo, O, dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            patch = x[:, i * stride : i * stride + k, j * stride : j * stride + k, :]  # (B, k, k, C)
            out[:, i, j] = torch.einsum("bpqc,ocpq->bo", patch, weight) + bias
    return out


def pad_bottom_right(x, mult):
    """Zero rows at the bottom and columns at the right of (B, H, W, C) up to multiples of mult."""
    B, H, W, C = x.shape
    out = torch.zeros(B, -(-H // mult) * mult, -(-W // mult) * mult, C, dtype=x.dtype)
    out[:, :H, :W] = x
    return out


def affine_norm(x, module):
    if isinstance(module, nn.Identity):
        return x
    return layer_norm(x, module.eps) * module.weight + module.bias


def randomize_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.mark.parametrize("H, W", [(5, 3), (4, 7), (6, 4)])
def test_downsample_is_zero_padded_2x2_stride_2_convolution_then_layernorm(H, W):
    """Guards Downsample (VMamba's current one): zero padding at the bottom/right for odd sizes,
    2x2 stride-2 conv, then LayerNorm over the output channels."""
    from ssm.models.image import Downsample

    layer = randomize_(Downsample(3, 5).double(), 16)
    x = torch.randn(2, H, W, 3, dtype=torch.float64)
    expected = affine_norm(conv_by_loops(pad_bottom_right(x, 2), layer.conv.weight, layer.conv.bias, 2), layer.norm)
    out = layer(x)
    assert out.shape == (2, -(-H // 2), -(-W // 2), 5)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    fresh = Downsample(3, 5)  # the norm is over the 5 output channels, with its own scale and shift
    assert fresh.norm.normalized_shape == (5,) and fresh.norm.elementwise_affine
    y = fresh(torch.randn(2, H, W, 3))
    torch.testing.assert_close(y.mean(-1), torch.zeros(y.shape[:-1]), atol=1e-5, rtol=0)


def image_block_by_hand(block, x, prenorm):
    mixer = lambda h: h @ block.mixer.weight.T + block.mixer.bias  # noqa: E731
    l1, l2 = block.mlp[0], block.mlp[3]
    mlp = lambda h: gelu(h @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias  # noqa: E731
    n1, n2 = block.norm.norm, block.mlp_norm.norm
    if prenorm:
        x = x + mixer(affine_norm(x, n1))
        return x + mlp(affine_norm(x, n2))
    x = affine_norm(x + mixer(x), n1)
    return affine_norm(x + mlp(x), n2)


def image_classifier_by_hand(net, image, prenorm, pooling):
    """ImageClassifier on a (B, H, W, C) image: patch padding and conv, patch norm, the stages, norm, pooling, head."""
    from ssm.models.image import Downsample, ImageBlock

    p = net.patch_size
    h = pad_bottom_right(image, p)
    h = affine_norm(conv_by_loops(h, net.patch_embed.weight, net.patch_embed.bias, p), net.patch_norm)
    for stage in net.stages:
        for module in stage:
            if isinstance(module, Downsample):
                h = conv_by_loops(pad_bottom_right(h, 2), module.conv.weight, module.conv.bias, 2)
                h = affine_norm(h, module.norm)
            else:
                assert isinstance(module, ImageBlock)
                h = image_block_by_hand(module, h, prenorm)
    if prenorm:
        h = affine_norm(h, net.norm.norm)
    pooled = h.mean(dim=(1, 2)) if pooling == "mean" else h[:, -1, -1]
    return pooled @ net.head.weight.T + net.head.bias


@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("norm", ["layer", "none"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_image_classifier_matches_patch_embedding_stages_and_head_by_hand(prenorm, norm, pooling):
    """Guards ImageClassifier: patch padding, conv, norm, pre/post-norm blocks, Downsample, final norm, pooling."""
    torch.manual_seed(17)
    # 7 x 11 pixels -> (padded to 9 x 12) 3 x 4 patches -> (padded to 4 x 4) 2 x 2 after the Downsample
    net = ssm.ImageClassifier(4, 2, lambda d: nn.Linear(d, d), 3, image_shape=(7, 11), d_input=2, depths=[1, 1],
                              patch_size=3, norm=norm, prenorm=prenorm, pooling=pooling, mlp_ratio=1.5)
    net = randomize_(net.double(), 18).eval()
    x = torch.randn(2, 77, 2, dtype=torch.float64)  # row-major pixels
    expected = image_classifier_by_hand(net, x.reshape(2, 7, 11, 2), prenorm, pooling)
    torch.testing.assert_close(net(x), expected, rtol=1e-10, atol=1e-10)
    assert len(net.stages) == 2 and net.head.in_features == 8


def test_image_classifier_embeds_token_ids_as_a_row_major_image():
    """Guards the token path of ImageClassifier: ids (B, H·W) or (B, H, W) -> the row-major image E[ids]."""
    torch.manual_seed(24)
    net = ssm.ImageClassifier(4, 1, lambda d: nn.Linear(d, d), 3, image_shape=(3, 5), n_tokens=7, patch_size=2,
                              mlp_ratio=1.0)
    net = randomize_(net.double(), 25).eval()
    ids = torch.randint(0, 7, (2, 15))
    image = torch.stack([torch.stack([torch.stack([net.token_encoder.weight[ids[b, i * 5 + j]] for j in range(5)])
                                      for i in range(3)]) for b in range(2)])
    expected = image_classifier_by_hand(net, image, True, "mean")
    torch.testing.assert_close(net(ids), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(net(ids.view(2, 3, 5)), expected, rtol=1e-10, atol=1e-10)


def test_image_classifier_drop_path_rises_linearly_over_the_blocks():
    """Guards the stochastic-depth schedule: block i of n gets p = drop_path * i / (n - 1), across stages."""
    net = ssm.ImageClassifier(4, 5, lambda d: nn.Linear(d, d), 3, image_shape=(4, 4), d_input=1, depths=[2, 3],
                              drop_path=0.4)
    rates = [m.drop_path.p for stage in net.stages for m in stage if hasattr(m, "drop_path")]
    assert rates == pytest.approx([0.4 * i / 4 for i in range(5)], abs=1e-7)


@pytest.mark.parametrize("output", ["glu", "half_glu1", "half_glu2", "none"])
@pytest.mark.parametrize("prenorm", [True, False])
def test_residual_block_gradients_match_the_hand_formula(output, prenorm):
    """Guards the backward pass of ResidualBlock: d/dx and d/dθ of the block equal those of the written-out formula."""
    torch.manual_seed(19)
    mixer = nn.Linear(D_MODEL, D_MODEL).double()
    block = randomize_(ssm.ResidualBlock(D_MODEL, mixer, norm="layer", prenorm=prenorm, output=output).double(), 20)
    x = torch.randn(2, 5, D_MODEL, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 5, D_MODEL, dtype=torch.float64)

    def branch(h):
        y = h @ mixer.weight.T + mixer.bias
        if output == "none":
            return y
        g = gelu(y)
        if output == "glu":
            return glu(g @ block.output[0].weight.T + block.output[0].bias)
        gate = torch.sigmoid(g @ block.output.weight.T + block.output.bias)
        return (g if output == "half_glu1" else y) * gate

    def by_hand(x):
        if prenorm:
            return x + branch(affine_norm(x, block.norm))
        return affine_norm(x + branch(x), block.norm)

    params = [x] + list(block.parameters())
    got = torch.autograd.grad((block(x) * weights).sum(), params)
    want = torch.autograd.grad((by_hand(x) * weights).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_mean_pool_gradient_spreads_1_over_length_on_the_valid_steps_only():
    """Guards the backward of mean pooling: d out[b] / d x[b, t] = 1 / lengths[b] for t < lengths[b], else 0."""
    x = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 1, 4])
    pool(x, lengths, "mean").sum().backward()
    expected = torch.zeros(3, 6, 2, dtype=torch.float64)
    for b, n in enumerate(lengths.tolist()):
        expected[b, :n] = 1.0 / n
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-15)


def test_drop_path_gradient_is_the_keep_mask_over_1_minus_p():
    """Guards DropPath's backward: d out / d x = keep / (1 - p) per sample (0 for a dropped one)."""
    from ssm.models.image import DropPath

    torch.manual_seed(21)
    p = 0.5
    x = torch.randn(64, 3, dtype=torch.float64, requires_grad=True)
    out = DropPath(p).train()(x)
    out.sum().backward()
    kept = (out.detach() != 0).all(-1, keepdim=True).double()
    assert 0 < kept.sum() < 64
    torch.testing.assert_close(x.grad, kept.expand(-1, 3) / (1 - p), rtol=0, atol=1e-15)


@pytest.mark.parametrize("prenorm", [True, False])
def test_image_block_dropout_sits_on_the_mixer_output_and_inside_the_mlp(prenorm):
    """Guards ImageBlock's dropouts: Drop(mixer(·)), and Drop after the MLP's GELU and after its last Linear."""
    from ssm.models.image import ImageBlock

    torch.manual_seed(22)
    block = randomize_(ImageBlock(4, nn.Linear(4, 4), mlp_ratio=1.5, dropout=0.5, prenorm=prenorm).double(), 23)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    shapes = ((2, 3, 5, 4), (2, 3, 5, 6), (2, 3, 5, 4))
    m_mix, m_hidden, m_out = (2.0 * torch.randint(0, 2, shape).double() for shape in shapes)
    block.dropout, block.mlp[2], block.mlp[4] = FixedMasks([m_mix]), FixedMasks([m_hidden]), FixedMasks([m_out])
    mixer = lambda h: m_mix * (h @ block.mixer.weight.T + block.mixer.bias)  # noqa: E731
    l1, l2 = block.mlp[0], block.mlp[3]
    mlp = lambda h: m_out * ((m_hidden * gelu(h @ l1.weight.T + l1.bias)) @ l2.weight.T + l2.bias)  # noqa: E731
    n1, n2 = block.norm.norm, block.mlp_norm.norm
    if prenorm:
        h = x + mixer(affine_norm(x, n1))
        expected = h + mlp(affine_norm(h, n2))
    else:
        h = affine_norm(x + mixer(x), n1)
        expected = affine_norm(h + mlp(h), n2)
    torch.testing.assert_close(block.train()(x), expected, rtol=1e-12, atol=1e-12)


def test_a_block_without_floating_parameters_accepts_any_floating_dtype():
    """The dtype check compares with the module's floating parameters (or buffers); a block
    around a parameter-free layer, without norm or output projection, has none to compare with."""
    block = ssm.ResidualBlock(D_MODEL, nn.Identity(), norm="none", output="none")
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        x = torch.randn(2, 5, D_MODEL, dtype=dtype)
        y = block(x)
        assert y.dtype == dtype and y.shape == x.shape


# ---------------------------------------------------------------- recurrent step of blocks and backbones

STEP_LAYERS = {
    "s4d": functools.partial(ssm.S4D, d_state=4),
    "mamba": functools.partial(ssm.Mamba, d_state=3, expand=1),
    "s5": functools.partial(ssm.S5, d_state=4),
}


def run_backbone_steps(model, x, **state_kwargs):
    state = model.init_state(x.shape[0], **state_kwargs)
    outs = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outs.append(y)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("layer", sorted(STEP_LAYERS))
@pytest.mark.parametrize("output", ["glu", "half_glu1", "half_glu2", "none"])
@pytest.mark.parametrize("norm, prenorm, residual", [("layer", True, True), ("batch", False, True),
                                                      ("batch", True, False), ("none", False, True)])
def test_backbone_step_over_a_sequence_matches_forward(layer, output, norm, prenorm, residual):
    torch.manual_seed(30)
    model = ssm.SequenceBackbone(D_MODEL, 2, STEP_LAYERS[layer], norm=norm, prenorm=prenorm, dropout=0.3,
                                 output=output, residual=residual).double()
    if norm == "batch":  # running statistics away from (0, 1), so that using them is checked
        model(3 + 2 * torch.randn(4, 9, D_MODEL, dtype=torch.float64))
    model.eval()
    x = torch.randn(3, 11, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        steps, state = run_backbone_steps(model, x)
        torch.testing.assert_close(steps, model(x), rtol=1e-10, atol=1e-10)
    assert isinstance(state, list) and len(state) == 2


def test_backbone_step_passes_init_state_arguments_to_the_layers():
    """DSS's softmax kernel is normalized over a length that init_state(length=...) gives."""
    torch.manual_seed(31)
    model = ssm.SequenceBackbone(D_MODEL, 2, functools.partial(ssm.DSS, d_state=4, variant="softmax")).double().eval()
    x = torch.randn(2, 7, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        model(x[:, :3])  # a later forward of another length does not matter
        steps, _ = run_backbone_steps(model, x, length=7)
    torch.testing.assert_close(steps, expected, rtol=1e-10, atol=1e-10)


def test_backbone_step_is_differentiable_and_matches_forward_gradients():
    torch.manual_seed(32)
    model = ssm.SequenceBackbone(D_MODEL, 2, STEP_LAYERS["s4d"]).double().eval()
    x = torch.randn(2, 6, D_MODEL, dtype=torch.float64)
    w = torch.randn(2, 6, D_MODEL, dtype=torch.float64)
    (model(x) * w).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    (run_backbone_steps(model, x)[0] * w).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-9, atol=1e-10, msg=name)


def test_block_step_refuses_batch_norm_in_training_mode_and_bad_states():
    model = ssm.SequenceBackbone(D_MODEL, 2, STEP_LAYERS["s4d"], norm="batch")
    state = model.init_state(2)
    with pytest.raises(RuntimeError, match="running statistics.*eval"):
        model.step(torch.randn(2, D_MODEL), state)
    model.eval()
    with pytest.raises(TypeError, match="list of 2 block states"):
        model.step(torch.randn(2, D_MODEL), state[:1])
    with pytest.raises(ValueError, match=r"expected x_t of shape \(batch, 4\)"):
        model.step(torch.randn(2, 1, D_MODEL), state)
    with pytest.raises(RuntimeError, match="bidirectional"):
        ssm.ResidualBlock(D_MODEL, ssm.S4D(D_MODEL, d_state=4, bidirectional=True)).init_state(2)
