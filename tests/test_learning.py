"""S4D learns a long-range dependency that a model without sequence mixing cannot."""

import functools

import pytest
import torch
from torch import nn

import ssm

LENGTH, CLASSES, TOKENS = 256, 4, 8


def first_token_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences whose label is the class coded by the first token."""
    x = torch.randint(CLASSES, TOKENS, (n, LENGTH), generator=generator)
    y = torch.randint(0, CLASSES, (n,), generator=generator)
    x[:, 0] = y
    return x, y


def train_and_score(layer, steps: int = 300) -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ssm.SequenceClassifier(
        d_model=32, n_layers=2, layer=layer, d_output=CLASSES, n_tokens=TOKENS, pooling="last"
    )
    optimizer = torch.optim.AdamW(ssm.optim.param_groups(model, weight_decay=0.0), lr=3e-3)
    for _ in range(steps):
        x, y = first_token_task(32, g)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x, y = first_token_task(512, g)
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


@pytest.mark.slow
def test_s4d_recalls_first_token_over_256_steps():
    accuracy = train_and_score(functools.partial(ssm.S4D, d_state=16, lr=3e-3))
    assert accuracy > 0.95


@pytest.mark.slow
def test_model_without_ssm_stays_at_chance():
    accuracy = train_and_score(lambda d_model: nn.Linear(d_model, d_model))
    assert accuracy < 0.4
