"""RetrievalClassifier: shared encoder, [a, b, a*b, a-b] features, padding-aware pooling."""

import functools

import pytest
import torch

import ssm
from ssm.models import RetrievalClassifier


def make(pooling="mean"):
    torch.manual_seed(0)
    return RetrievalClassifier(
        d_model=8, n_layers=1, layer=functools.partial(ssm.S4D, d_state=4), d_output=2, n_tokens=11,
        pooling=pooling,
    ).double().eval()


def test_logits_equal_head_of_combined_features_from_one_shared_encoder():
    model = make()
    x = torch.randint(0, 11, (2, 3, 9))
    lengths = torch.tensor([[9, 4, 7], [2, 9, 5]])
    logits = model(x, lengths)
    assert logits.shape == (3, 2)

    def features(doc, n):  # each document on its own, unpadded
        h = model.backbone(model.encoder(doc[:n].unsqueeze(0)))
        return h.mean(1).squeeze(0)

    for i in range(3):
        a, b = features(x[0, i], lengths[0, i]), features(x[1, i], lengths[1, i])
        expected = model.head(torch.cat([a, b, a * b, a - b]))
        # the causal layer makes padded positions irrelevant to the pooled prefix
        torch.testing.assert_close(logits[i], expected)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match=r"\(2, batch, length\)"):
        make()(torch.randint(0, 11, (3, 9)))
    with pytest.raises(ValueError, match="token inputs only"):
        RetrievalClassifier(8, 1, ssm.S4D, d_output=2, d_input=3)


def test_last_pooling_reads_the_last_valid_step_of_each_document():
    """Guards pooling="last": a, b = h[lengths - 1]; logits = W2 GELU(W1 [a, b, a*b, a-b] + b1) + b2."""
    model = make("last")
    x = torch.randint(0, 11, (2, 3, 9))
    lengths = torch.tensor([[9, 4, 7], [2, 9, 5]])
    logits = model(x, lengths)
    W1, b1, W2, b2 = model.head[0].weight, model.head[0].bias, model.head[2].weight, model.head[2].bias

    def last_feature(doc, n):  # the causal encoder on the unpadded document, its last step
        return model.backbone(model.encoder(doc[:n].unsqueeze(0)))[0, -1]

    for i in range(3):
        a, b = last_feature(x[0, i], lengths[0, i]), last_feature(x[1, i], lengths[1, i])
        hidden = torch.cat([a, b, a * b, a - b]) @ W1.T + b1
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / 2**0.5))
        torch.testing.assert_close(logits[i], hidden @ W2.T + b2, rtol=1e-10, atol=1e-10)
