"""Train a sequence model: ``python train.py experiment=lra`` (Hydra overrides welcome)."""

import sys

import hydra
from omegaconf import DictConfig

from ssm.training.config_checks import ConfigError, MissingDataError
from ssm.training.run import run


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as err:  # a bad value found before the run started: the message is enough
        print(f"Error in the config: {err}", file=sys.stderr)
        sys.exit(2)
    except MissingDataError as err:  # found before the run started: the message says what to get where
        print(f"Missing data: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
