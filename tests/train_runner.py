"""Run ``train.py`` in a subprocess on a tiny generated ListOps, as a user would (W&B
credentials removed, data and home under the test's folder)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent
TINY = [
    "experiment=lra",
    "data.n_train=64",
    "data.n_val=16",
    "data.n_test=16",
    "data.min_length=10",
    "data.max_length=60",
    "data.batch_size=16",
    "data.workers=1",
    "model.n_layers=1",
    "model.d_model=16",
    "model.layer.d_state=8",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
]


def train(tmp_path: pathlib.Path, run: str, *overrides: str, check: bool = True, multirun: bool = False,
          timeout: int = 300, tiny: bool = True) -> subprocess.CompletedProcess:
    """``python train.py TINY... hydra.run.dir=<tmp>/<run> overrides...`` (``-m``: multirun into
    ``hydra.sweep.dir=<tmp>/<run>``; ``tiny=False``: without TINY, the overrides alone); with
    ``check`` the run must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), DATA_PATH=str(tmp_path / "data"),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    where = f"hydra.sweep.dir={tmp_path / run}" if multirun else f"hydra.run.dir={tmp_path / run}"
    cmd = [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), *(TINY if tiny else []), where,
           *overrides]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def load_checkpoint(path: pathlib.Path) -> dict:
    """A checkpoint as the run resumes it: without unpickling arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)
