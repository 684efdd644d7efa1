"""The Triton tests must also run on a GPU machine, where the interpreter is off and the
Triton backend refuses CPU tensors: each test hands the backend tensors on
``devices.TRITON_DEVICE``.

This runs every Triton test (``-k triton``) in a new process with the interpreter off and
``TRITON_DEVICE`` set to ``meta``. A Triton call on ``TRITON_DEVICE`` then fails with "cannot
run on meta tensors" (or "0 active drivers" for a direct kernel launch), one on CPU tensors
with "needs TRITON_INTERPRET=1": no test may fail the second way. A test that stops at its
first Triton call cannot show a later one; reading the test covers that.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from devices import HAS_CUDA

from kernels._dispatch import triton_installed

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU machine the Triton tests themselves run on the GPU")
@pytest.mark.skipif(not triton_installed(), reason="triton is not installed")
def test_no_triton_test_hands_the_backend_cpu_tensors_outside_the_interpreter(tmp_path):
    report = tmp_path / "report.xml"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(TRITON_INTERPRET="0", SSM_TEST_TRITON_DEVICE="meta")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-k", "triton", f"--junitxml={report}", "--ignore", str(pathlib.Path(__file__)), "tests"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert report.exists(), done.stdout[-2000:] + done.stderr[-2000:]

    on_cpu, on_meta = [], 0
    for case in ET.parse(report).getroot().iter("testcase"):
        for failure in case.findall("failure") + case.findall("error"):
            text = (failure.get("message") or "") + (failure.text or "")
            name = f"{case.get('classname')}::{case.get('name')}"
            if "needs TRITON_INTERPRET=1" in text:
                on_cpu.append(name)
            elif "cannot run on meta tensors" in text or "active drivers" in text:
                on_meta += 1
    assert not on_cpu, "these tests give the Triton backend CPU tensors, which fails on a GPU machine " \
        "(build them on devices.TRITON_DEVICE):\n" + "\n".join(on_cpu)
    # the check saw the Triton tests reach the backend on TRITON_DEVICE (it is not vacuous)
    assert on_meta > 300, done.stdout[-3000:]


def test_the_dev_install_has_the_training_stack():
    """conftest.py leaves out the test modules that need hydra, omegaconf or wandb where they
    are not installed; the dev install has them, so CI runs every module."""
    from conftest import MISSING_TRAINING_STACK

    assert not MISSING_TRAINING_STACK, f"{MISSING_TRAINING_STACK} missing: pip install -e \".[dev]\""


# run as a script: pytest with the training stack's imports refused, as where it is not installed
_WITHOUT_TRAINING_STACK = """
import sys
import pytest

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hydra", "omegaconf", "wandb"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
sys.exit(pytest.main(sys.argv[1:]))
"""


def collected(*prefix: str, extra: list[str]) -> tuple[list[str], str]:
    """The node ids ``pytest --collect-only -k triton`` prints, run as ``prefix``, and its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # hydra's pytest plugin would import it
    command = [*prefix, "--collect-only", "-q", "-p", "no:cacheprovider", "-k", "triton", *extra, "tests"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return [line for line in done.stdout.splitlines() if "::" in line], done.stdout


def test_every_triton_test_is_collected_without_the_training_stack(tmp_path):
    """On a GPU machine with torch and triton but not hydra, omegaconf or wandb, every Triton
    test is still collected (no collection error stops the run), and the modules left out
    hold none of them."""
    script = tmp_path / "without_training_stack.py"
    script.write_text(_WITHOUT_TRAINING_STACK)
    ignore = ["--ignore", str(pathlib.Path(__file__))]
    without, output = collected(sys.executable, str(script), extra=ignore)
    with_stack, _ = collected(sys.executable, "-m", "pytest", extra=ignore)
    assert "not collected, for want of hydra, omegaconf, wandb:" in output and "test_configs.py" in output
    assert without == with_stack and len(without) > 300
