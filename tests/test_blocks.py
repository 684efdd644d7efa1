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
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
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
