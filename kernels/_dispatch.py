"""One rule for every op in `kernels`: which implementation runs a call.

- ``backend=None``: CUDA tensors go to the Triton kernel when the op has one, everything
  else to the PyTorch path (``"torch"``).
- ``backend="triton" | "torch" | "reference"`` forces one. ``"triton"`` on CPU tensors needs
  ``TRITON_INTERPRET=1`` set before triton is imported (the Triton interpreter).
- ``with kernels.use_backend("triton"): ...`` forces one for every op called inside the block
  that is not given ``backend=`` itself, e.g. to run a whole layer on one backend.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import threading
from typing import Callable, Iterator, Mapping

import torch

BACKENDS = ("triton", "torch", "reference")


class _ForcedBackend(threading.local):
    """The backend forced by the innermost :func:`use_backend` block of this thread.

    A thread-local attribute rather than a ``ContextVar``: TorchDynamo traces attribute reads
    of a ``threading.local`` (and guards on the value, so a compiled function recompiles when
    the block changes) but cannot trace ``ContextVar.get``, which would stop
    ``torch.compile(fullgraph=True)`` at every op.

    The attribute is set per instance (``threading.local`` runs ``__init__`` once in each
    thread), never read from the class: TorchDynamo would guard on a class attribute, and
    code compiled before the first block would then ignore every block."""

    def __init__(self):
        self.backend: str | None = None


_forced = _ForcedBackend()


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "3.6.0" or "2.4.0rc1"."""
    major, minor = (re.findall(r"\d+", version) + ["0", "0"])[:2]
    return int(major), int(minor)


def interpreter_problem(triton_version: str | None, numpy_version: str | None) -> str | None:
    """Why the Triton interpreter of these releases cannot run the kernels, or None.

    Before Triton 3.7 the interpreter turns a scalar kernel argument used as a loop bound
    (``range(0, L, BLOCK)``) into an int with ``int()`` of a one-element array, which NumPy
    2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars")."""
    if triton_version is None or numpy_version is None:
        return None
    if _release(triton_version) < (3, 7) and _release(numpy_version) >= (2, 4):
        return (f"the Triton interpreter of triton {triton_version} cannot run with numpy {numpy_version} "
                "(it converts loop bounds with int() of a one-element array, which numpy 2.4 refuses); "
                "install triton>=3.7 or numpy<2.4")
    return None


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# Read once, without importing either package: select_backend may be traced by TorchDynamo.
INTERPRETER_PROBLEM = interpreter_problem(_installed_version("triton"), _installed_version("numpy"))


def forced_backend() -> str | None:
    """The backend forced by the enclosing :func:`use_backend` block, or None."""
    return _forced.backend


@contextlib.contextmanager
def use_backend(backend: str | None) -> Iterator[None]:
    """Run every op inside the block on ``backend`` (None restores the device rule)."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    outer, _forced.backend = _forced.backend, backend
    try:
        yield
    finally:
        _forced.backend = outer


def select_backend(
    op: str,
    implementations: Mapping[str, Callable],
    backend: str | None,
    *tensors: torch.Tensor,
) -> Callable:
    """Return the implementation of ``op`` that should run on ``tensors`` (which must share a
    device)."""
    devices = {t.device for t in tensors if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {', '.join(sorted(map(str, devices)))}")
    if backend is None:
        backend = _forced.backend
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
        if any(t.is_meta for t in tensors if isinstance(t, torch.Tensor)):
            raise ValueError(f"{op}: backend='triton' cannot run on meta tensors; use 'torch' or 'reference'")
        on_cpu = any(not t.is_cuda for t in tensors if isinstance(t, torch.Tensor))
        if on_cpu and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                f"{op}: backend='triton' on CPU tensors needs TRITON_INTERPRET=1 "
                "set before triton is imported"
            )
        if on_cpu and INTERPRETER_PROBLEM:
            raise RuntimeError(f"{op}: backend='triton' on CPU tensors: {INTERPRETER_PROBLEM}")
    return implementations[backend]


def triton_installed() -> bool:
    """Whether the triton package can be imported here (ops then offer backend="triton")."""
    return importlib.util.find_spec("triton") is not None


def deferred(module: str, name: str) -> Callable:
    """``module.name``, imported on its first call. Triton kernel modules read
    TRITON_INTERPRET when their kernels are decorated, at import, so they are imported only
    once a call needs them (by then the environment is settled). Never traced: under
    ``torch.compile`` every Triton path runs as a ``torch.library`` op instead."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call

