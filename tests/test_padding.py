"""Right padding marked by ``lengths`` changes nothing: a padded sequence gets the logits it
gets alone, for causal and bidirectional layers (which would otherwise read the padding),
every pooling and both norms; bad ``lengths`` raise."""

import copy
import functools

import pytest
import torch

import ssm
from ssm.models import RetrievalClassifier

F64 = torch.float64
LAYERS = {
    "S4D bidirectional": functools.partial(ssm.S4D, d_state=8, bidirectional=True),
    "S5 bidirectional": functools.partial(ssm.S5, d_state=8, bidirectional=True),
    "DSS bidirectional": functools.partial(ssm.DSS, d_state=8, bidirectional=True),
    "DSS softmax": functools.partial(ssm.DSS, d_state=8, variant="softmax"),
    "DSS softmax bidirectional, growing modes": lambda d: growing_softmax_dss(d),
    "S4PTD": functools.partial(ssm.S4PTD, d_state=8),
    "CompanionSSM": functools.partial(ssm.CompanionSSM, d_state=6),
    "Mamba": functools.partial(ssm.Mamba, d_state=4),
    "Mamba bidirectional, biases": functools.partial(ssm.Mamba, d_state=4, bidirectional=True, bias=True),
}


def growing_softmax_dss(d_model):
    """A softmax DSS (normalized over each sequence's length) with some modes growing."""
    layer = ssm.DSS(d_model, d_state=8, variant="softmax", bidirectional=True)
    with torch.no_grad():
        layer.Lambda_real[:, 0] = 0.5
    return layer


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("norm, pooling", [("layer", "mean"), ("batch", "last"), ("layer", "last_k")])
def test_a_padded_sequence_gets_the_logits_it_gets_alone(name, norm, pooling):
    torch.manual_seed(0)
    output = "none" if name.startswith("Mamba") else "glu"
    model = ssm.SequenceClassifier(8, 2, LAYERS[name], 3, n_tokens=10, norm=norm, pooling=pooling, output=output,
                                   prenorm=norm == "layer", n_predict=2)
    model = model.double().eval()
    lengths = torch.tensor([5, 11, 2])
    tokens = torch.randint(1, 10, (3, 11))
    tokens[torch.arange(11)[None, :] >= lengths[:, None]] = 0  # pad id; the embedding of 0 is not zero
    batched = model(tokens, lengths)
    for b in range(3):
        alone = model(tokens[b : b + 1, : lengths[b]])
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-12, atol=1e-12, msg=f"row {b}")


def test_batch_norm_statistics_leave_the_padding_out():
    """In training, SequenceBatchNorm with a mask normalizes by the mean and (biased) variance
    of the valid steps and updates its running statistics with them (unbiased variance)."""
    from ssm.blocks import SequenceBatchNorm

    torch.manual_seed(0)
    norm = SequenceBatchNorm(4).double()
    with torch.no_grad():
        norm.bn.weight.uniform_(0.5, 2.0)
        norm.bn.bias.normal_()
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(norm))  # what trainer=ddp makes
    x = torch.randn(3, 7, 4, dtype=F64, requires_grad=True)
    lengths = [7, 3, 1]
    mask = (torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(-1)
    out = norm(x, mask)
    torch.testing.assert_close(synced(x, mask), out)
    steps = torch.cat([x[b, :n] for b, n in enumerate(lengths)])  # (11, 4)
    mean, var = steps.mean(0), steps.var(0, unbiased=False)
    for b, n in enumerate(lengths):
        expected = (x[b, :n] - mean) / torch.sqrt(var + norm.bn.eps) * norm.bn.weight + norm.bn.bias
        torch.testing.assert_close(out[b, :n], expected)
        assert (out[b, n:] == 0).all()
    torch.testing.assert_close(norm.bn.running_mean, 0.1 * mean)
    torch.testing.assert_close(norm.bn.running_var, 0.9 + 0.1 * steps.var(0, unbiased=True))
    out.square().sum().backward()
    assert (x.grad[~mask.squeeze(-1)] == 0).all() and torch.isfinite(x.grad).all()
    norm.eval()  # running statistics: every step is normalized alike, mask or not
    torch.testing.assert_close(norm(x, mask), norm(x))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [F64, torch.float16])
