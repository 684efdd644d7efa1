"""mamba_ssm's names and calling conventions over this package's ops, for code written
against mamba_ssm (``from kernels.mamba_ssm_compat import selective_scan_fn,
selective_state_update``):

- :func:`selective_scan_fn` is :func:`kernels.selective_scan` (the same signature and
  semantics, so it is the op itself).
- :func:`selective_state_update` updates ``state`` in place and returns only the output, as
  mamba_ssm's decoding kernel does, with its ``state_batch_indices`` (rows of a larger state
  cache). It is a decoding step without autograd, like mamba_ssm's; the functional
  :func:`kernels.selective_state_update` (new state returned) is the differentiable one.
"""

from __future__ import annotations

import torch

from kernels.selective_scan import selective_scan as selective_scan_fn
from kernels.selective_state_update import selective_state_update as _functional_update


@torch.no_grad()
def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    state_batch_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decoding step that overwrites ``state``; returns out (B, D) or (B, H, P).

    Shapes as in :func:`kernels.selective_state_update`. With ``state_batch_indices`` (B,),
    ``state`` is a cache (n_slots, D, N) (or (n_slots, H, P, N)) and batch row b reads and
    writes slot ``state_batch_indices[b]`` (distinct slots); the other slots are untouched.
    """
    if state_batch_indices is None:
        out, new_state = _functional_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
        state.copy_(new_state)
        return out
    if not torch.is_tensor(state_batch_indices) or state_batch_indices.dim() != 1 \
            or state_batch_indices.dtype not in (torch.int32, torch.int64) \
            or state_batch_indices.shape[0] != x.shape[0]:
        got = (f"{tuple(state_batch_indices.shape)} {state_batch_indices.dtype}" if torch.is_tensor(state_batch_indices)
               else type(state_batch_indices).__name__)
        raise ValueError(f"selective_state_update: state_batch_indices must be an integer tensor (B,) = "
                         f"({x.shape[0]},), got {got}")
    slots = state_batch_indices.long()
    if slots.numel() and (slots.min() < 0 or slots.max() >= state.shape[0]):
        raise IndexError(f"selective_state_update: state_batch_indices must lie in [0, {state.shape[0]}), "
                         f"got {slots.tolist()}")
    if slots.unique().numel() != slots.numel():
        raise ValueError("selective_state_update: state_batch_indices must name distinct slots, "
                         f"got {slots.tolist()}")
    out, new_state = _functional_update(state[slots], x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    state.index_copy_(0, slots, new_state)
    return out


__all__ = ["selective_scan_fn", "selective_state_update"]
