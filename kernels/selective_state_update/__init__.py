"""One decoding step of the selective scan (Mamba-1's S6 recurrence at a single time index).

Per batch row b, channel d and state n, with g = d // (D / G) the group of channel d:

    Δ = softplus(dt + dt_bias)                        (softplus only with dt_softplus)
    h'[b, d, n] = exp(Δ[b, d] A[d, n]) h[b, d, n] + Δ[b, d] x[b, d] B[b, g, n]
    y[b, d] = (Σ_n C[b, g, n] h'[b, d, n] + D[d] x[b, d]) · silu(z[b, d])

Running it L times from h equals ``kernels.selective_scan`` over those L steps with ``h0 = h``
(and its last state). Mamba-2's multi-head layout is taken too: a state (B, H, P, N) with
x, dt, z (B, H, P), A (H, P, N), D, dt_bias (H, P) and B, C (B, G, N) with G dividing H is
the same step over the D = H·P channels (h, p), head h reading group h // (H / G). Unlike mamba_ssm's ``selective_state_update``, which overwrites the state
in place, this op is functional: it returns a new state tensor and leaves ``state`` untouched,
so the step is differentiable.
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels._empty import with_zero_grads
from kernels._groups import common_groups
from kernels.selective_state_update.pytorch import selective_state_update_torch
from kernels.selective_state_update.reference import selective_state_update_reference
from kernels.selective_state_update.triton_op import selective_state_update_triton

_IMPLEMENTATIONS = {"torch": selective_state_update_torch, "reference": selective_state_update_reference}

if triton_installed():  # else the op keeps its "torch" and "reference" backends
    _IMPLEMENTATIONS["triton"] = selective_state_update_triton

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NAME = "selective_state_update"


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
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the selective scan: the output at that step and the new state, ``(y, new_state)``.

    Args:
        state: (B, D, N) state before the step, h; or Mamba-2's (B, H, P, N), with the
            shapes of the other arguments as in the module docstring.
        x: (B, D) input at this step.
        dt: (B, D) raw step sizes (before ``dt_bias`` and softplus).
        A: (D, N) real state matrix diagonal (the Mamba block passes -exp(A_log)).
        B, C: (B, N), or (B, G, N) with G dividing D (channel d reads group d // (D / G));
            B and C may have different G.
        D: optional (D,) skip connection.
        z: optional (B, D) gate: y is multiplied by silu(z).
        dt_bias: optional (D,) added to dt before the softplus.
        dt_softplus: apply softplus to dt (+ bias).
        backend: None (by device: Triton on CUDA where triton is installed, else "torch"),
            "triton", "torch" or "reference". The Triton kernel is forward-only (decoding):
            a call that needs a gradient (grad mode on and an input that requires it) runs
            on the "torch" path instead.

    Returns:
        (y, new_state): y (B, D) in x's dtype and new_state (B, D, N) in state's dtype
        ((B, H, P) and (B, H, P, N) for a multi-head state). The
        input ``state`` is not modified (mamba_ssm updates it in place; this op returns a new
        tensor, which keeps autograd intact). float16 / bfloat16 are computed in float32,
        float64 in float64. All inputs are differentiable on the "torch" and "reference"
        paths.
    """
    if torch.is_tensor(state) and state.dim() == 4:
        heads = state.shape[1:3]
        state, x, dt, A, B, C, D, z, dt_bias = _flatten_heads(state, x, dt, A, B, C, D, z, dt_bias)
        y, new_state = selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, backend)
        return y.unflatten(1, heads), new_state.unflatten(1, heads)
    B, C = _check(state, x, dt, A, B, C, D, z, dt_bias)
    args = (state, x, dt, A, B, C, D, z, dt_bias)
    fn = select_backend(_NAME, _IMPLEMENTATIONS, backend, *args)
    if fn is _IMPLEMENTATIONS.get("triton") and _needs_grad(args):
        fn = _IMPLEMENTATIONS["torch"]
    y, new_state = fn(*args, bool(dt_softplus))
    if new_state.numel() == 0:  # no batch, channels or state: zero gradients, not none
        y, new_state = with_zero_grads(y, *args), with_zero_grads(new_state, *args)
    return y, new_state


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _flatten_heads(state, x, dt, A, B, C, D, z, dt_bias):
    """Mamba-2's (B, H, P, N) layout checked, then flattened to D = H·P channels; B and C
    (B, G, N) then group the channels of H / G consecutive heads."""
    Bsz, H, P, N = state.shape
    _require_tensors(x=x, dt=dt, A=A, B=B, C=C)
    _expect_layout(Bsz, (H, P), "H, P", N, A, x, dt, z, D, dt_bias)
    for arg, t in (("B", B), ("C", C)):
        if t.dim() == 3 and t.shape[1] >= 1 and H % t.shape[1]:
            raise ValueError(f"{_NAME}: with a (B, H, P, N) state, {arg} (B, G, N) needs G dividing H = {H}, "
                             f"got {tuple(t.shape)}")

    def flat(t):
        return None if t is None else t.flatten(-2) if t.dim() == 2 else t.flatten(1, 2)

    return state.flatten(1, 2), flat(x), flat(dt), A.flatten(0, 1), B, C, flat(D), flat(z), flat(dt_bias)


