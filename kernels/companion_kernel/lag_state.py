"""The state of a companion SSM after a window of inputs (SpaceTime's closed-loop decoder
starts its forecast from it), and its ``torch.library`` op pair for ``torch.compile``.

A is multiplication by z modulo χ(z) = z^d - Σ_m a_m z^m, so in polynomial form

    x_n = Σ_{j<n} A^{n-1-j} b u_j = B(z) U(z) mod χ,   B(z) = Σ_m b_m z^m,   U(z) = Σ_j u_j z^{n-1-j}

(math reference §8.3): two reductions modulo χ by fast division, O(n log n) per row. The
division cancels large terms when ||a||_1 is large or A is unstable (its quotient grows like
ρ(A)^n), so those rows take x_n = [b, A b, ..., A^{n-1} b] U instead (Krylov by a blocked
recurrence in float64): see :func:`spectral_rows_inaccurate`. The choice is made from the
values of a, which TorchDynamo cannot trace: while it traces, the computation runs as one
opaque op whose backward op takes the vector-Jacobian product of the same function by
``torch.func.vjp`` (running it again; the op saves only its inputs).
"""

from __future__ import annotations

import torch

from kernels._compile import fake_gradients, vjp_gradients, wanted
from kernels.companion_kernel.blocked import krylov_blocked
from kernels.companion_kernel.pytorch import (
    polymul,
    reduce_mod,
    reversed_characteristic,
    series_inverse,
    spectral_rows_inaccurate,
)


def _lag_state(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x_n for a, b (H, d) and U's coefficients u (B, H, n) (u[..., 0] the newest input):
    (B, H, d), each row by one method."""
    n, d = u.shape[-1], a.shape[-1]

    def by_division(a, b, u):
        g = series_inverse(reversed_characteristic(a), max(n - d, d - 1, 1))  # 1/Q_rev, (H, ·)
        return reduce_mod(polymul(b, reduce_mod(u, a, g), 2 * d - 1), a, g)

    def by_krylov(a, b, u):
        return torch.einsum("hdk,bhk->bhd", krylov_blocked(a, b, n), u.to(torch.float64)).to(u.dtype)

    hard = spectral_rows_inaccurate(a)
    if not bool(hard.any()):
        return by_division(a, b, u)
    if bool(hard.all()):
        return by_krylov(a, b, u)
    state = u.new_zeros(u.shape[0], a.shape[0], d)
    state[:, ~hard] = by_division(a[~hard], b[~hard], u[:, ~hard])
    state[:, hard] = by_krylov(a[hard], b[hard], u[:, hard])
    return state


@torch.library.custom_op("ssm_kernels::companion_lag_state", mutates_args=())
def _forward_op(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x_n (B, H, d)."""
    return _lag_state(a, b, u)


@_forward_op.register_fake
def _(a, b, u):
    return u.new_empty(u.shape[0], a.shape[0], a.shape[1])


@torch.library.custom_op("ssm_kernels::companion_lag_state_backward", mutates_args=())
def _backward_op(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, needs: list[bool]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of (a, b, u), each an empty placeholder where not needed."""
    return vjp_gradients(_lag_state, (a, b, u), grad, needs, u)


@_backward_op.register_fake
def _(grad, a, b, u, needs):
    return fake_gradients((a, b, u), needs, u)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    needs = list(ctx.needs_input_grad)
    return wanted(_backward_op(grad, *ctx.saved_tensors, needs), needs)


_forward_op.register_autograd(_backward, setup_context=_setup)


def companion_lag_state(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x_n = Σ_{j<n} A^{n-1-j} b u_j for the companion matrices A = S + a e_dᵀ of a, b (H, d)
    and the window's inputs u (B, H, n) in reversed time (u[..., j] = u_{n-1-j}), all of one
    dtype: (B, H, d), differentiable in a, b and u."""
    if torch.compiler.is_compiling():
        return _forward_op(a, b, u)
    return _lag_state(a, b, u)
