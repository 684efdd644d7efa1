"""Selective scan (Mamba-1's S6), with the semantics and shapes of mamba_ssm's
``selective_scan_fn``: per channel d and state n,

    Δ = softplus(delta + delta_bias)            (softplus only with delta_softplus)
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t u_t B_t,   h_{-1} = h0 (0 when None)
    y_t = Σ_n C_t[n] h_t[n]                     (2·Re(·) when A is complex)
    out = (y + D ⊙ u) · silu(z)

B and C are constant (D, N), variable (B, N, L), or variable per group (B, G, N, L): channel
d reads group d // (D / G).
"""

from __future__ import annotations

import torch

from kernels._dispatch import select_backend, triton_installed
from kernels._empty import with_zero_grads
from kernels.selective_scan.pytorch import selective_scan_torch
from kernels.selective_scan.reference import selective_scan_reference
from kernels.selective_scan.triton_op import selective_scan_triton

_IMPLEMENTATIONS = {
    "torch": selective_scan_torch,
    "reference": selective_scan_reference,
}

if triton_installed():  # else the op keeps its "torch" and "reference" backends
    _IMPLEMENTATIONS["triton"] = selective_scan_triton

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    h0: torch.Tensor | None = None,
    backend: str | None = None,
):
    """Selective scan over the last dim; a drop-in for mamba_ssm's ``selective_scan_fn``.

    Args:
        u: (B, D, L) input, float16 / bfloat16 / float32 / float64.
        delta: (B, D, L) raw step sizes (before ``delta_bias`` and softplus).
        A: (D, N) state matrix diagonal, real or complex (the Mamba block passes -exp(A_log)).
        B, C: (D, N) constant, or (B, N, L) / (B, G, N, L) variable (G divides D). With a
            complex A, variable B/C are complex tensors or, as in mamba_ssm, real tensors
            whose last dim is 2L holding interleaved (re, im) pairs.
        D: optional (D,) skip connection.
        z: optional (B, D, L) gate: out is multiplied by silu(z).
        delta_bias: optional (D,) added to delta before the softplus.
        delta_softplus: apply softplus to delta (+ bias).
        return_last_state: also return the final state h_{L-1}, (B, D, N).
        h0: optional (B, D, N) initial state (an extension: mamba_ssm starts from zero).
        backend: None (by device), "triton", "torch" (chunked CPU path) or "reference".
            The Triton kernel is for real A; a complex A on "triton" (the default for CUDA
            tensors) runs the chunked PyTorch path, which runs on any device.

    Returns:
        out (B, D, L) in u's dtype, and with ``return_last_state`` the pair
        (out, last_state) with last_state (B, D, N) in float32 (float64 for float64 input;
        complex when A is). Computation is in float32 for half inputs. Unlike mamba_ssm,
        gradients flow through last_state and into h0.

    The arguments may mix floating dtypes (mamba_ssm's CUDA kernel insists on delta, z and
    variable B/C in u's dtype): each is read in its own dtype and the scan runs in float32,
    float64 when u is float64; gradients come back in each argument's dtype.
    """
    u, delta, A, B, C, D, z, delta_bias, h0 = _canonical(u, delta, A, B, C, D, z, delta_bias, h0)
    fn = select_backend("selective_scan", _IMPLEMENTATIONS, backend, u, delta, A, B, C, D, z, delta_bias, h0)
    if u.numel() == 0:
        # an empty batch, channel set or sequence: the loop has nothing to do, and the inputs
        # it never reads get zero gradients, not none
        out, last = _IMPLEMENTATIONS["reference"](u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), h0)
        inputs = (u, delta, A, B, C, D, z, delta_bias, h0)
        out, last = with_zero_grads(out, *inputs), with_zero_grads(last, *inputs)
    else:
        out, last = fn(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), h0)
    return (out, last) if return_last_state else out