def _require_tensors(**named) -> None:
    for arg, t in named.items():
        if not torch.is_tensor(t):
            raise TypeError(f"{_NAME}: {arg} must be a tensor, got {type(t).__name__}")


def _expect_layout(Bsz, channels: tuple, letters: str, N, A, x, dt, z, D, dt_bias) -> None:
    """The channel layout ``channels`` ((D,), or Mamba-2's (H, P), named ``letters``): A
    (*channels, N); x, dt, z (B, *channels); D, dt_bias (*channels)."""
    names = letters.rstrip(",")
    _expect(A, (*channels, N), "A", f"({names}, N)")
    for arg, t in (("x", x), ("dt", dt), ("z", z)):
        if t is not None:
            _expect(t, (Bsz, *channels), arg, f"(B, {names})")
    for arg, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None:
            _expect(t, tuple(channels), arg, f"({letters})")


def _check(state, x, dt, A, B, C, D, z, dt_bias):
    """Validate every argument; return B and C as (B, G, N)."""
    _require_tensors(state=state, x=x, dt=dt, A=A, B=B, C=C)
    if state.dim() != 3:
        raise ValueError(f"{_NAME}: expected state of shape (B, D, N) or (B, H, P, N), got {tuple(state.shape)}")
    Bsz, Dm, N = state.shape
    _expect_layout(Bsz, (Dm,), "D,", N, A, x, dt, z, D, dt_bias)
    B, C = common_groups(_canonical_BC(B, "B", Bsz, Dm, N), _canonical_BC(C, "C", Bsz, Dm, N))
    tensors = (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
               ("dt_bias", dt_bias))
    for arg, t in tensors:
        if t is not None and t.dtype not in _FLOATS:
            raise TypeError(f"{_NAME}: {arg} must be one of {_FLOATS}, got {t.dtype}")
    return B, C


def _canonical_BC(M, arg, Bsz, Dm, N):
    given = tuple(M.shape)  # as passed, for the message
    if M.dim() == 2:
        M = M.unsqueeze(1)
    if M.dim() != 3 or M.shape[0] != Bsz or M.shape[2] != N or M.shape[1] < 1 or Dm % M.shape[1]:
        raise ValueError(
            f"{_NAME}: expected {arg} of shape (B, N) = ({Bsz}, {N}) or (B, G, N) with G dividing "
            f"D = {Dm}, got {given}"
        )
    return M


def _expect(t, shape, arg, pattern):
    if not torch.is_tensor(t) or tuple(t.shape) != tuple(shape):
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"{_NAME}: expected {arg} of shape {pattern} = {tuple(shape)}, got {got}")


__all__ = ["selective_state_update", "selective_state_update_reference", "selective_state_update_torch"]
