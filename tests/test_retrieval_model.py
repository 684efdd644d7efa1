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
