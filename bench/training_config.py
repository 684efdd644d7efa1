"""The training config of ``python train.py <overrides>``, composed in-process for the
benchmark studies that train through the same pipeline."""

from __future__ import annotations

import pathlib
import tempfile

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def compose_training_config(overrides: list[str], prefix: str) -> DictConfig:
    """Compose configs/config.yaml with ``overrides``, its run folder a fresh temporary
    directory named ``prefix``…, and register it as the current Hydra config (as train.py's
    decorator would)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = tempfile.mkdtemp(prefix=prefix)
    HydraConfig.instance().set_config(cfg)
    return cfg
