"""Where the tests run the Triton backend.

On a CUDA machine the Triton kernels run compiled on the GPU; on a CPU-only machine they run
in the Triton interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 there).
Tests build the Triton backend's inputs on ``TRITON_DEVICE``, so the same test checks the
interpreter in CI and the compiled kernel on a GPU.

``SSM_TEST_TRITON_DEVICE`` overrides the device. tests/test_devices.py uses it to find tests
that would hand the Triton backend CPU tensors on a GPU machine: with ``meta`` and no
interpreter, such a test fails with "needs TRITON_INTERPRET=1", every other Triton call with
"cannot run on meta tensors".
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
TRITON_DEVICE = os.environ.get("SSM_TEST_TRITON_DEVICE") or ("cuda" if HAS_CUDA else "cpu")

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def backend_device(backend: str | None) -> str:
    """Where ``backend``'s inputs live: ``TRITON_DEVICE`` for "triton", the CPU for the others."""
    return TRITON_DEVICE if backend == "triton" else "cpu"


def on_backend_device(inputs: dict, backend: str | None) -> dict:
    """``inputs`` with its tensors moved to :func:`backend_device` (the same tensors on CPU)."""
    device = backend_device(backend)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
