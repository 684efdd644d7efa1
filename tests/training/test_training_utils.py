"""Optimizer builder, cosine-warmup schedule and the W&B mode decision."""

import math
import os
from urllib.parse import urlparse

import pytest
import torch

import ssm
from ssm.training.batch_size import fit_batch_to_memory, split_batch
from ssm.training.loggers import resolve_wandb_mode, wandb_logger
from ssm.training.optim import build_optimizer, cosine_warmup


def lrs_over(steps: int, warmup: int, total: int, base: float = 1.0, **kwargs) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = cosine_warmup(opt, warmup, total, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warmup_follows_its_formula():
    warmup, total = 4, 12
    lrs = lrs_over(14, warmup, total)
    for s, lr in enumerate(lrs):
        if s < warmup:
            expected = s / warmup
        else:
            expected = 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / (total - warmup))))
        assert lr == pytest.approx(expected)
    assert lrs[warmup] == pytest.approx(1.0) and lrs[total] == pytest.approx(0.0)


def test_a_warmup_longer_than_the_schedule_is_cut_to_it():
    """warmup = min(warmup_steps, total_steps): the lr reaches its full value at total_steps
    (not the slower ramp of the uncut warmup), then holds at the floor."""
    lrs = lrs_over(9, 10, 6)
    assert lrs[:7] == pytest.approx([s / 6 for s in range(7)])
    assert lrs[7:] == pytest.approx([0.0, 0.0])


def test_cosine_warmup_start_and_floor_factors():
    """SpaceTime's timm schedule: warmup from lr·f0, cosine down to lr·fmin, flat after."""
    warmup, total, f0, fmin = 3, 9, 1e-3, 1e-2
    lrs = lrs_over(12, warmup, total, start_factor=f0, min_factor=fmin)
    for s, lr in enumerate(lrs):
        if s < warmup:
            expected = f0 + (1 - f0) * s / warmup
        else:
            expected = fmin + (1 - fmin) * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / (total - warmup))))
        assert lr == pytest.approx(expected)
    assert lrs[0] == pytest.approx(f0) and lrs[-1] == pytest.approx(fmin)


def test_cosine_warmup_without_prefix_is_timms_default_schedule():
    """warmup_prefix=False: timm's CosineLRScheduler (t_initial 300, lr_min 1e-5, 10 warmup
    epochs from 1e-6, SpaceTime's settings) written out: the cosine counts from epoch 0."""
    base, f0, fmin, warmup, total = 1e-3, 1e-3, 1e-2, 10, 300
    lrs = lrs_over(320, warmup, total, base=base, start_factor=f0, min_factor=fmin, warmup_prefix=False)
    for t, lr in enumerate(lrs):
        if t < warmup:
            expected = 1e-6 + t * (base - 1e-6) / warmup
        elif t < total:
            expected = 1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * t / total))
        else:
            expected = 1e-5
        assert lr == pytest.approx(expected, rel=1e-9), t


def test_cosine_warmup_can_go_on_past_its_end_as_hf_does():
    """after_total="cosine": HF's get_cosine_schedule_with_warmup, 0.5 (1 + cos(π p)) for every
    p, back at the full lr at p = 2; the default holds the floor."""
    warmup, total = 2, 10
    lrs = lrs_over(24, warmup, total, after_total="cosine")
    for s, lr in enumerate(lrs[warmup:], start=warmup):
        assert lr == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    assert lrs[18] == pytest.approx(1.0) and lrs[total] == pytest.approx(0.0)
    assert lrs_over(24, warmup, total)[total:] == pytest.approx([0.0] * 14)


@pytest.mark.parametrize("kwargs, match", [(dict(start_factor=2.0), "start_factor"), (dict(interval="batch"), "interval"),
                                           (dict(total_steps=0), "total_steps"), (dict(after_total="restart"), "after_total")])
