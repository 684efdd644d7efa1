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
