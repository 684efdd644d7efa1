"""Compose the project's Hydra configs in tests, with ${hydra:...} resolvable as in a run."""

import pathlib

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def compose_config(*overrides: str, output_dir: str = "outputs/test"):
    """The composed config, with ${hydra:...} resolvable as inside a Hydra run."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
    HydraConfig.instance().set_config(cfg)
    return cfg
