"""Checks of a composed config that run before any data, logger or model is made, so that a
mistyped value stops a run at once with a message naming its key (Lightning and the
constructors would otherwise fail late, deep in a traceback, or accept it silently)."""

from __future__ import annotations

import contextlib
import inspect
import numbers
import pathlib
import re
import traceback
from typing import Iterator

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from ssm.training.checks import is_integer
from ssm.training.forecasting import LOSSES, ForecastingTask
from ssm.training.optim import OPTIMIZERS, check_cosine_warmup_settings, check_optimizer_settings, cosine_warmup

ROOT_FLAGS = ("test", "fit_batch_to_memory")
CHECKED_GROUPS = ("model", "data", "task", "optimizer", "scheduler")


class ConfigError(ValueError):
    """A bad config value, found before the run starts: ``train.py`` prints its message
    alone (no traceback) and exits with status 2."""


class MissingDataError(FileNotFoundError):
    """A file the configured data set needs is missing, found before the run starts; the
    message says which file is expected where and how to get or make it. ``train.py`` prints
    it alone (no traceback) and exits with status 1."""


@contextlib.contextmanager
def missing_data_stops_the_run() -> Iterator[None]:
    """Turn a FileNotFoundError raised by this package's data code inside the block (directly,
    or through Hydra's instantiation) into a :class:`MissingDataError` with its message."""
    try:
        yield
    except (FileNotFoundError, InstantiationException) as err:
        cause = _innermost_cause(err)
        if isinstance(cause, MissingDataError) or not isinstance(cause, FileNotFoundError) \
                or not _raised_in_this_package(cause):
            raise
        raise MissingDataError(str(cause)) from err


def check_config(cfg: DictConfig) -> None:
    """Every check below; raise :class:`ConfigError` naming the key of the first bad value."""
    if cfg.get("sweep") is not None:  # configs/sweep/ holds W&B sweep files, which Hydra also sees as a group
        raise ConfigError("configs/sweep/*.yaml are W&B sweep definitions, not run settings: start one with "
                          "`wandb sweep configs/sweep/<name>.yaml` (see the README's Sweeps section)")
    check_run_length(cfg)
    check_optimizer(cfg)
    check_flags(cfg)
    check_compile(cfg)
    check_trainer(cfg)
    check_scheduler(cfg)
    check_task(cfg)


def check_run_length(cfg: DictConfig) -> None:
    """Raise ConfigError for a run that would train nothing (max_epochs=0 or max_steps=0 test
    an untrained model) or would never end with an LR schedule whose length comes from the
    run (max_epochs=-1 without max_steps: the cosine decay would reach 0 after one epoch)."""
    trainer = cfg.get("trainer") or {}
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if max_epochs == 0 or max_steps == 0:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs}, trainer.max_steps={max_steps}: the run would train nothing "
            "and test an untrained model; give at least one epoch or step"
        )
    endless = max_epochs == -1 and (max_steps is None or max_steps == -1)
    scheduler = cfg.get("scheduler")
    if endless and scheduler and not scheduler.get("total_steps"):
        raise ConfigError(
            "trainer.max_epochs=-1 trains without end, so the scheduler has no run length to decay over: "
            "set trainer.max_steps=N, scheduler.total_steps=N, or scheduler=constant (warmup, then a constant lr)"
        )


def check_optimizer(cfg: DictConfig) -> None:
    """Raise ConfigError for an optimizer config that ``build_optimizer`` would refuse once
    training starts (``check_optimizer_settings``), before data and loggers are set up."""
    optimizer = cfg.get("optimizer") or {}
    keys = ("name", "lr", "weight_decay", "decay_norms_and_biases", "betas")
    settings = {key: optimizer[key] for key in keys if key in optimizer}
    try:
        check_optimizer_settings(**settings)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if optimizer.get("_target_") == "ssm.training.optim.build_optimizer":  # its extra keys go to the torch optimizer
        torch_optimizer = OPTIMIZERS[settings.get("name", "adamw")]
        takes = set(inspect.signature(torch_optimizer).parameters) - {"params"}
        extra = [key for key in optimizer if not key.startswith("_") and key not in keys and key not in takes]
        if extra:
            raise ConfigError(f"optimizer.{extra[0]}: {torch_optimizer.__name__} takes no {extra[0]!r} (it takes "
                              f"{', '.join(sorted(takes))}); drop it with '~optimizer.{extra[0]}'")


def check_task(cfg: DictConfig) -> None:
    """The forecasting task's loss (which SpaceTime's aux loss also takes): checked here, so
    that a bad value is blamed on task.loss rather than on the model that reads it."""
    task = cfg.get("task") or {}
    if "loss" not in task or task.get("_target_") is None:
        return
    try:
        target = hydra.utils.get_object(task._target_)
    except (ImportError, AttributeError, ValueError):
        return
    if isinstance(target, type) and issubclass(target, ForecastingTask) and task.loss not in LOSSES:
        raise ConfigError(f"task.loss must be one of {LOSSES}, got {task.loss!r}")


def check_flags(cfg: DictConfig) -> None:
    """Booleans must be true or false: Hydra keeps ``test=no`` the string "no", which is
    truthy. Covers the root flags and every constructor argument annotated ``bool`` in the
    instantiated groups (``model.layer.bidirectional``, ``model.prenorm``, ...)."""
    for key in ROOT_FLAGS:
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], bool):
            raise ConfigError(f"{key} must be true or false, got {cfg[key]!r}")
    for group in CHECKED_GROUPS:
        if cfg.get(group) is not None:
            _check_bool_arguments(cfg[group], group)


