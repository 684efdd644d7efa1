"""Data loaders whose position Lightning checkpoints, so a run killed mid-epoch resumes on the
very next batch it would have seen.

- :class:`EpochSampler`: the order of epoch e is a pure function of (seed, e) (a permutation
  when shuffling), sharded over the ranks of a distributed run (rank r takes every
  world-th index, the order padded by wrap-around to a multiple of the world size, as
  ``torch.utils.data.DistributedSampler`` does); it can skip the first indices of an epoch.
- :class:`ResumableLoader`: a ``DataLoader`` over it with ``state_dict`` / ``load_state_dict``
  (epoch, batches yielded), which Lightning saves in every checkpoint and restores on
  resume. It has its own generator, so making an iterator never draws from the global RNG
  (a resumed run then draws the same dropout masks as an uninterrupted one).

- :func:`evaluation_loader`: validation and test in order, each rank of a distributed run
  taking its share (:class:`EvaluationSampler`).

The loaders shard themselves, so the trainer runs with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """Indices of a dataset of ``n`` items for this rank, in an order fixed by (seed, epoch)."""

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed = int(n), bool(shuffle), int(seed)
        self.epoch = 0
        self.skip = 0  # indices of the next epoch to leave out (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        rank, world = _rank_and_world()
        if world > 1 and order:
            total = math.ceil(self.n / world) * world
            order = (order * math.ceil(total / self.n))[:total][rank::world]
        return order

    def __len__(self) -> int:
        _, world = _rank_and_world()
        return math.ceil(self.n / world) if self.n else 0

    def __iter__(self):
        order = self._order()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` that can be checkpointed mid-epoch.

    Args:
        dataset: map-style dataset.
        batch_size: samples per batch.
        shuffle: a new (seed, epoch)-determined permutation each epoch.
        seed: base seed of the order (None: ``torch.initial_seed()``, i.e. the run's seed
            after ``lightning.seed_everything``).
        collate_fn, num_workers: as for ``DataLoader`` (workers persist between epochs).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = None,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
    ) -> None:
        seed = torch.initial_seed() % 2**31 if seed is None else int(seed)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=EpochSampler(len(dataset), shuffle, seed),
            collate_fn=collate_fn,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )
        self._yielded = 0

    def __iter__(self):
        self._yielded = self.sampler.skip // self.batch_size
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        """Where the loader stands: the epoch and how many of its batches were handed out."""
        return {"epoch": self.sampler.epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration starts after the batches already handed out."""
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip = int(state["batches"]) * self.batch_size


class EvaluationSampler(Sampler[int]):
    """Indices 0 .. n-1 in order; in a distributed run rank r takes r, r + world, r + 2·world, ...

    Unlike the training order nothing is padded, so every example is evaluated exactly once
    over the ranks (their shares differ by at most one). A split smaller than the number of
    ranks is not divided: each rank evaluates all of it. The epoch metrics are torchmetrics
    states, sums over ranks of per-example terms and of counts, so they are exact either way
    (``self.log(sync_dist=True)`` means are not: see ``epoch_metrics.EpochMeans``).
    """

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def _share(self) -> range:
        rank, world = _rank_and_world()
        return range(rank, self.n, world) if self.n >= world else range(self.n)

    def __len__(self) -> int:
        return len(self._share())

    def __iter__(self):
        return iter(self._share())


def evaluation_loader(
    dataset: Dataset, batch_size: int, collate_fn: Callable | None = None, num_workers: int = 0
) -> DataLoader:
    """An in-order loader over this rank's share of ``dataset`` (:class:`EvaluationSampler`),
    with its own generator."""
    return DataLoader(dataset, batch_size=batch_size, sampler=EvaluationSampler(len(dataset)), collate_fn=collate_fn,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(0))
