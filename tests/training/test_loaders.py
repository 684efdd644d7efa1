"""The loaders' split of the data over the ranks of a distributed run (the ranks are faked:
the two-process runs in test_scale_out.py check the same through Lightning)."""

import pytest
import torch
from torch.utils.data import TensorDataset

from ssm.training.data import loaders
from ssm.training.data.loaders import EpochSampler, EvaluationSampler, evaluation_loader


def shares(sampler_factory, world, monkeypatch):
    out = []
    for rank in range(world):
        monkeypatch.setattr(loaders, "_rank_and_world", lambda rank=rank: (rank, world))
        sampler = sampler_factory()
        out.append(list(sampler))
        assert len(sampler) == len(out[-1])
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10])
def test_evaluation_shares_hold_every_example_once_in_order(monkeypatch, n, world):
    parts = shares(lambda: EvaluationSampler(n), world, monkeypatch)
    if n < world:  # too few to divide: every rank evaluates all of them
        assert parts == [list(range(n))] * world
        return
    assert sorted(i for part in parts for i in part) == list(range(n))
    assert all(part == sorted(part) for part in parts)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_evaluation_loader_batches_this_ranks_share(monkeypatch):
    monkeypatch.setattr(loaders, "_rank_and_world", lambda: (1, 2))
    loader = evaluation_loader(TensorDataset(torch.arange(9)), batch_size=3)
    assert [batch.tolist() for (batch,) in loader] == [[1, 3, 5], [7]]
    assert len(loader) == 2


@pytest.mark.parametrize("shuffle", [False, True])
def test_training_shares_are_padded_to_equal_length_and_cover_the_epoch(monkeypatch, shuffle):
    parts = shares(lambda: EpochSampler(10, shuffle, seed=3), 3, monkeypatch)
    assert [len(p) for p in parts] == [4, 4, 4]  # 10 padded by wrap-around to 12
    assert set(i for part in parts for i in part) == set(range(10))