def test_batch_norm_on_a_padded_batch_is_batchnorm1d_on_its_valid_steps(momentum, affine, dtype):
    """SequenceBatchNorm's masked sums against torch's BatchNorm1d on the valid steps picked
    out, over two training calls: the output (0 on the padding), the gradients, the running
    statistics and the batch count (a cumulative average for momentum=None). Half inputs are
    normalized in float32 and come back in their dtype; non-finite padding stays out."""
    from ssm.blocks import SequenceBatchNorm

    torch.manual_seed(5)
    param_dtype = F64 if dtype == F64 else torch.float32
    norm = SequenceBatchNorm(3, momentum=momentum, affine=affine).to(param_dtype).train()
    if affine:
        with torch.no_grad():
            norm.bn.weight.uniform_(0.5, 2.0)
            norm.bn.bias.normal_()
    reference = copy.deepcopy(norm.bn)
    for lengths in ([6, 2, 4], [1, 5, 3]):
        mask = (torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(-1)
        x = (torch.randn(3, 6, 3, dtype=F64) * 2 + 1).to(dtype)
        x[~mask.expand_as(x)] = float("nan")
        x.requires_grad_(True)
        valid = x.detach()[mask[..., 0]].to(param_dtype).requires_grad_(True)  # (steps, C)
        out = norm(x, mask)
        want = reference(valid)
        assert out.dtype == dtype
        tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == F64 else dict(rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(out[mask[..., 0]].to(param_dtype), want, **tolerance)
        assert (out[~mask[..., 0]] == 0).all()
        cotangent = torch.randn(want.shape, dtype=param_dtype)
        (want * cotangent).sum().backward()
        grad_out = torch.zeros(out.shape, dtype=dtype)
        grad_out[mask[..., 0]] = cotangent.to(dtype)
        out.backward(grad_out)
        torch.testing.assert_close(x.grad[mask[..., 0]].to(param_dtype), valid.grad, **tolerance)
        assert (x.grad[~mask[..., 0]] == 0).all()
        for mine, theirs in zip(norm.bn.buffers(), reference.buffers(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-6 if dtype != F64 else 1e-12, atol=1e-7)
    assert norm.bn.num_batches_tracked.item() == 2


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dtype", [F64, torch.float16])
def test_batch_norm_without_a_mask_is_batchnorm1d(train, dtype):
    """Without padding, SequenceBatchNorm is BatchNorm1d over the channels of (B, L, C): batch
    statistics of every step and the running-statistics update in training, the running
    statistics in eval mode; outputs, gradients and buffers, over two calls."""
    from ssm.blocks import SequenceBatchNorm

    torch.manual_seed(6)
    param_dtype = F64 if dtype == F64 else torch.float32
    norm = SequenceBatchNorm(3).to(param_dtype)
    with torch.no_grad():
        norm.bn.weight.uniform_(0.5, 2.0)
        norm.bn.bias.normal_()
        norm.bn.running_mean.normal_()
        norm.bn.running_var.uniform_(0.5, 2.0)
    norm.train(train)
    reference = copy.deepcopy(norm.bn)
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == F64 else dict(rtol=2e-3, atol=2e-3)
    for _ in range(2):
        x = (torch.randn(2, 5, 3, dtype=F64) * 2 + 1).to(dtype).requires_grad_(True)
        features = x.detach().to(param_dtype).transpose(1, 2).requires_grad_(True)  # (B, C, L)
        out, want = norm(x), reference(features).transpose(1, 2)
        assert out.dtype == dtype
        torch.testing.assert_close(out.to(param_dtype), want, **tolerance)
        cotangent = torch.randn(want.shape, dtype=param_dtype)
        (want * cotangent).sum().backward()
        out.backward(cotangent.to(dtype))
        torch.testing.assert_close(x.grad.to(param_dtype), features.grad.transpose(1, 2), **tolerance)
        for mine, theirs in zip(norm.bn.buffers(), reference.buffers(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-6 if dtype != F64 else 1e-12, atol=1e-7)
    with pytest.raises(ValueError, match="more than 1 step"):
        SequenceBatchNorm(3).train()(torch.randn(1, 1, 3))


def test_batch_norm_on_a_padded_batch_needs_two_valid_steps():
    """One valid step has no variance: refused, as BatchNorm1d refuses one value per channel."""
    from ssm.blocks import SequenceBatchNorm

    norm = SequenceBatchNorm(3).train()
    mask = torch.tensor([[1, 0, 0]], dtype=torch.bool).unsqueeze(-1)
    with pytest.raises(ValueError, match="more than 1 valid step"):
        norm(torch.randn(1, 3, 3), mask)


@pytest.mark.parametrize("prenorm", [False, True])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_training_batch_norm_does_not_depend_on_how_much_padding(prenorm, pooling):
    """A batch padded to its longest sequence and the same batch padded further give the same
    training-mode logits and running statistics (the padding used to enter the statistics)."""
    torch.manual_seed(2)
    model = ssm.SequenceClassifier(8, 2, LAYERS["S4D bidirectional"], 3, n_tokens=10, norm="batch",
                                   pooling=pooling, prenorm=prenorm).double().train()
    twin = copy.deepcopy(model)
    lengths = torch.tensor([5, 11, 2])
    tokens = torch.randint(1, 10, (3, 11))
    tokens[torch.arange(11)[None, :] >= lengths[:, None]] = 0
    longer = torch.cat([tokens, torch.zeros(3, 6, dtype=tokens.dtype)], dim=1)
    torch.testing.assert_close(model(tokens, lengths), twin(longer, lengths), rtol=1e-12, atol=1e-12)
    for (name, a), b in zip(model.named_buffers(), twin.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_retrieval_pairs_ignore_their_padding():
    torch.manual_seed(1)
    model = RetrievalClassifier(8, 1, LAYERS["S4D bidirectional"], 2, n_tokens=10).double().eval()
    lengths = torch.tensor([[4, 9], [7, 3]])  # (2, B): document a, document b
    x = torch.randint(1, 10, (2, 2, 9))
    x[torch.arange(9)[None, None, :] >= lengths[..., None]] = 0
    batched = model(x, lengths)
    for b in range(2):
        a, c = x[0, b, : lengths[0, b]], x[1, b, : lengths[1, b]]
        L = max(len(a), len(c))
        pair = torch.zeros(2, 1, L, dtype=torch.long)
        pair[0, 0, : len(a)], pair[1, 0, : len(c)] = a, c
        alone = model(pair, lengths[:, b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"lengths of shape \(2, 2\)"):
        model(x, lengths.T.reshape(-1))
    with pytest.raises(ValueError, match="'mean' or 'last'"):
        RetrievalClassifier(8, 1, LAYERS["S4D bidirectional"], 2, n_tokens=10, pooling="last_k")


@pytest.mark.parametrize("lengths, error, match", [
    (torch.tensor([8.0, 4.5]), TypeError, "integer tensor"),
    (torch.tensor([True, True]), TypeError, "integer tensor"),
    ([8, 4], TypeError, "integer tensor"),
    (torch.tensor([8, 9]), ValueError, r"values in \[1, 8\]"),
    (torch.tensor([[8, 4]]), ValueError, r"shape \(2,\)"),
])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_bad_lengths_raise(lengths, error, match, pooling):
    model = ssm.SequenceClassifier(8, 1, LAYERS["S4D bidirectional"], 3, n_tokens=10, pooling=pooling)
    with pytest.raises(error, match=match):
        model(torch.randint(0, 10, (2, 8)), lengths)


def test_empty_sequences_cannot_be_pooled():
    model = ssm.SequenceClassifier(8, 1, LAYERS["S4D bidirectional"], 3, n_tokens=10)
    with pytest.raises(ValueError, match="nothing to pool"):
        model(torch.zeros(2, 0, dtype=torch.long))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_tokens=0), "n_tokens must be a positive integer"),
    (dict(n_tokens=10, n_layers=1.5), "n_layers must be a positive integer"),
    (dict(d_input=0), "d_input must be a positive integer"),
])
def test_classifier_sizes_are_checked(kwargs, match):
    args = dict(d_model=8, n_layers=1, layer=LAYERS["S4PTD"], d_output=3) | kwargs
    with pytest.raises(ValueError, match=match):
        ssm.SequenceClassifier(**args)


def test_image_classifier_checks_lengths_and_feature_dtype():
    model = ssm.ImageClassifier(8, 1, functools.partial(ssm.SS2D, d_state=2), 2, image_shape=(4, 4), d_input=1)
    x = torch.randn(2, 16, 1)
    assert model(x, torch.tensor([16, 16])).shape == (2, 2)
    with pytest.raises(ValueError, match=r"lengths of shape \(2,\)"):
        model(x, torch.tensor([16, 16, 16]))
    with pytest.raises(ValueError, match="cannot be padded"):
        model(x, torch.tensor([16, 9]))
    with pytest.raises(TypeError, match="floating-point features"):
        model(torch.ones(2, 16, 1, dtype=torch.long))


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_without_running_statistics_leaves_the_padding_out_in_eval_mode_too(train):
    """Guards SequenceBatchNorm(track_running_stats=False): batch statistics, of the valid steps only, also in eval."""
    from ssm.blocks import SequenceBatchNorm

    torch.manual_seed(3)
    norm = SequenceBatchNorm(4, track_running_stats=False).double().train(train)
    with torch.no_grad():
        norm.bn.weight.uniform_(0.5, 2.0)
        norm.bn.bias.normal_()
    x = torch.randn(3, 7, 4, dtype=F64)
    x[1, 3:] += 50.0  # padding far from the valid steps: it must not enter the statistics
    lengths = [7, 3, 2]
    mask = (torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(-1)
    out = norm(x, mask)
    steps = torch.cat([x[b, :n] for b, n in enumerate(lengths)])
    mean = steps.sum(0) / len(steps)
    var = ((steps - mean) ** 2).sum(0) / len(steps)
    for b, n in enumerate(lengths):
        expected = (x[b, :n] - mean) / torch.sqrt(var + norm.bn.eps) * norm.bn.weight + norm.bn.bias
        torch.testing.assert_close(out[b, :n], expected, rtol=1e-12, atol=1e-12)
        assert (out[b, n:] == 0).all()


def test_masked_batch_norm_gradient_matches_the_valid_step_formula():
    """Guards the backward of SequenceBatchNorm with a mask: grads of x, weight, bias equal the hand formula's."""
    from ssm.blocks import SequenceBatchNorm

    torch.manual_seed(4)
    norm = SequenceBatchNorm(3).double().train()
    with torch.no_grad():
        norm.bn.weight.uniform_(0.5, 2.0)
        norm.bn.bias.normal_()
    x = torch.randn(3, 6, 3, dtype=F64, requires_grad=True)
    weights = torch.randn(3, 6, 3, dtype=F64)
    lengths = [6, 2, 4]
    mask = (torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(-1)

    def by_hand(x):
        steps = torch.cat([x[b, :n] for b, n in enumerate(lengths)])
        mean = steps.mean(0)
        var = ((steps - mean) ** 2).mean(0)
        rows = []
        for b, n in enumerate(lengths):
            valid = (x[b, :n] - mean) / torch.sqrt(var + norm.bn.eps) * norm.bn.weight + norm.bn.bias
            rows.append(torch.cat([valid, torch.zeros(6 - n, 3, dtype=F64)]))
        return torch.stack(rows)

    params = [x, norm.bn.weight, norm.bn.bias]
    got = torch.autograd.grad((norm(x, mask) * weights).sum(), params)
    want = torch.autograd.grad((by_hand(x) * weights).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
