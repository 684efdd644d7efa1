"""Diagonal linear recurrence (the state update of a diagonal SSM), over time dim 1:

    h[:, t] = a[:, t] * h[:, t-1] + b[:, t],    h[:, -1] = h0 (0 when None)

or, with ``reverse=True``, from the end: h[:, t] = a[:, t] * h[:, t+1] + b[:, t], h[:, L] = h0.
All tensors are (B, L, P) (a may be (P,), the same at every batch row and step), real or
complex; a real ``a`` may drive a complex ``b``.
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels.linear_scan.pytorch import linear_scan_torch
from kernels.linear_scan.reference import linear_scan_reference
from kernels.linear_scan.triton_op import linear_scan_triton

_IMPLEMENTATIONS = {"torch": linear_scan_torch, "reference": linear_scan_reference}

if triton_installed():  # else the op keeps its "torch" and "reference" backends
    _IMPLEMENTATIONS["triton"] = linear_scan_triton

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reverse: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """All states of ``h[:, t] = a[:, t] * h[:, t-1] + b[:, t]`` (or from t+1 with ``reverse``).

    Args:
        a: (B, L, P) multipliers, or (P,) for the same multiplier at every row and step.
            Real or complex; complex ``a`` needs complex ``b``. Same precision as ``b``.
        b: (B, L, P) inputs: float16, bfloat16, float32, float64, complex64 or complex128.
        h0: optional (B, P) state before the first step (after the last with ``reverse``),
            in b's dtype; zero when None.
        reverse: run the recurrence from t = L-1 down to 0.
        backend: None (by device: Triton on CUDA where triton is installed, else "torch"),
            "triton" (tiled parallel scan; CPU tensors need TRITON_INTERPRET=1), "torch"
            (chunked scan) or "reference" (one step per time index).

    Returns:
        h, (B, L, P) in b's dtype. float16 / bfloat16 are computed in float32. All of a,
        b, h0 are differentiable (PyTorch's complex convention: grad_a = grad_h · conj(h_prev)).
    """
    if not (torch.is_tensor(a) and torch.is_tensor(b)):
        raise TypeError("linear_scan: a and b must be tensors")
    if b.dim() != 3:
        raise ValueError(f"linear_scan: expected b of shape (B, L, P), got {tuple(b.shape)}")
    B, L, P = b.shape
    if a.shape not in ((B, L, P), (P,)):
        raise ValueError(
            f"linear_scan: expected a of shape (B, L, P) = ({B}, {L}, {P}) like b, or (P,) = ({P},), "
            f"got {tuple(a.shape)}"
        )
    if h0 is not None and (not torch.is_tensor(h0) or h0.shape != (B, P)):
        got = tuple(h0.shape) if torch.is_tensor(h0) else type(h0).__name__
        raise ValueError(f"linear_scan: expected h0 of shape (B, P) = ({B}, {P}), got {got}")
    for name, t in (("a", a), ("b", b), ("h0", h0)):
        if t is not None and t.dtype not in _DTYPES:
            raise TypeError(f"linear_scan: {name} must be one of {_DTYPES}, got {t.dtype}")
    if a.is_complex() and not b.is_complex():
        raise TypeError(f"linear_scan: complex a ({a.dtype}) needs complex b, got {b.dtype}")
    if a.real.dtype != b.real.dtype:
        raise TypeError(f"linear_scan: a and b must share a precision, got {a.dtype} and {b.dtype}")
    if h0 is not None and h0.dtype != b.dtype:
        raise TypeError(f"linear_scan: h0 must have b's dtype {b.dtype}, got {h0.dtype}")
    if len({t.device for t in (a, b, h0) if t is not None}) > 1:
        raise ValueError("linear_scan: a, b and h0 must be on the same device")
    fn = select_backend("linear_scan", _IMPLEMENTATIONS, backend, a, b, h0)
    return fn(a, b, h0, bool(reverse))


__all__ = ["linear_scan", "linear_scan_reference", "linear_scan_torch"]
