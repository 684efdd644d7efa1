"""Reference linear scan: one step per time index, autograd through the loop."""

from __future__ import annotations

import torch

from kernels._empty import with_zero_grads


def linear_scan_reference(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None, reverse: bool = False
) -> torch.Tensor:
    """h[:, t] = a[:, t] * h[:, t-1] + b[:, t] (or from t+1 with ``reverse``), h[:, -1] = h0.

    a (B, L, P) or (P,), b (B, L, P), h0 (B, P) or None; returns (B, L, P) in b's dtype.
    Half-precision inputs are computed in float32. Meant for tests and as a baseline: L
    sequential steps (use float64 / complex128 inputs for an exact oracle).
    """
    out_dtype = b.dtype
    a, b, h0 = _widen(a), _widen(b), None if h0 is None else _widen(h0)
    Bsz, L, P = b.shape
    if L == 0:  # empty, but in the graph: zero gradients for a, b and h0
        return with_zero_grads(b.to(out_dtype), a, h0)
    h = torch.zeros(Bsz, P, dtype=b.dtype, device=b.device) if h0 is None else h0
    a_steps = [a] * L if a.dim() == 1 else a.unbind(1)  # unbind: one backward for all steps
    b_steps = b.unbind(1)
    states = [None] * L
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        h = a_steps[t] * h + b_steps[t]
        states[t] = h
    return torch.stack(states, dim=1).to(out_dtype)


def _widen(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
