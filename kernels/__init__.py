"""Numerical ops for structured state-space models.

Each op takes and returns tensors (no modules) and dispatches on the device: Triton on CUDA
where the op has a Triton kernel, the PyTorch path on CPU; ``backend=`` forces one.
"""

from kernels._dispatch import BACKENDS, select_backend, use_backend
from kernels.companion_kernel import companion_kernel
from kernels.cross_scan import cross_merge, cross_scan
from kernels.fftconv import fftconv
from kernels.linear_scan import linear_scan
from kernels.selective_scan import selective_scan
from kernels.selective_scan_2d import selective_scan_2d
from kernels.selective_state_update import selective_state_update
from kernels.vandermonde import vandermonde

__all__ = [
    "BACKENDS", "companion_kernel", "cross_merge", "cross_scan", "fftconv", "linear_scan", "select_backend",
    "selective_scan", "selective_scan_2d", "selective_state_update", "use_backend", "vandermonde",
]
