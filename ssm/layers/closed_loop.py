"""Closed-loop companion SSM: SpaceTime's decoder, which forecasts by generating its own inputs.

Over the lag window u_0 .. u_{n-1} the layer is the companion SSM (A = S + a e_dᵀ)

    x_{t+1} = A x_t + b u_t,   x_0 = 0,

and it learns, besides c, a second readout k that predicts its own next input,
û_t = kᵀ x_{t+1} ≈ u_{t+1}. Feeding û back closes the loop, x ← (A + b kᵀ) x, so from the
last lag state x_n the forecast of any horizon h is

    y_{n+i} = cᵀ (A + b kᵀ)^i x_n,   û_{n+i} = kᵀ (A + b kᵀ)^i x_n,   i < h

(math reference §8.3). In open-loop mode (training) the same layer gives the one-step-ahead
outputs y_t = cᵀ x_{t+1} = ((cᵀA^j b) * u)_t and û_t = ((kᵀA^j b) * u)_t over the lag window;
y at the last lag step is the first forecast.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from kernels import companion_kernel, fftconv
from kernels.companion_kernel import companion_matrix
from kernels.companion_kernel.lag_state import companion_lag_state
from kernels.companion_kernel.pytorch import polymul, reversed_characteristic
from ssm.layers._checks import (
    check_batch_size,
    check_lr,
    check_positive_ints,
    check_sequence,
    check_state,
    check_step_input,
)
from ssm.layers.companion import (
    check_kernel_sets,
    companion_step,
    first_unit_vectors,
    l1_normalized,
    register_coefficient,
)


def krylov_rows(rows: torch.Tensor, M: torch.Tensor, steps: int) -> torch.Tensor:
    """rᵀ M^i for i < steps by doubling (R ← [R, R M^m], M^m ← (M^m)²): rows (n, r, d),
    M (n, d, d) -> (n, r, steps, d). O(n d³ log steps)."""
    R = rows.unsqueeze(-2)
    P = M.unsqueeze(1)
    while R.shape[-2] < steps:
        R = torch.cat([R, R @ P], dim=-2)
        P = P @ P
    return R[..., :steps, :]


class ClosedLoopCompanionSSM(nn.Module):
    """SpaceTime's closed-loop decoder layer on (batch, length, d_model).

    ``forward(x, horizon)`` returns the forecast y (B, horizon, H) that follows the lag
    window x (B, L, H); :meth:`rollout` also returns the predicted inputs, :meth:`open_loop`
    the one-step-ahead outputs over the window (for SpaceTime's lag and input losses), and
    ``init_state`` / ``step`` the open-loop recurrence (one output per input, equal to
    ``open_loop``), with :meth:`closed_loop_step` continuing it without inputs.

    Parameters per kernel set: a, b, c, k ∈ ℝ^d ~ N(0, 1), each used as v / ||v||_1 with
    ``norm_order=1`` (SpaceTime's closed-loop layer normalizes all four). No skip D.

    Args:
        d_model: channels H.
        d_state: state size d (64 in SpaceTime).
        n_kernels: sets of (a, b, c, k), dividing d_model (None: one per channel, as in
            SpaceTime's decoder).
        norm_order: 1 (L1-normalize a, b, c, k) or 0 (raw).
        init_std: standard deviation of the N(0, σ²) init (1 in SpaceTime). Without the
            normalization a small one keeps A + b kᵀ stable at the start.
        lr: optimizer hint for a, b, c, k (None, a float, 0 = frozen, or a dict by name).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        n_kernels: int | None = None,
        norm_order: int = 1,
        init_std: float = 1.0,
        lr: float | None | Mapping = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not init_std > 0:
            raise ValueError(f"{name}: init_std must be positive, got {init_std!r}")
        n_kernels = check_kernel_sets(name, d_model, d_state, n_kernels, norm_order)
        check_lr(lr, ("a", "b", "c", "k"), name)
        self.d_model, self.d_state, self.n_kernels = int(d_model), int(d_state), int(n_kernels)
        self.norm_order, self.init_std = norm_order, float(init_std)
        self._register_coefficients(lr)

    def _register_coefficients(self, lr) -> None:
        for key in ("a", "b", "c", "k"):
            register_coefficient(self, key, self.init_std * torch.randn(self.n_kernels, self.d_state), lr)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, c, k), each (n_kernels, d), as used (normalized with ``norm_order=1``)."""
        coeffs = (self.a, self.b, self.c, self.k)
        return tuple(l1_normalized(t) for t in coeffs) if self.norm_order == 1 else coeffs

    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        """(n_kernels, ...) -> (d_model, ...): each set repeated over its channel group."""
        return t.repeat_interleave(self.d_model // self.n_kernels, dim=0)

    def open_loop(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-step-ahead outputs over the window x (B, L, H): (y, û), each (B, L, H), with
        y_t = cᵀ x_{t+1} and û_t = kᵀ x_{t+1} (predictions at time t + 1)."""
        check_sequence(x, self.d_model, type(self).__name__, self)
        a, b, c, k = self.coefficients()
        L = x.shape[1]
        kernels = companion_kernel(torch.cat([a, a]), torch.cat([b, b]), torch.cat([c, k]), L)
        kernels = self._per_channel(kernels.unflatten(0, (2, self.n_kernels)).transpose(0, 1))  # (H, 2, L)
        u = x.transpose(1, 2)
        y = fftconv(u, kernels[:, 0].to(u.dtype))
        u_hat = fftconv(u, kernels[:, 1].to(u.dtype))
        return y.transpose(1, 2), u_hat.transpose(1, 2)

    def lag_state(self, x: torch.Tensor) -> torch.Tensor:
        """x_n = Σ_{j<n} A^{n-1-j} b u_j after the window x (B, n, H): (B, H, d).

        A is multiplication by z modulo χ(z) = z^d - Σ_m a_m z^m, so in polynomial form
        x_n = B(z) U(z) mod χ with B(z) = Σ_m b_m z^m and U(z) = Σ_j u_j z^{n-1-j}: two
        reductions modulo χ by fast division, O(n log n) per row. The division cancels large
        terms when ||a||_1 is large or A is unstable (``norm_order=0``; its quotient grows
        like ρ(A)^n), so those channels take x_n = [b, A b, ..., A^{n-1} b] U instead (Krylov
        by a blocked recurrence in float64): see :mod:`kernels.companion_kernel.lag_state`."""
        check_sequence(x, self.d_model, type(self).__name__, self)
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # half precision: FFTs in float32
        a, b, _, _ = (self._per_channel(t).to(x.dtype) for t in self.coefficients())
        return companion_lag_state(a, b, x.transpose(1, 2).flip(-1))  # U's coefficients, degree n - 1

    def closed_loop_matrix(self) -> torch.Tensor:
        """A + b kᵀ: (n_kernels, d, d)."""
        a, b, _, k = self.coefficients()
        return companion_matrix(a) + b.unsqueeze(-1) * k.unsqueeze(-2)

    def rollout(self, x: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-loop forecast after the window x (B, n, H): (y, û), each (B, horizon, H),
        y_{n+i} = cᵀ(A + b kᵀ)^i x_n and û_{n+i} = kᵀ(A + b kᵀ)^i x_n."""
        _, _, c, k = self.coefficients()
        y, u_hat = self._closed_loop(x, horizon, torch.stack([c, k], 1))
        return y, u_hat

    def forward(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """The forecast (B, horizon, H) that follows the lag window x (B, n, H)."""
        return self._closed_loop(x, horizon, self.coefficients()[2].unsqueeze(1))[0]

    def _closed_loop(self, x: torch.Tensor, horizon: int, readouts: torch.Tensor) -> torch.Tensor:
        """rᵀ(A + b kᵀ)^i x_n for each readout r of (n_kernels, R, d): (R, B, horizon, H)."""
        check_positive_ints(type(self).__name__, horizon=horizon)
        state = self.lag_state(x)
        rows = krylov_rows(readouts, self.closed_loop_matrix(), int(horizon))  # (nk, R, h, d)
        return torch.einsum("hrim,bhm->rbih", self._per_channel(rows).to(state.dtype), state).to(x.dtype)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Zero state x_0: (batch_size, d_model, d)."""
        batch_size = check_batch_size(batch_size, type(self).__name__)
        return torch.zeros(batch_size, self.d_model, self.d_state, dtype=self.c.dtype, device=self.c.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Open-loop step on x_t (B, H): x ← A x + b u_t, y_t = cᵀx; returns (y_t, x)."""
        check_step_input(x_t, self.d_model, type(self).__name__, self)
        check_state(state, (x_t.shape[0], self.d_model, self.d_state), self.c.dtype, self.c.device,
                    type(self).__name__)
        a, b, c, _ = (self._per_channel(t) for t in self.coefficients())
        state = companion_step(state, a, b, x_t)
        return (c * state).sum(-1).to(x_t.dtype), state

    def closed_loop_step(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feed the layer its own prediction û = kᵀx: x ← A x + b û, y = cᵀx.

        Returns (y (B, H), û (B, H), new state). After ``step`` over the lag window, y of the
        last step is ``forward``'s first forecast and each closed-loop step gives the next."""
        batch = state.shape[0] if torch.is_tensor(state) and state.dim() == 3 else None
        check_state(state, (batch, self.d_model, self.d_state), self.c.dtype, self.c.device, type(self).__name__)
        a, b, c, k = (self._per_channel(t) for t in self.coefficients())
        u_hat = (k * state).sum(-1)
        state = companion_step(state, a, b, u_hat)
        return (c * state).sum(-1), u_hat, state

    def characteristic_coefficients(self) -> torch.Tensor:
        """α (n_kernels, d) with det(zI - (A + b kᵀ)) = z^d - Σ_{j=1}^d α_j z^{d-j}: the AR
        coefficients of the closed loop (α = k for the shift variant).

        det(I - wĀ) = det(I - wA)(1 - w kᵀ(I - wA)^{-1} b) = Q_rev(w) - w P(w), with P the
        numerator of Σ_j (kᵀA^j b) w^j = P(w)/Q_rev(w), i.e. P = Q_rev·(kᵀA^j b)_{j<d} mod w^d."""
        a, b, _, k = self.coefficients()
        d = self.d_state
        q = reversed_characteristic(a)  # (n, d + 1)
        numerator = polymul(q, companion_kernel(a, b, k, d), d)
        return -(q - torch.nn.functional.pad(numerator, (1, 0)))[..., 1:]

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, n_kernels={self.n_kernels}, norm_order={self.norm_order}"


class ClosedLoopShiftSSM(ClosedLoopCompanionSSM):
    """Closed loop on the shift SSM: a = 0 and b = e_1 fixed, c and k learned. The lag state
    is then the last d inputs, and A + b kᵀ = S + e_1 kᵀ runs the AR recursion
    u_{t+1} = kᵀ(u_t, .., u_{t-d+1}) (normalized c and k with ``norm_order=1``)."""

    def _register_coefficients(self, lr) -> None:
        n, d = self.n_kernels, self.d_state
        self.register_buffer("a", torch.zeros(n, d))
        self.register_buffer("b", first_unit_vectors(n, d))
        for key in ("c", "k"):
            register_coefficient(self, key, self.init_std * torch.randn(n, d), lr)

    def coefficients(self):
        c, k = (l1_normalized(t) for t in (self.c, self.k)) if self.norm_order == 1 else (self.c, self.k)
        return self.a, self.b, c, k
