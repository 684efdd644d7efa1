"""``run(cfg)``: compose data, model, task, trainer, logger and callbacks from a Hydra config
and train. ``train.py`` is a thin Hydra entry point around it."""

from __future__ import annotations

import inspect
import logging
import pathlib
import warnings

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from ssm.training.batch_size import fit_batch_to_memory
from ssm.training.callbacks import MonitoredMetricsExist
from ssm.training.config_checks import ConfigError, check_config, instantiate_checked, missing_data_stops_the_run
from ssm.training.forecasting import ForecastingTask

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    callbacks = []
    for name, spec in (cfg.get("callbacks") or {}).items():
        if spec is None:
            continue
        if name == "lr_monitor" and not has_logger:
            continue
        callbacks.append(hydra.utils.instantiate(spec))
    return callbacks


def trainer_inputs(cfg: DictConfig, has_logger: bool) -> tuple[dict, list[L.Callback]]:
    """(Trainer arguments, callbacks). Without a progress-bar callback (``callbacks.progress=null``)
    the run shows no bar at all, rather than Lightning's default one."""
    callbacks = [*build_callbacks(cfg, has_logger=has_logger), MonitoredMetricsExist()]
    arguments = trainer_arguments(cfg)
    if not any(isinstance(c, ProgressBar) for c in callbacks):
        arguments.setdefault("enable_progress_bar", False)
    return arguments, callbacks


def build_model(cfg: DictConfig, datamodule):
    """Instantiate ``cfg.model`` with the input and output shapes of ``datamodule``
    (:func:`model_shapes`)."""
    return hydra.utils.instantiate(cfg.model, **model_shapes(cfg, datamodule))


def model_shapes(cfg: DictConfig, datamodule) -> dict:
    """The arguments ``cfg.model`` takes from the data (checkpoints record them, so that
    ``ssm.training.load_model`` rebuilds a model without its data set).

    Forecasters (a ``horizon`` argument) get lag, horizon, n_variates and n_targets;
    classifiers get d_output and n_tokens or d_input, image models (an ``image_shape``
    argument) the data's image shape, and K-target sequence tasks n_predict."""
    target = hydra.utils.get_class(cfg.model._target_)
    params = inspect.signature(target).parameters
    name = type(datamodule).__name__
    if "horizon" in params:
        if getattr(datamodule, "horizon", None) is None:
            raise ConfigError(f"model {target.__name__} forecasts; data {name} is not a forecasting data set "
                              "(forecasting experiments: experiment=spacetime, experiment=chimera and their folders)")
        return {"lag": datamodule.lag, "horizon": datamodule.horizon, "n_variates": datamodule.n_variates,
                "n_targets": datamodule.n_targets}
    if getattr(datamodule, "n_classes", None) is None:
        raise ConfigError(f"model {target.__name__} classifies; data {name} has no classes (a forecasting set? "
                          "its models: model=spacetime, model=chimera)")
    shapes = {"d_output": datamodule.n_classes}
    n_tokens, d_input = getattr(datamodule, "n_tokens", None), getattr(datamodule, "d_input", None)
    if (n_tokens is None) == (d_input is None):
        raise ConfigError(
            f"data {name} must give exactly one of n_tokens (inputs are token ids (B, L)) and d_input "
            f"(inputs are features (B, L, d_input)), got n_tokens={n_tokens!r}, d_input={d_input!r} "
            "(see ssm.training.data.ClassificationDataModule)"
        )
    shapes["n_tokens" if n_tokens is not None else "d_input"] = n_tokens if n_tokens is not None else d_input
    if "image_shape" in params:
        image_shape = getattr(datamodule, "image_shape", None)
        if image_shape is None:
            raise ConfigError(
                f"model {target.__name__} is a 2D model and needs images; data {name} is a 1D sequence data set "
                "(use it with lra/image, lra/pathfinder or lra/pathx)"
            )
        shapes["image_shape"] = tuple(image_shape)
    n_predict = getattr(datamodule, "n_predict", None)
    if n_predict is not None:  # K predictions per sequence (synthetic tasks)
        if cfg.model.get("pooling") != "last_k":
            raise ConfigError(
                f"data {name} has {n_predict} targets per sequence, predicted at the last "
                f"positions: set model.pooling=last_k (got {cfg.model.get('pooling')!r})"
            )
        shapes["n_predict"] = n_predict
    return shapes


