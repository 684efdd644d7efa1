"""One rule for every op in `kernels`: which implementation runs a call.

- ``backend=None``: CUDA tensors go to the Triton kernel when the op has one, everything
  else to the PyTorch path (``"torch"``).
- ``backend="triton" | "torch" | "reference"`` forces one. ``"triton"`` on CPU tensors needs
  ``TRITON_INTERPRET=1`` set before triton is imported (the Triton interpreter).
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

import torch

BACKENDS = ("triton", "torch", "reference")


def select_backend(
    op: str,
    implementations: Mapping[str, Callable],
    backend: str | None,
    *tensors: torch.Tensor,
) -> Callable:
    """Return the implementation of ``op`` that should run on ``tensors``."""
    if backend is None:
        on_cuda = any(t.is_cuda for t in tensors if isinstance(t, torch.Tensor))
        backend = "triton" if on_cuda and "triton" in implementations else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend not in implementations:
        raise ValueError(
            f"{op}: backend {backend!r} is not available for this op; "
            f"available: {sorted(implementations)}"
        )
    if backend == "triton":
        on_cpu = any(not t.is_cuda for t in tensors if isinstance(t, torch.Tensor))
        if on_cpu and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"{op}: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 "
                "set before triton is imported"
            )
    return implementations[backend]
