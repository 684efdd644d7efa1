"""LRA Pathfinder and Path-X: the official release when present, else images generated with
the published curve-drawing procedure (deterministic by seed, written in the release layout)."""

from __future__ import annotations

import logging
import os
import pathlib

from ssm.data import lra, pathfinder
from ssm.training.data.base import ClassificationDataModule

log = logging.getLogger(__name__)


class PathfinderDataModule(ClassificationDataModule):
    """Binary "are the two markers connected" images flattened to L = resolution² pixels.

    Reads ``pathfinder{resolution}/<difficulty folder>`` under ``data_root`` (also under
    ``pathfinder/`` or an unpacked ``lra_release/``); without it, generates ``n_images``
    images there once. As in S4/S5, the images are split 80/10/10 by a permutation seeded
    with ``split_seed``. Pixels are scaled to [-1, 1] features (``d_input = 1``), or kept as
    256 integer tokens with ``tokenize=True``.

    Args:
        data_root: folder holding the data.
        resolution: 32 (Pathfinder), 64, or 128 (Path-X).
        difficulty: "easy", "intermediate" or "hard" (LRA uses hard).
        n_images: images to generate when no data exist (the release has 200,000).
        seed: generator seed. split_seed: seed of the 80/10/10 split.
        workers: generator processes (None: all cores).
    """

    n_classes = 2

    def __init__(
        self,
        data_root: str | os.PathLike = "data",
        resolution: int = 32,
        difficulty: str = "hard",
        n_images: int = pathfinder.RELEASE_IMAGES,
        seed: int = 0,
        split_seed: int = 42,
        tokenize: bool = False,
        workers: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        pathfinder.check_resolution(resolution)
        pathfinder.check_difficulty(difficulty)
        self.data_root = pathlib.Path(data_root).expanduser()
        self.resolution, self.difficulty = resolution, difficulty
        self.n_images, self.seed, self.split_seed, self.workers = n_images, seed, split_seed, workers
        self.tokenize = tokenize
        self.n_tokens = 256 if tokenize else None
        self.d_input = None if tokenize else 1
        self.image_shape = (resolution, resolution)  # for 2D models (ssm.ImageClassifier)
        self.collate_fn = lra.collate_images

    def prepare_data(self) -> None:
        self._directory(log.info, log.warning)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        directory = self._directory(log.debug)
        samples = pathfinder.list_samples(directory)
        train, val, test = pathfinder.split_indices(len(samples), self.split_seed)
        self.train_set, self.val_set, self.test_set = (
            pathfinder.PathfinderDataset(directory, self.tokenize, indices, samples)
            for indices in (train, val, test)
        )

    def _directory(self, report, warn=None) -> pathlib.Path:
        return pathfinder.prepare_pathfinder(
            self.data_root, self.resolution, self.difficulty, self.n_images, seed=self.seed,
            workers=self.workers, log=report, warn=warn,
        )
