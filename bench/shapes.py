"""Default benchmark shapes per op and device: what ``python -m bench --op <op>`` times when
``--lengths`` / ``--batch`` / ``--channels`` / ``--state`` are not given, and what
``python -m bench.gpu_suite`` times on the GPU.

Each entry is ``(lengths, batch, channels, state)``. The GPU shapes are Mamba/S4-sized; the
CPU shapes keep one op's whole table (every backend, the sequential reference up to its
length cap, ``--repeats 5``) to minutes on a small CPU: 4 to 132 s per op on 2 cores when
they were chosen. So the README's ``python -m bench --op <op>`` lines finish there too.
"""

from __future__ import annotations

Shape = tuple[list[int], int, int, int]

GPU_SHAPES: dict[str, Shape] = {
    "selective_scan": ([1024, 4096, 16384], 8, 1536, 16),
    "mamba": ([1024, 4096], 8, 768, 16),
    "selective_state_update": ([256, 1024], 8, 1536, 16),  # decoding that many tokens
    "selective_scan_2d": ([1024, 4096, 16384], 8, 192, 16),
    "cross_scan": ([1024, 4096, 16384], 8, 192, 16),
    "linear_scan": ([1024, 4096, 16384], 8, 256, 64),
    "s5": ([1024, 4096, 16384], 8, 256, 64),
    "fftconv": ([1024, 4096, 16384, 65536], 8, 256, 32),
    "vandermonde": ([1024, 4096, 16384, 65536], 8, 256, 32),
    "s4d_kernel": ([1024, 4096, 16384, 65536], 8, 256, 32),
    "s4d": ([1024, 4096, 16384], 8, 256, 32),
    "companion_kernel": ([1024, 4096, 16384], 8, 256, 64),
    "selective_scan_2d_tiles": ([16384], 8, 192, 16),  # last: data for the tile heuristic at 128x128
}

CPU_SHAPES: dict[str, Shape] = {
    "selective_scan": ([1024, 4096], 2, 64, 16),
    "mamba": ([1024, 4096], 2, 64, 16),
    "selective_state_update": ([64, 256], 2, 64, 16),
    "selective_scan_2d": ([1024, 4096], 2, 64, 16),
    "cross_scan": ([1024, 4096, 16384], 2, 64, 16),
    "linear_scan": ([1024, 4096, 16384], 2, 64, 64),
    "s5": ([1024, 4096, 16384], 2, 64, 64),
    "fftconv": ([1024, 4096, 16384, 65536], 4, 64, 32),
    "vandermonde": ([1024, 4096, 16384], 1, 256, 32),
    "s4d_kernel": ([1024, 4096, 16384], 1, 256, 32),
    "s4d": ([1024, 4096, 16384], 4, 128, 32),
    "companion_kernel": ([336, 720, 4096], 1, 128, 64),
    "selective_scan_2d_tiles": GPU_SHAPES["selective_scan_2d_tiles"],  # refuses to run on a CPU
}


def default_shape(op: str, device_type: str) -> Shape:
    """The (lengths, batch, channels, state) that ``op`` is timed at on ``device_type``
    ("cuda" or anything else, which gets the CPU shapes)."""
    shape = (GPU_SHAPES if device_type == "cuda" else CPU_SHAPES)[op]
    return list(shape[0]), shape[1], shape[2], shape[3]
