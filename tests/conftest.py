"""Test-wide environment: Triton runs in its interpreter on CPU-only machines, W&B never
reaches the network (both must be set before triton / wandb are imported), and the PTD
factorizations are cached in a temporary folder, not in the user's cache.

Where the training stack (hydra-core, omegaconf, wandb) is not installed, as on a GPU
machine with only torch, triton, numpy and einops beside pytest, the test modules that
import it are not collected, so the kernel and layer tests still run there (the report's
header says so and its summary names them). The dev install has it: tests/test_devices.py
fails without it, so CI cannot pass with those modules left out."""

import importlib.util
import os
import re
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["SSM_CACHE_DIR"] = tempfile.mkdtemp(prefix="ssm-test-cache-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n K runs K worker processes: one intra-op thread each keeps them off each other's cores
    torch.set_num_threads(1)


TRAINING_STACK = ("hydra", "omegaconf", "wandb")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # an import hook that refuses the name
        return False


MISSING_TRAINING_STACK = [name for name in TRAINING_STACK if not _installed(name)]
# a module-level import of the training stack, of the training code, or of a test helper that imports it
_NEEDS_TRAINING_STACK = re.compile(
    r"^(?:from|import)\s+(?:hydra|omegaconf|wandb|ssm\.training|config_helpers|train_runner)\b", re.M)
_left_out: list[str] = []


def pytest_ignore_collect(collection_path, config):
    if (MISSING_TRAINING_STACK and collection_path.suffix == ".py" and collection_path.name.startswith("test_")
            and _NEEDS_TRAINING_STACK.search(collection_path.read_text())):
        _left_out.append(collection_path.name)
        return True
    return None


def pytest_report_header(config):
    from kernels._dispatch import INTERPRETER_PROBLEM

    lines = []
    if MISSING_TRAINING_STACK:
        lines.append(f"{', '.join(MISSING_TRAINING_STACK)} not installed: the test modules that need the training "
                     "stack are not collected")
    if os.environ.get("TRITON_INTERPRET") == "1" and INTERPRETER_PROBLEM:
        lines.append(f"the Triton tests on CPU will fail: {INTERPRETER_PROBLEM}")
    return lines or None


def pytest_terminal_summary(terminalreporter):
    if _left_out:
        terminalreporter.write_line(f"not collected, for want of {', '.join(MISSING_TRAINING_STACK)}: "
                                    f"{len(_left_out)} test modules ({', '.join(sorted(_left_out))})")
