"""VMamba's cross-scan and its adjoint, cross-merge.

    cross_scan(x)[:, 0] = x flattened row-major         (k0)
    cross_scan(x)[:, 1] = x flattened column-major      (k1)
    cross_scan(x)[:, 2] = reverse of k0,  [:, 3] = reverse of k1

for x (B, C, Hgt, Wdt), giving (B, 4, C, Hgt·Wdt). ``cross_merge(y, Hgt, Wdt)`` takes the four
sequences back to the image and sums them: it is the exact adjoint, ⟨cross_scan(x), y⟩ =
⟨x, cross_merge(y)⟩, so each op's backward is the other (to any order).

Backends: "reference" (explicit index maps, plain autograd; the test oracle), "torch"
(flips and a transpose) and "triton" (one kernel per op on 2D tiles: the scan reads each
pixel once and writes its four copies, the merge reads the four and writes their sum once).
Any Hgt, Wdt >= 1 and float16 / bfloat16 / float32 / float64 work on every backend.
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels.cross_scan.pytorch import cross_merge_torch, cross_scan_torch
from kernels.cross_scan.reference import cross_merge_reference, cross_scan_reference
from kernels.cross_scan.triton_op import cross_merge_triton, cross_scan_triton

_SCAN = {"torch": cross_scan_torch, "reference": cross_scan_reference}
_MERGE = {"torch": cross_merge_torch, "reference": cross_merge_reference}

if triton_installed():  # else the ops keep their "torch" and "reference" backends
    _SCAN["triton"] = cross_scan_triton
    _MERGE["triton"] = cross_merge_triton

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def cross_scan(x: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """The four scan orders of an image: x (B, C, Hgt, Wdt) -> (B, 4, C, Hgt·Wdt).

    Args:
        x: (B, C, Hgt, Wdt), float16 / bfloat16 / float32 / float64, any strides.
        backend: None (by device), "triton", "torch" or "reference" (explicit index maps).

    Returns:
        (B, 4, C, Hgt·Wdt) in x's dtype: [:, 0] row-major, [:, 1] column-major, [:, 2] and
        [:, 3] the same two reversed.
    """
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"cross_scan: expected x of shape (B, C, Hgt, Wdt), got {_shape(x)}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"cross_scan: x must be one of {_FLOATS}, got {x.dtype}")
    return select_backend("cross_scan", _SCAN, backend, x)(x)


def cross_merge(y: torch.Tensor, Hgt: int, Wdt: int, backend: str | None = None) -> torch.Tensor:
    """The adjoint of :func:`cross_scan`: y (B, 4, C, Hgt·Wdt) -> (B, C, Hgt, Wdt), each pixel
    the sum of its four entries.

    Args:
        y: (B, 4, C, Hgt·Wdt), float16 / bfloat16 / float32 / float64, the four sequences in
            cross_scan's order.
        Hgt, Wdt: the image size.
        backend: None (by device), "triton" (sums in float32 for half inputs), "torch" or
            "reference".

    Returns:
        (B, C, Hgt, Wdt) in y's dtype.
    """
    for arg, value in (("Hgt", Hgt), ("Wdt", Wdt)):
        if isinstance(value, bool) or not _integral(value) or value < 1:
            raise ValueError(f"cross_merge: {arg} must be a positive integer, got {value!r}")
    Hgt, Wdt = int(Hgt), int(Wdt)
    if not torch.is_tensor(y) or y.dim() != 4 or y.shape[1] != 4 or y.shape[3] != Hgt * Wdt:
        raise ValueError(
            f"cross_merge: expected y of shape (B, 4, C, Hgt·Wdt) with Hgt·Wdt = {Hgt * Wdt}, got {_shape(y)}"
        )
    if y.dtype not in _FLOATS:
        raise TypeError(f"cross_merge: y must be one of {_FLOATS}, got {y.dtype}")
    return select_backend("cross_merge", _MERGE, backend, y)(y, Hgt, Wdt)


def _integral(value) -> bool:
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def _shape(t) -> str:
    return str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__


__all__ = ["cross_merge", "cross_merge_reference", "cross_merge_torch", "cross_scan", "cross_scan_reference",
           "cross_scan_torch"]
