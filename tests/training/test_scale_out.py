"""Scale-out and sweeps: two-process DDP on CPU (gloo), evaluation split over the ranks, Hydra multirun with one W&B run per
job, mixed precision with gradient accumulation, the W&B sweep files' agent command lines,
the SLURM launcher config."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import distributed_evaluation
import pytest
import torch
from config_helpers import CONFIGS, compose_config
from omegaconf import OmegaConf
from train_runner import load_checkpoint, train

from ssm.training.sweeps import agent_command, load_sweep, representative_values

SWEEPS = sorted((CONFIGS / "sweep").glob("*.yaml"))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    result = train(tmp_path, "ddp", "trainer=ddp", "trainer.devices=2", "trainer.max_epochs=1", "logger=none",
                   timeout=600)
    log = result.stdout + result.stderr
    assert "MEMBER: 2/2" in log and "gloo" in log.lower()
    checkpoint = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2  # 64 samples / (batch 16 x 2 processes)


@pytest.mark.slow
def test_multirun_jobs_are_separate_wandb_runs(tmp_path):
    train(tmp_path, "sweep", "optimizer.lr=0.01,0.02", "trainer.max_epochs=1", "test=false", multirun=True)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    runs = [list((job / "wandb").glob("offline-run-*")) for job in jobs]
    assert all(len(r) == 1 for r in runs) and runs[0][0].name != runs[1][0].name
    lrs = [OmegaConf.load(job / ".hydra" / "config.yaml").optimizer.lr for job in jobs]
    assert lrs == [0.01, 0.02]


@pytest.mark.slow
def test_mixed_precision_with_gradient_accumulation(tmp_path):
    train(tmp_path, "bf16", "trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2",
          "trainer.max_epochs=1", "logger=none")
    checkpoint = load_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2  # 4 batches, one optimizer step per 2


def test_there_are_sweeps_for_s4d_and_the_ptd_step_range():
    names = {p.stem for p in SWEEPS}
    assert {"s4d_listops", "s4ptd_dt"} <= names
    s4d = load_sweep(CONFIGS / "sweep" / "s4d_listops.yaml")["parameters"]
    assert {"optimizer.lr", "model.layer.d_state", "model.dropout"} <= set(s4d)
    assert {"model.layer.dt_min", "model.layer.dt_max"} <= set(load_sweep(CONFIGS / "sweep" / "s4ptd_dt.yaml")["parameters"])


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_agent_command_composes_with_every_parameter_applied(path):
    spec = load_sweep(path)
    params = representative_values(spec)
    command = agent_command(spec, params)
    assert command[:3] == ["/usr/bin/env", "python", "train.py"]
    assert spec["metric"]["name"] in {"val/acc", "val/loss", "val/mse"}
    overrides = command[3:]
    assert all("=" in word and not word.startswith("-") for word in overrides)  # Hydra overrides
    cfg = compose_config(*overrides)
    for key, value in params.items():
        assert OmegaConf.select(cfg, key, throw_on_missing=True) == pytest.approx(value), key


def test_agent_command_expands_the_wandb_macros():
    spec = {"program": "train.py", "parameters": {}, "command": ["${env}", "${interpreter}", "${program}", "${args}"]}
    assert agent_command(spec, {"a.b": 1}) == ["/usr/bin/env", "python", "train.py", "--a.b=1"]
    with pytest.raises(ValueError, match="args_json"):
        agent_command({**spec, "command": ["${args_json}"]}, {})
    with pytest.raises(ValueError, match="needs 'program' and 'parameters'"):
        bad = pathlib.Path(CONFIGS / "trainer" / "default.yaml")
        load_sweep(bad)


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="needs hydra-submitit-launcher (pip install -e '.[slurm]')")
def test_slurm_launcher_takes_its_size_from_the_trainer():
    cfg = compose_config("experiment=lra", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2",
                         "hydra/launcher=slurm")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)


def test_ddp_and_fsdp_trainer_configs():
    ddp = compose_config("experiment=lra", "trainer=ddp")
    assert ddp.trainer.strategy == "ddp" and ddp.trainer.sync_batchnorm and not ddp.trainer.use_distributed_sampler
    fsdp = compose_config("experiment=lra", "trainer=fsdp")
    assert fsdp.trainer.strategy == "fsdp" and fsdp.trainer.precision == "bf16-mixed"


@pytest.mark.slow
def test_distributed_evaluation_counts_each_example_once_and_keeps_the_metrics_exact(tmp_path):
    # 9 validation examples in batches of 4: ranks take 5 (2 batches) and 4 (1 batch); the one
    # test example is fewer than the ranks, so both evaluate it
    n_val, n_test, batch = 9, 1, 4
    script = pathlib.Path(__file__).resolve().parents[1] / "distributed_evaluation.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "WANDB_"))}
    env["PYTHONPATH"] = str(script.parents[1])
    records = {}
    for devices in (1, 2):
        out = tmp_path / str(devices)
        out.mkdir()
        done = subprocess.run([sys.executable, str(script), str(out), str(devices), str(n_val), str(n_test), str(batch)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        records[devices] = [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]

    (single,), (rank0, rank1) = records[1], records[2]
    assert single["val_seen"] == list(range(n_val))
    assert (rank0["val_seen"], rank1["val_seen"]) == ([0, 2, 4, 6, 8], [1, 3, 5, 7])
    assert rank0["test_seen"] == rank1["test_seen"] == [0]
    for split, n in (("val", n_val), ("test", n_test)):
        x, y = distributed_evaluation.split(n, 1 if split == "val" else 2).tensors
        logits = 1.5 * x[:, :-1].double()
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(-1) == y).double().mean().item()
        for record in (single, rank0, rank1):
            assert record[split][f"{split}/loss"] == pytest.approx(loss, rel=1e-6), (split, record[split])
            assert record[split][f"{split}/acc"] == pytest.approx(accuracy, rel=1e-6), (split, record[split])
