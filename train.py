"""Train a sequence model: ``python train.py experiment=lra`` (Hydra overrides welcome)."""

import hydra
from omegaconf import DictConfig

from ssm.training.run import run


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