def check_compile(cfg: DictConfig) -> None:
    """``compile`` is false, true (the default compiler) or a TorchDynamo backend's name."""
    value = cfg.get("compile")
    if value is None or isinstance(value, bool):
        return
    import torch._dynamo  # imports triton: only for runs that ask for a compiler

    if not isinstance(value, str) or value not in torch._dynamo.list_backends(exclude_tags=()):
        common = ", ".join(torch._dynamo.list_backends())  # without the debugging ones
        raise ConfigError(f"compile must be true, false or a torch.compile backend ({common}), got {value!r}")


def _check_bool_arguments(node, prefix: str) -> None:
    if not isinstance(node, DictConfig):
        return
    target = node.get("_target_")
    if target is not None:
        try:
            parameters = inspect.signature(hydra.utils.get_object(target)).parameters
        except (ImportError, AttributeError, ValueError, TypeError):
            parameters = {}  # a target that does not resolve fails with its own message later
        for name, parameter in parameters.items():
            if parameter.annotation in (bool, "bool") and name in node:
                value = node[name]
                if not isinstance(value, bool):
                    raise ConfigError(f"{prefix}.{name} must be true or false, got {value!r}")
    for key in node:
        if isinstance(key, str) and not key.startswith("_"):
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                _check_bool_arguments(child, f"{prefix}.{key}")


def check_trainer(cfg: DictConfig) -> None:
    """Trainer values that Lightning accepts silently or rejects late."""
    trainer = cfg.get("trainer") or {}
    for key in ("max_epochs", "max_steps"):
        value = trainer.get(key)
        if value is not None and not (is_integer(value) and value >= -1):
            raise ConfigError(f"trainer.{key} must be an integer >= -1 (-1: no limit) or null, got {value!r}")
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate is not None and not (is_integer(accumulate) and accumulate >= 1):
        raise ConfigError(f"trainer.accumulate_grad_batches must be an integer >= 1, got {accumulate!r}")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, numbers.Real) or clip < 0):
        raise ConfigError(f"trainer.gradient_clip_val must be a number >= 0 (0 or null: no clipping), got {clip!r}")
    limit = trainer.get("limit_train_batches")
    if limit is not None and not isinstance(limit, bool) and isinstance(limit, numbers.Real) and limit == 0:
        raise ConfigError("trainer.limit_train_batches=0: the run would train nothing and test an untrained model")


def check_scheduler(cfg: DictConfig) -> None:
    """The warmup-cosine schedule's settings (``scheduler=cosine_warmup`` / ``constant``),
    which it would otherwise check only when the trainer builds it."""
    scheduler = cfg.get("scheduler")
    if not scheduler or scheduler.get("_target_") is None:
        return
    try:
        target = hydra.utils.get_object(scheduler._target_)
    except (ImportError, AttributeError, ValueError):
        return
    if target is not cosine_warmup:
        return
    keys = ("warmup_steps", "total_steps", "start_factor", "min_factor", "interval", "after_total", "warmup_prefix")
    settings = {key: scheduler[key] for key in keys if key in scheduler}
    try:
        check_cosine_warmup_settings(**settings)
    except ValueError as err:
        raise ConfigError(f"scheduler: {err}") from None


__all__ = ["ConfigError", "check_config", "check_flags", "check_optimizer", "check_run_length", "check_scheduler",
           "check_task", "check_trainer"]


def instantiate_checked(cfg: DictConfig, key: str, **kwargs):
    """``hydra.utils.instantiate(cfg[key], **kwargs)``, where a constructor's refusal of a
    configured value becomes a :class:`ConfigError` naming the node: a ValueError raised by
    this package's own argument checks, or a TypeError for a keyword of the config that the
    target does not take (e.g. an experiment's ``model.layer.dt_min`` given to a layer without
    that argument, with the ``~key`` override that drops it). Anything else, a ValueError from
    a user's own code or a library included, propagates with its traceback. Nodes built as
    partials (optimizer, scheduler) are only called later, by the task."""
    try:
        return hydra.utils.instantiate(cfg[key], **kwargs)
    except InstantiationException as err:
        cause = _innermost_cause(err)
        message = str(cause)
        if isinstance(cause, ValueError) and _raised_in_this_package(cause):
            prefix = "" if message.startswith(f"{key}.") else f"{key}: "
            raise ConfigError(f"{prefix}{message}") from err
        unknown = re.search(r"unexpected keyword argument '(\w+)'", message) if isinstance(cause, TypeError) else None
        if unknown is None:
            raise
        paths = [path for path in _paths_of(cfg[key], key) if path.rsplit(".", 1)[-1] == unknown.group(1)]
        if not paths:  # a keyword the code passed, not the config: a bug to see whole
            raise
        drop = " ".join(repr("~" + path) for path in paths)
        raise ConfigError(f"{key}: {message} (a key its target does not take; drop it with {drop})") from err


def _innermost_cause(error: BaseException) -> BaseException:
    """The error a chain of Hydra InstantiationExceptions wraps (``error`` if none)."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error


def _raised_in_this_package(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in the ``ssm`` package."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and pathlib.Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE)


_PACKAGE = pathlib.Path(__file__).resolve().parents[1]  # ssm/


def _paths_of(node, prefix: str):
    """The dotted paths of every key under a config node."""
    if isinstance(node, DictConfig):
        for name in node.keys():
            path = f"{prefix}.{name}"
            yield path
            yield from _paths_of(node._get_node(name), path)
