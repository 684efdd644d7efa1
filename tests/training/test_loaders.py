"""The loaders' split of the data over the ranks of a distributed run (the ranks are faked:
the two-process runs in test_scale_out.py check the same through Lightning); the training
order per (seed, epoch) and a restored loader's place in it, without a train.py run."""

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


def test_the_training_order_is_a_new_permutation_each_epoch_fixed_by_seed_and_epoch():
    sampler = EpochSampler(20, shuffle=True, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert all(sorted(order) == list(range(20)) for order in orders)
    assert orders[0] != orders[1]  # a new order every epoch
    assert orders[2] == orders[0]  # the same (seed, epoch), the same order
    other = EpochSampler(20, shuffle=True, seed=3)
    other.set_epoch(1)
    assert list(other) == orders[1]
    assert list(EpochSampler(5, shuffle=False, seed=3)) == [0, 1, 2, 3, 4]


def _batches(loader):
    return [batch.tolist() for (batch,) in loader]


def test_a_restored_loader_continues_after_the_batches_handed_out_in_that_epoch_only():
    """A loader restored from ``state_dict`` mid-epoch yields the rest of the uninterrupted
    epoch, keeps counting from there (a second interruption resumes right too), and starts
    the next epoch from its first batch."""
    data = TensorDataset(torch.arange(11))

    def make():
        return loaders.ResumableLoader(data, batch_size=3, shuffle=True, seed=5)

    full = make()
    full.sampler.set_epoch(2)
    epoch2 = _batches(full)
    full.sampler.set_epoch(3)
    epoch3 = _batches(full)
    assert len(epoch2) == 4 and epoch2 != epoch3

    first = make()
    first.sampler.set_epoch(2)
    it = iter(first)
    head = [next(it)[0].tolist() for _ in range(2)]
    assert head == epoch2[:2] and first.state_dict() == {"epoch": 2, "batches": 2}

    second = make()
    second.load_state_dict(first.state_dict())
    it = iter(second)
    assert next(it)[0].tolist() == epoch2[2]
    assert second.state_dict() == {"epoch": 2, "batches": 3}
    third = make()
    third.load_state_dict(second.state_dict())
    assert _batches(third) == epoch2[3:]
    assert third.state_dict() == {"epoch": 2, "batches": 4}
    third.sampler.set_epoch(3)
    assert _batches(third) == epoch3


def test_iterating_the_training_loader_leaves_the_global_rng_alone():
    loader = loaders.ResumableLoader(TensorDataset(torch.arange(7)), batch_size=2, seed=1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        _batches(loader)
    assert torch.equal(torch.get_rng_state(), state)


def test_without_a_seed_the_training_order_follows_the_runs_seed():
    """seed=None takes torch.initial_seed() (the run's seed after seed_everything): the same
    run seed gives the same order, another seed another order."""
    def first_epoch(run_seed):
        torch.manual_seed(run_seed)
        return _batches(loaders.ResumableLoader(TensorDataset(torch.arange(16)), batch_size=4))

    assert first_epoch(1) == first_epoch(1)
    assert first_epoch(1) != first_epoch(2)