def _canonical(u, delta, A, B, C, D, z, delta_bias, h0):
    """Check every argument and bring B/C to (D, N) or (B, G, N, L) (complex when A is)."""
    name = "selective_scan"
    for arg, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not torch.is_tensor(t):
            raise TypeError(f"{name}: {arg} must be a tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"{name}: expected u of shape (B, D, L), got {tuple(u.shape)}")
    Bsz, Dm, L = u.shape
    if u.dtype not in _FLOATS:
        raise TypeError(f"{name}: u must be one of {_FLOATS}, got {u.dtype}")
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ValueError(f"{name}: expected A of shape (D, N) with D = {Dm}, got {tuple(A.shape)}")
    N = A.shape[1]
    if A.dtype not in _FLOATS + _COMPLEX:
        raise TypeError(f"{name}: A must be real or complex floating point, got {A.dtype}")
    for arg, t in (("delta", delta), ("z", z)):
        if t is not None:
            _expect(t, (Bsz, Dm, L), arg, "(B, D, L)")
            if t.dtype not in _FLOATS:
                raise TypeError(f"{name}: {arg} must be real floating point, got {t.dtype}")
    for arg, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            _expect(t, (Dm,), arg, "(D,)")
            if t.dtype not in _FLOATS:
                raise TypeError(f"{name}: {arg} must be real floating point, got {t.dtype}")
    B = _canonical_BC(B, "B", Bsz, Dm, N, L, A.is_complex())
    C = _canonical_BC(C, "C", Bsz, Dm, N, L, A.is_complex())
    if h0 is not None:
        _expect(h0, (Bsz, Dm, N), "h0", "(B, D, N)")
        if A.is_complex() != h0.is_complex():
            raise TypeError(f"{name}: h0 must be complex exactly when A is, got {h0.dtype} with A {A.dtype}")
        if not (h0.is_floating_point() or h0.is_complex()):
            raise TypeError(f"{name}: h0 must be a floating-point (or complex) tensor, got {h0.dtype}")
    return u, delta, A, B, C, D, z, delta_bias, h0


def _canonical_BC(M, arg, Bsz, Dm, N, L, complex_A):
    name = "selective_scan"
    if M.dim() == 2:
        _expect(M, (Dm, N), arg, "(D, N)")
        if M.is_complex() and not complex_A:
            raise TypeError(f"{name}: complex {arg} needs complex A")
        return M
    given = tuple(M.shape)  # as passed, for the messages
    if M.dim() == 3:
        M = M.unsqueeze(1)
    if M.dim() != 4:
        raise ValueError(
            f"{name}: expected {arg} of shape (D, N), (B, N, L) or (B, G, N, L), got {tuple(M.shape)}"
        )
    G = M.shape[1]
    if complex_A and not M.is_complex():
        if M.shape[-1] != 2 * L:
            raise ValueError(
                f"{name}: with complex A, a real variable {arg} must hold interleaved (re, im) pairs "
                f"along its last dim of size 2L = {2 * L}, got {given}"
            )
        wide = torch.float64 if M.dtype == torch.float64 else torch.float32
        M = torch.view_as_complex(M.to(wide).reshape(*M.shape[:-1], L, 2).contiguous())
    elif M.is_complex() and not complex_A:
        raise TypeError(f"{name}: complex {arg} needs complex A")
    if M.shape[0] != Bsz or M.shape[2] != N or M.shape[3] != L or G < 1 or Dm % G:
        raise ValueError(
            f"{name}: expected {arg} of shape (B, N, L) = ({Bsz}, {N}, {L}) or (B, G, N, L) with G "
            f"dividing D = {Dm}, got {given}"
        )
    if M.dtype not in _FLOATS + _COMPLEX:
        raise TypeError(f"{name}: {arg} must be floating point, got {M.dtype}")
    return M


def _expect(t, shape, arg, pattern):
    if not torch.is_tensor(t) or tuple(t.shape) != tuple(shape):
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"selective_scan: expected {arg} of shape {pattern} = {tuple(shape)}, got {got}")


__all__ = ["selective_scan", "selective_scan_reference"]
