"""Timing primitives: warm-up, median of repeats, peak memory, copy bandwidth."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall-clock seconds of ``fn()`` after ``warmup`` untimed calls."""
    return time_stats(fn, device, warmup, repeats)["median"]


def time_stats(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5) -> dict:
    """Wall-clock seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones:
    ``{"median", "min", "max"}`` (the spread says how steady the machine was)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated while ``fn()`` runs, above what was allocated when it started.

    On CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` at the start (the
    caching allocator's live tensor bytes, not its reserved pool).

    On CPU: :func:`cpu_peak_memory`, the peak of the running sum of the allocation and free
    events that torch's CPU allocator reports while ``fn()`` runs under the profiler.

    None on other devices (not measured).
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type == "cpu":
        return cpu_peak_memory(fn)
    return None


def cpu_peak_memory(fn: Callable[[], object]) -> int:
    """Peak live bytes of CPU tensors allocated by ``fn()``, above the live bytes at its start.

    What is counted: every CPU allocation and free that goes through torch's CPU allocator
    while ``fn()`` runs, on the calling thread, which on CPU is also where autograd runs
    backward, custom ``autograd.Function`` backward included. ``fn()`` runs once under
    ``torch.profiler`` with ``profile_memory=True``; its allocation (+bytes) and free
    (-bytes) events are summed in time order and the largest prefix sum is returned.
    Memory freed during ``fn()`` that was allocated before it started is not subtracted
    (the allocator reports no size for it), so the result is the peak of what ``fn()``
    itself allocated and still held. Tensors ``fn()`` returns count at their size until
    they are dropped.

    Not counted: memory outside torch's allocator (workspaces of FFT/BLAS libraries,
    Python objects), allocations made inside intra-op worker threads, and anything the
    operating system adds (page rounding, allocator caching), so this is not the process's
    resident-set growth.
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda t: t[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def copy_bandwidth(device: torch.device, n_bytes: int = 1 << 28) -> float:
    """Bytes per second of a device-to-device copy of ``n_bytes`` (read + write counted: 2
    n_bytes moved); the default, 256 MiB, is well beyond any cache."""
    src = torch.empty(max(1, n_bytes // 4), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device)
    return 2 * n_bytes / seconds


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for the block: the profiler's C++ side logs a start and a
    stop line there on every use. Python errors still propagate as exceptions."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