def check_task_fits_data(cfg: DictConfig, datamodule) -> None:
    """A forecasting task needs forecasting data (a horizon), a classification task classes."""
    task = hydra.utils.get_class(cfg.task._target_)
    forecasting_task = issubclass(task, ForecastingTask)
    forecasting_data = getattr(datamodule, "horizon", None) is not None
    if forecasting_task != forecasting_data:
        kind = "forecasting" if forecasting_data else "classification"
        raise ConfigError(
            f"task {task.__name__} does not fit data {type(datamodule).__name__}, a {kind} data set: use "
            f"task={'forecasting' if forecasting_data else 'classification'} (or an experiment that pairs them)"
        )


def resolved_config(cfg: DictConfig) -> dict:
    """The resolved config as plain containers, without Hydra's own ``hydra`` node."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in cfg.items()
        if key != "hydra"
    }


def run(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) as configured; returns the last logged train/val metrics and the test
    metrics. A config with a ``study`` node (e.g. ``experiment=synthetic/arp``) runs that
    study instead: ``hydra.utils.instantiate(cfg.study)(cfg)``, which calls :func:`fit`."""
    if cfg.get("study"):
        return hydra.utils.instantiate(cfg.study)(cfg)
    return fit(cfg)[0]


def fit(cfg: DictConfig):
    """Build everything from ``cfg``, train, test: (metrics, task, datamodule)."""
    L.seed_everything(cfg.seed, workers=True)
    check_config(cfg)
    ckpt_path, checkpoint = _checkpoint(cfg.get("ckpt_path"))
    cfg = _continue_checkpoints_of(cfg, ckpt_path)
    with missing_data_stops_the_run():  # before W&B and the trainer start
        datamodule = instantiate_checked(cfg, "data")
        if hasattr(datamodule, "check_files"):
            datamodule.check_files()
    check_task_fits_data(cfg, datamodule)
    shapes = model_shapes(cfg, datamodule)
    model = instantiate_checked(cfg, "model", **shapes)
    if cfg.get("compile"):  # in place: the parameters' names, and so the checkpoints, are unchanged
        backend = "inductor" if cfg.compile is True else cfg.compile
        model.compile(backend=backend)
        log.info("model: compiled with torch.compile (backend %s)", backend)
    extra = {}
    if "n_classes" in inspect.signature(hydra.utils.get_class(cfg.task._target_)).parameters:
        extra["n_classes"] = datamodule.n_classes
    task = instantiate_checked(
        cfg,
        "task",
        model=model,
        optimizer=instantiate_checked(cfg, "optimizer"),
        scheduler=instantiate_checked(cfg, "scheduler") if cfg.get("scheduler") else None,
        **extra,
    )
    task.model_shapes = shapes  # recorded in every checkpoint, for ssm.training.load_model
    if checkpoint is not None:
        check_checkpoint_matches(checkpoint, task, ckpt_path)
        del checkpoint
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    if logger:
        logger.log_hyperparams(resolved_config(cfg))
    arguments, callbacks = trainer_inputs(cfg, has_logger=bool(logger))
    trainer = L.Trainer(**arguments, logger=logger, callbacks=callbacks)
    if cfg.get("fit_batch_to_memory"):
        fit_batch_to_memory(trainer, task, datamodule)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %s parameters", f"{n_params:,}")
    failed = True
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            best = _best_checkpoint(trainer)
            trainer.test(task, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        failed = False
        return metrics, task, datamodule
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=1 if failed else 0)  # a crashed run is marked failed in W&B