def test_cosine_warmup_bad_arguments(kwargs, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        cosine_warmup(opt, **{"warmup_steps": 1, "total_steps": 5, **kwargs})


def test_scheduler_config_counts_epochs_or_steps():
    import functools
    from types import SimpleNamespace

    from ssm.training.optim import scheduler_config

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    trainer = SimpleNamespace(max_epochs=7, max_steps=-1, datamodule=None, estimated_stepping_batches=70)
    by_epoch = scheduler_config(functools.partial(cosine_warmup, warmup_steps=0, interval="epoch"), opt, trainer)
    assert by_epoch["interval"] == "epoch" and by_epoch["scheduler"].lr_lambdas[0](7) == pytest.approx(0.0)
    by_step = scheduler_config(functools.partial(cosine_warmup, warmup_steps=0), opt, trainer)
    assert by_step["interval"] == "step" and by_step["scheduler"].lr_lambdas[0](35) == pytest.approx(0.5)
    fixed = scheduler_config(functools.partial(cosine_warmup, warmup_steps=0, total_steps=10, interval="epoch"), opt, trainer)
    assert fixed["scheduler"].lr_lambdas[0](5) == pytest.approx(0.5)


def test_stepping_batches_counts_its_own_loader():
    from types import SimpleNamespace

    from ssm.training.optim import stepping_batches

    class Data:
        def train_dataloader(self):
            return range(10)  # 10 batches

    trainer = SimpleNamespace(max_epochs=3, max_steps=-1, datamodule=Data(), limit_train_batches=None,
                              accumulate_grad_batches=4)
    assert stepping_batches(trainer) == 3 * 3  # ceil(10 / 4) optimizer steps per epoch
    trainer.limit_train_batches = 0.5
    assert stepping_batches(trainer) == 3 * 2
    trainer.limit_train_batches = 4
    assert stepping_batches(trainer) == 3
    trainer.max_steps = 17
    assert stepping_batches(trainer) == 17


def test_cosine_warmup_scales_every_group_by_the_same_factor():
    layer = ssm.S4D(4, 8, lr=1e-3)
    opt = build_optimizer(layer, lr=1e-2, weight_decay=0.1)
    sched = cosine_warmup(opt, warmup_steps=2, total_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    factor = sched.get_last_lr()[0] / 1e-2
    lrs = {g.get("weight_decay"): g["lr"] for g in opt.param_groups}
    assert lrs[0.0] == pytest.approx(1e-3 * factor)


def test_build_optimizer_keeps_ssm_hints_and_rejects_bad_values():
    opt = build_optimizer(ssm.S4D(4, 8, lr=2e-3), name="adamw", lr=1e-2, weight_decay=0.05)
    hinted = [g for g in opt.param_groups if g["lr"] == 2e-3]
    assert hinted and all(g["weight_decay"] == 0.0 for g in hinted)
    with pytest.raises(ValueError, match="optimizer name"):
        build_optimizer(ssm.S4D(4, 8), name="lion")
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        build_optimizer(ssm.S4D(4, 8), lr=0.0)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    from ssm.training import loggers

    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(loggers, "_exported_mode", None)
    return tmp_path


def write_netrc(home, host):
    netrc = home / ".netrc"
    netrc.write_text(f"machine {host}\n  login user\n  password secret\n")
    netrc.chmod(0o600)


def test_wandb_is_offline_without_credentials(clean_env):
    assert resolve_wandb_mode("auto") == "offline"


def test_wandb_is_online_with_an_api_key(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"


def test_wandb_is_online_with_a_netrc_login_for_the_host_wandb_uses(clean_env, monkeypatch):
    """`wandb login` stores the key under the installed wandb's default server, which is not
    api.wandb.ai in later releases; a key for another server does not count."""
    import wandb

    from ssm.training.loggers import wandb_host

    assert wandb_host() == urlparse(wandb.Settings().base_url).hostname
    write_netrc(clean_env, "elsewhere.example.com")
    assert resolve_wandb_mode("auto") == "offline"
    write_netrc(clean_env, wandb_host())
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_host() == "wandb.example.org" and resolve_wandb_mode("auto") == "offline"
    write_netrc(clean_env, "wandb.example.org")
    assert resolve_wandb_mode("auto") == "online"


def test_wandb_host_falls_back_when_the_url_is_empty_or_wandb_is_missing(clean_env, monkeypatch):
    import sys

    import wandb

    from ssm.training.loggers import wandb_host

    monkeypatch.setenv("WANDB_BASE_URL", "")  # empty: not set
    assert wandb_host() == urlparse(wandb.Settings().base_url).hostname
    monkeypatch.delenv("WANDB_BASE_URL")
    monkeypatch.setitem(sys.modules, "wandb", None)  # wandb cannot be imported: its historical default
    assert wandb_host() == "api.wandb.ai"


def test_the_chosen_mode_becomes_wandbs_process_setting(clean_env, monkeypatch):
    """An offline run exports WANDB_MODE=offline, so that wandb's own threads stay off the
    network too; a later decision still sees the user's setting, not the exported one."""
    import wandb

    logger = wandb_logger(save_dir=str(clean_env), mode="auto")
    try:
        assert os.environ["WANDB_MODE"] == "offline" and logger._wandb_init["mode"] == "offline"
    finally:
        wandb.finish()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"  # the exported "offline" was not the user's
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's own
    logger = wandb_logger(save_dir=str(clean_env), mode="offline")
    assert os.environ["WANDB_MODE"] == "offline" and resolve_wandb_mode("auto") == "disabled"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_online_wandb_without_credentials_says_how_to_log_in(clean_env, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(RuntimeError, match="needs credentials: set WANDB_API_KEY or run `wandb login`.*offline"):
        wandb_logger(save_dir=str(clean_env), mode="online" if how == "argument" else "auto")


def test_offline_wandb_run_starts_without_the_anonymous_deprecation_warning(clean_env, capfd):
    import wandb

    logger = wandb_logger(save_dir=str(clean_env), mode="offline")
    try:
        assert logger.experiment is not None
    finally:
        wandb.finish()
    captured = capfd.readouterr()
    assert "anonymous" not in captured.out + captured.err


def test_wandb_mode_env_and_explicit_mode_win(clean_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match="logger mode"):
        resolve_wandb_mode("cloud")


@pytest.mark.parametrize("target, fits, expected", [
    (16, 64, (16, 1)), (16, 16, (16, 1)), (16, 8, (8, 2)), (16, 5, (4, 4)), (16, 1, (1, 16)), (50, 20, (17, 3)),
])
def test_split_batch_fits_memory_and_covers_the_target(target, fits, expected):
    batch, steps = split_batch(target, fits)
    assert (batch, steps) == expected
    assert batch <= fits and batch * steps >= target


def test_fit_batch_to_memory_keeps_the_batch_off_cuda():
    import lightning as L

    class Data:
        batch_size = 16

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    data = Data()
    fit_batch_to_memory(trainer, None, data)
    assert data.batch_size == 16 and trainer.accumulate_grad_batches == 1


def test_fit_batch_to_memory_shrinks_batch_and_accumulates(monkeypatch):
    """The CUDA branch, with the device check and the finder's answer stood in for."""
    import lightning as L
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.tuner import Tuner

    from ssm.training import batch_size as module

    class Data:
        batch_size = 16

    monkeypatch.setattr(module, "CUDAAccelerator", CPUAccelerator)
    calls = {}

    def finder(self, task, datamodule, mode, init_val, max_trials):
        calls.update(mode=mode, init_val=init_val)
        return 5  # the largest batch that "fits"

    monkeypatch.setattr(Tuner, "scale_batch_size", finder)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, accumulate_grad_batches=2)
    data = Data()
    fit_batch_to_memory(trainer, None, data)
    assert calls == {"mode": "binsearch", "init_val": 16}
    assert data.batch_size == 4 and trainer.accumulate_grad_batches == 8


def test_a_warmup_as_long_as_the_run_is_reported(caplog):
    import functools
    import types

    from ssm.training.optim import cosine_warmup, scheduler_config

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    trainer = types.SimpleNamespace(max_steps=50, max_epochs=1)
    with caplog.at_level("WARNING"):
        scheduler_config(functools.partial(cosine_warmup, warmup_steps=100), optimizer, trainer)
    assert "warmup_steps=100 is not shorter than the run (50 steps)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        scheduler_config(functools.partial(cosine_warmup, warmup_steps=50), optimizer, trainer)
    assert "warmup_steps=50 is not shorter than the run (50 steps)" in caplog.text  # exactly as long
    caplog.clear()
    with caplog.at_level("WARNING"):
        scheduler_config(functools.partial(cosine_warmup, warmup_steps=10), optimizer, trainer)
        scheduler_config(functools.partial(cosine_warmup, warmup_steps=100, min_factor=1.0), optimizer, trainer)
    assert "warmup" not in caplog.text


@pytest.mark.parametrize("setting, backend", [("true", "inductor"), ("aot_eager", "aot_eager")])
def test_compile_setting_compiles_the_model_forward_with_its_backend(tmp_path, monkeypatch, setting, backend):
    """compile=true asks torch.compile for inductor and compile=<name> for that backend, for the
    model's own forward (in place); the run is stopped there, before anything is compiled."""
    from config_helpers import compose_config

    from ssm.training.run import fit

    class Compiling(Exception):
        pass

    calls = []

    def compile_(fn, *args, **kwargs):
        calls.append((fn, kwargs.get("backend")))
        raise Compiling

    monkeypatch.setattr(torch, "compile", compile_)
    cfg = compose_config("experiment=synthetic/selective_copy", "data.n_train=8", "data.n_val=4", "data.n_test=4",
                         "model.n_layers=1", "model.d_model=8", f"compile={setting}", output_dir=str(tmp_path))
    with pytest.raises(Compiling):
        fit(cfg)
    [(fn, used)] = calls
    assert used == backend
    assert isinstance(fn.__self__, torch.nn.Module) and not hasattr(fn.__self__, "training_step")  # the model


def test_a_run_that_fails_is_finished_as_failed_in_wandb(tmp_path, monkeypatch):
    """wandb.finish() without an exit code records a crashed run as successful."""
    import wandb
    from config_helpers import compose_config

    from ssm.training.run import fit

    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    codes, finish = [], wandb.finish

    def record(exit_code=None, **kwargs):
        codes.append(exit_code)
        finish(exit_code=exit_code, **kwargs)  # still finish it: later runs must not log into it

    monkeypatch.setattr(wandb, "finish", record)
    cfg = compose_config("experiment=synthetic/selective_copy", "data.n_train=8", "data.n_val=4", "data.n_test=4",
                         "model.n_layers=1", "model.d_model=8", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                         "callbacks.progress=null", "+callbacks.fail._target_=kill_callback.RaiseAtStart",
                         "logger.mode=offline", f"logger.save_dir={tmp_path}", output_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="failing on purpose"):
        fit(cfg)
    assert codes == [1]


@pytest.mark.parametrize("mode, env, says", [("auto", None, "no credentials found"), ("offline", None, "offline as set"),
                                             ("auto", "offline", "offline as set")])
def test_the_offline_log_line_says_why(clean_env, monkeypatch, caplog, mode, env, says):
    import logging

    if env:
        monkeypatch.setenv("WANDB_MODE", env)
    with caplog.at_level(logging.INFO, logger="ssm.training.loggers"):
        wandb_logger(save_dir=str(clean_env), mode=mode)
    assert f"W&B: {says}, logging offline to" in caplog.text


@pytest.mark.parametrize("overrides, bar", [([], True), (["callbacks.progress=null"], False),
                                            (["callbacks.progress=null", "+trainer.enable_progress_bar=true"], True)])
def test_no_progress_callback_means_no_progress_bar(overrides, bar):
    """callbacks.progress=null used to leave Lightning's default bar on (and
    trainer.enable_progress_bar=false alone contradicted the configured RichProgressBar)."""
    from config_helpers import compose_config
    from lightning.pytorch.callbacks import ProgressBar

    from ssm.training.run import trainer_inputs

    arguments, callbacks = trainer_inputs(compose_config("experiment=lra", *overrides), has_logger=False)
    has_bar = any(isinstance(c, ProgressBar) for c in callbacks) or arguments.get("enable_progress_bar", True)
    assert has_bar == bar
