"""W&B sweep files (``configs/sweep/*.yaml``) and the command line their agent runs.

A sweep's ``command`` is a list of words with W&B's macros: ``${env}``, ``${interpreter}``,
``${program}`` and the trial's parameters as ``${args}`` (``--key=value``) or
``${args_no_hyphens}`` (``key=value``, which is what Hydra reads). :func:`agent_command`
expands them the way ``wandb agent`` does, so a test can compose the exact overrides a trial
will get.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping

import yaml

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


def load_sweep(path: str | pathlib.Path) -> dict:
    """The sweep spec of a YAML file, checked for what the agent needs."""
    spec = yaml.safe_load(pathlib.Path(path).read_text())
    if not isinstance(spec, dict) or "parameters" not in spec or "program" not in spec:
        raise ValueError(f"{path}: a W&B sweep needs 'program' and 'parameters', got keys {sorted(spec or {})}")
    return spec


def representative_values(spec: Mapping) -> dict:
    """One value per parameter: the first of ``values``, ``value``, or the geometric (log
    distributions) or arithmetic middle of [min, max]."""
    chosen = {}
    for name, p in spec["parameters"].items():
        if "values" in p:
            chosen[name] = p["values"][0]
        elif "value" in p:
            chosen[name] = p["value"]
        elif "min" in p and "max" in p:
            if str(p.get("distribution", "")).startswith(("log_uniform", "q_log_uniform")):
                chosen[name] = math.sqrt(p["min"] * p["max"])
            else:
                chosen[name] = (p["min"] + p["max"]) / 2
        else:
            raise ValueError(f"sweep parameter {name!r}: no values, value or min/max in {dict(p)}")
    return chosen


def agent_command(spec: Mapping, params: Mapping, interpreter: str = "python", env: str = "/usr/bin/env") -> list[str]:
    """The argv ``wandb agent`` runs for one trial with ``params``."""
    args = [f"{k}={v}" for k, v in params.items()]
    words = []
    for word in spec.get("command", DEFAULT_COMMAND):
        if word == "${env}":
            words.append(env)
        elif word == "${interpreter}":
            words.append(interpreter)
        elif word == "${program}":
            words.append(spec["program"])
        elif word == "${args}":
            words += [f"--{a}" for a in args]
        elif word == "${args_no_hyphens}":
            words += args
        elif word.startswith("${"):
            raise ValueError(f"sweep command macro {word} is not one this helper expands")
        else:
            words.append(str(word))
    return words