def check_checkpoint_matches(checkpoint: dict, task: L.LightningModule, path: str) -> None:
    """Raise ValueError, listing the differences, when the checkpoint's weights do not fit the
    configured model (another model, size or data set) instead of Lightning's raw dump."""
    saved = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        raise ValueError(f"ckpt_path={path}: not a training checkpoint (no state_dict); pass a last.ckpt or "
                         "best-*.ckpt written by train.py")
    expected = task.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [f"{k}: {tuple(saved[k].shape)} in the checkpoint, {tuple(v.shape)} here"
              for k, v in expected.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")

        parts = [f"{len(missing)} weights missing ({few(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({few(unexpected)})" if unexpected else "",
                 f"{len(shapes)} of another shape ({few(shapes)})" if shapes else ""]
        raise ValueError(
            f"ckpt_path={path} does not fit the configured model: " + "; ".join(p for p in parts if p)
            + ". Resume with the experiment, model and data settings of the run that wrote it."
        )


def _best_checkpoint(trainer: L.Trainer) -> str:
    """The path of the first ``ModelCheckpoint``'s best model, or "" when there is none."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            return callback.best_model_path
    return ""


def trainer_arguments(cfg: DictConfig) -> dict:
    """``cfg.trainer`` as Trainer arguments; SyncBatchNorm (trainer=ddp) only exists on GPUs,
    so CPU processes (trainer.accelerator=cpu, or no GPU) keep their own BatchNorm statistics."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    on_cpu = kwargs.get("accelerator") == "cpu" or not torch.cuda.is_available()
    if kwargs.get("sync_batchnorm") and on_cpu:
        log.info("sync_batchnorm needs GPUs; the CPU processes keep their own BatchNorm statistics")
        kwargs["sync_batchnorm"] = False
    return kwargs


def _continue_checkpoints_of(cfg: DictConfig, path: str | None) -> DictConfig:
    """When resuming from ``<dir>/last.ckpt`` (``path``, checked by :func:`_checkpoint`), keep
    writing checkpoints into ``<dir>``: the best-checkpoint bookkeeping (best score, paths) is
    only restored for the same folder, and the run's checkpoints stay together (so Lightning's
    "exists and is not empty" warning about that folder is expected and silenced)."""
    if not path:
        return cfg
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    callbacks = cfg.get("callbacks") or {}
    folder = str(pathlib.Path(path).resolve().parent)
    cfg = cfg.copy()
    with open_dict(cfg):
        for name, spec in callbacks.items():
            if spec is not None and "dirpath" in spec:
                cfg.callbacks[name].dirpath = folder
    log.info("resuming from %s: checkpoints continue in %s", path, folder)
    return cfg


def _checkpoint(path: str | None) -> tuple[str | None, dict | None]:
    """(the resolved ``ckpt_path``, the checkpoint loaded memory-mapped) or (None, None);
    a missing, non-file or unreadable path raises with what to pass instead."""
    if path is None:
        return None, None
    resolved = pathlib.Path(path).expanduser()
    example = "outputs/<date>/<time>/checkpoints/last.ckpt"
    if resolved.is_dir():
        raise IsADirectoryError(f"ckpt_path={path!r} is a folder; pass the checkpoint file in it, such as {example}")
    if not resolved.is_file():
        raise FileNotFoundError(f"ckpt_path={path!r} does not exist; pass the path of a checkpoint such as {example}")
    try:
        checkpoint = torch.load(resolved, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated file, another format, a pickle with foreign objects
        raise ConfigError(  # torch's own message advises on saving files, which does not apply here
            f"ckpt_path={path!r} is not a readable checkpoint (torch.load raised {type(error).__name__}); pass a "
            f"last.ckpt or best-*.ckpt written by train.py, such as {example}"
        ) from None
    return str(resolved), checkpoint
