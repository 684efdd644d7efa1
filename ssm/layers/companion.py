"""Companion-matrix SSMs (Zhang et al., "Effectively Modeling Time Series with Simple
Discrete State Spaces", 2023): discrete, no Δ, A = S + a e_dᵀ.

Every layer here is LTI on (batch, length, d_model): ``y = K * u + D ⊙ u`` with

    x_t = A x_{t-1} + b u_t,   y_t = cᵀ x_t + D u_t,   K_k = cᵀ A^k b

(the current input enters through cᵀb, the S4 convention), computed as one FFT convolution
with the kernel from :func:`kernels.companion_kernel`. A x costs O(d): shift down one place
and add a·x_{d-1}. ``n_kernels`` sets of (a, b, c) are shared by groups of consecutive
channels: channel h uses set h // (d_model / n_kernels).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from kernels import companion_kernel, fftconv
from ssm.layers._checks import (
    check_batch_size,
    check_kernel_length,
    check_lr,
    check_positive_ints,
    check_sequence,
    check_state,
    check_step_input,
)
from ssm.optim import register

NORM_EPS = 1e-4  # SpaceTime's threshold below which a vector is left unnormalized


def l1_normalized(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||_1, 1e-4) per row: SpaceTime's ``norm_order=1`` stability map. With
    ||a||_1 <= 1 every root of z^d - Σ a_j z^j has |z| <= 1. (SpaceTime divides every row by
    its norm when the mean norm exceeds 1e-4; the per-row clamp is the same for rows above
    the threshold, needs no host sync and never divides by zero.)"""
    return x / x.abs().sum(-1, keepdim=True).clamp_min(NORM_EPS)


def shift_apply(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """A x = S x + a x_{d-1} over the last dimension: (..., d)."""
    return torch.nn.functional.pad(x[..., :-1], (1, 0)) + a * x[..., -1:]


def check_kernel_sets(layer: str, d_model: int, d_state: int, n_kernels: int | None, norm_order: int) -> int:
    """Validate the shared constructor arguments; returns n_kernels (None: d_model)."""
    n_kernels = d_model if n_kernels is None else n_kernels
    check_positive_ints(layer, d_model=d_model, d_state=d_state, n_kernels=n_kernels)
    if d_model % n_kernels:
        raise ValueError(f"{layer}: n_kernels ({n_kernels}) must divide d_model ({d_model})")
    if norm_order not in (0, 1):
        raise ValueError(f"{layer}: norm_order must be 0 (no normalization) or 1 (L1), got {norm_order!r}")
    return int(n_kernels)


def companion_step(state: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x ← A x + b u for states (..., d) and inputs (...,): one step of the recurrence."""
    return shift_apply(state, a) + b * u.unsqueeze(-1).to(state.dtype)


def register_coefficient(module: nn.Module, key: str, value: torch.Tensor, lr: float | None | Mapping) -> None:
    """Register ``value`` as SSM tensor ``key`` with the lr hint of ``lr`` (a float or a dict
    by name): None keeps the global lr and weight decay, a float sets the lr and no weight
    decay, 0 freezes it."""
    hint = lr.get(key) if isinstance(lr, Mapping) else lr
    register(module, key, value, hint, None if hint is None else 0.0)


class CompanionSSM(nn.Module):
    """Companion SSM ``y = K * u + D ⊙ u``, ``K_k = cᵀ A^k b``, A = S + a e_dᵀ (SpaceTime).

    Parameters per kernel set: a, b, c ∈ ℝ^d ~ N(0, 1); D ~ N(0, 1) per channel. With
    ``norm_order=1`` a is used as a / ||a||_1 (SpaceTime's encoder layers normalize a
    only), which keeps the spectral radius <= 1; ``norm_order=0`` uses a as it is.

    Args:
        d_model: channels H. Input and output are (batch, length, H).
        d_state: state size d (SpaceTime's ``kernel_dim``, 64).
        n_kernels: sets of (a, b, c), dividing d_model (None: one per channel).
        norm_order: 1 (normalize a) or 0 (raw a).
        skip: learn the skip D (False: no D u term).
        b_init: "normal" (N(0, 1)) or "e1" (b = e_1, which makes K_k = c_k for k < d; with
            ``lr={"b": 0}`` it stays fixed, as in the AR(p) representation).
        lr: optimizer hint for a, b, c: None (global lr and weight decay), a float (that lr,
            weight decay 0), 0 (frozen), or a dict with keys "a", "b", "c".
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        n_kernels: int | None = None,
        norm_order: int = 1,
        skip: bool = True,
        b_init: str = "normal",
        lr: float | None | Mapping = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        n_kernels = check_kernel_sets(name, d_model, d_state, n_kernels, norm_order)
        check_lr(lr, ("a", "b", "c"), name)
        if b_init not in ("normal", "e1"):
            raise ValueError(f"{name}: b_init must be 'normal' or 'e1', got {b_init!r}")
        self.d_model, self.d_state, self.n_kernels = int(d_model), int(d_state), int(n_kernels)
        self.norm_order = norm_order
        self._register_coefficients(b_init, lr)
        self.D = nn.Parameter(torch.randn(self.d_model)) if skip else None

    def _register_coefficients(self, b_init: str, lr) -> None:
        n, d = self.n_kernels, self.d_state
        b = torch.randn(n, d) if b_init == "normal" else first_unit_vectors(n, d)
        for key, value in (("a", torch.randn(n, d)), ("b", b), ("c", torch.randn(n, d))):
            register_coefficient(self, key, value, lr)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, c), each (n_kernels, d), as the kernel uses them (a normalized if asked)."""
        a = l1_normalized(self.a) if self.norm_order == 1 else self.a
        return a, self.b, self.c

    def channel_coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, b, c) expanded to one row per channel: each (d_model, d)."""
        group = self.d_model // self.n_kernels
        return tuple(t.repeat_interleave(group, dim=0) for t in self.coefficients())

    def kernel(self, L: int) -> torch.Tensor:
        """K of length L: (d_model, L)."""
        k = companion_kernel(*self.coefficients(), L)
        return k.repeat_interleave(self.d_model // self.n_kernels, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = K * x + D ⊙ x on x (B, L, H); returns (B, L, H)."""
        check_sequence(x, self.d_model, type(self).__name__, self)
        u = x.transpose(1, 2)
        k = self.kernel(x.shape[1]).to(u.dtype)
        y = fftconv(u, k, None if self.D is None else self.D.to(u.dtype))
        return y.transpose(1, 2)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Zero state x: (batch_size, d_model, d)."""
        batch_size = check_batch_size(batch_size, type(self).__name__)
        return torch.zeros(batch_size, self.d_model, self.d_state, dtype=self.c.dtype, device=self.c.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ← A x + b u_t, y_t = cᵀx + D u_t, for x_t (B, H): returns (y_t (B, H), x (B, H, d))."""
        check_step_input(x_t, self.d_model, type(self).__name__, self)
        check_state(state, (x_t.shape[0], self.d_model, self.d_state), self.c.dtype, self.c.device,
                    type(self).__name__)
        a, b, c = self.channel_coefficients()
        state = companion_step(state, a, b, x_t)
        y = (c * state).sum(-1)
        if self.D is not None:
            y = y + self.D * x_t
        return y.to(x_t.dtype), state

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, n_kernels={self.n_kernels}, "
                f"norm_order={self.norm_order}, skip={self.D is not None}")


def first_unit_vectors(n: int, d: int) -> torch.Tensor:
    """n copies of e_1 ∈ ℝ^d: (n, d)."""
    e = torch.zeros(n, d)
    e[:, 0] = 1.0
    return e


class ShiftSSM(CompanionSSM):
    """Shift SSM: a = 0 and b = e_1 fixed, c learned, so K_k = c_{k+1} for k < d and 0 after,
    a learnable causal FIR filter of length d: ``y_t = Σ_{k<d} c_{k+1} u_{t-k} + D u_t``.

    Args as :class:`CompanionSSM` (``lr`` applies to c); the state is the last d inputs.
    """

    def __init__(
        self, d_model: int, d_state: int = 64, n_kernels: int | None = None, skip: bool = True,
        lr: float | None = None,
    ) -> None:
        super().__init__(d_model, d_state, n_kernels, norm_order=0, skip=skip, lr=lr)

    def _register_coefficients(self, b_init: str, lr) -> None:
        n, d = self.n_kernels, self.d_state
        # fixed by construction, so not in the state dict: a companion checkpoint cannot set them
        self.register_buffer("a", torch.zeros(n, d), persistent=False)
        self.register_buffer("b", first_unit_vectors(n, d), persistent=False)
        register_coefficient(self, "c", torch.randn(n, d), lr)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # Older checkpoints stored the fixed a = 0 and b = e_1: accept those, refuse other values.
        for key, fixed in (("a", self.a), ("b", self.b)):
            value = state_dict.get(prefix + key)
            if value is None:
                continue
            if value.shape == fixed.shape and torch.equal(value.to(fixed), fixed):
                del state_dict[prefix + key]
            else:
                error_msgs.append(f"{type(self).__name__}: {prefix}{key} is fixed (a = 0, b = e_1) and not "
                                  f"loaded; the state dict holds other values (a CompanionSSM checkpoint?)")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def kernel(self, L: int) -> torch.Tensor:
        """c truncated or zero-padded to L: (d_model, L)."""
        L = check_kernel_length(L, type(self).__name__)
        c = self.c[:, :L]
        k = torch.nn.functional.pad(c, (0, L - c.shape[-1]))
        return k.repeat_interleave(self.d_model // self.n_kernels, dim=0)


def differencing_kernel(order: int) -> torch.Tensor:
    """Taps of (1 - z)^order: [1], [1, -1], [1, -2, 1], [1, -3, 3, -1], ... (order + 1,) float64."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"differencing order must be a non-negative integer, got {order!r}")
    taps = torch.ones(1, dtype=torch.float64)
    for _ in range(order):
        taps = torch.nn.functional.pad(taps, (0, 1)) - torch.nn.functional.pad(taps, (1, 0))
    return taps


def moving_average_residual_kernel(window: int) -> torch.Tensor:
    """Taps of u_t - mean(u_{t-w+1..t}): 1 - 1/w, then -1/w for w - 1 lags: (w,) float64."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"moving-average window must be a positive integer, got {window!r}")
    taps = torch.full((window,), -1.0 / window, dtype=torch.float64)
    taps[0] += 1.0
    return taps


class FixedKernelSSM(ShiftSSM):
    """A shift SSM whose taps are fixed: ``y_t = Σ_k taps[h, k] u_{t-k}`` per channel h
    (no D). ``taps`` (d_model, d) is kept as a buffer in the default dtype; ``step`` runs the
    d-tap shift register."""

    def __init__(self, taps: torch.Tensor) -> None:
        if not torch.is_tensor(taps) or taps.dim() != 2:
            raise ValueError(f"FixedKernelSSM: expected taps of shape (d_model, d), got {getattr(taps, 'shape', taps)}")
        super().__init__(taps.shape[0], taps.shape[1], skip=False)
        del self.c
        self.register_buffer("c", taps.detach().clone().to(torch.get_default_dtype()))


class ResidualSSM(FixedKernelSSM):
    """SpaceTime's preprocessing layer: fixed classical filters as shift-SSM kernels.

    Channel h gets kind h mod 8: kinds 0-3 difference the input (orders 0-3: u, ∇u, ∇²u,
    ∇³u); kinds 4-7 are moving-average residuals u_t - mean(u_{t-w+1..t}) with windows
    w ~ randint(4, max_avg_window) drawn per channel. With the companion layer after it
    grouping 8 consecutive channels per kernel set, every set sees one channel of each kind.

    Args:
        d_model: channels.
        max_avg_window: exclusive upper bound of the windows (SpaceTime: 64), > 4.
        d_state: taps per kernel (default max_avg_window - 1, the longest window).
    """

    def __init__(self, d_model: int, max_avg_window: int = 64, d_state: int | None = None) -> None:
        check_positive_ints("ResidualSSM", d_model=d_model, max_avg_window=max_avg_window)
        if max_avg_window <= 4:
            raise ValueError(f"ResidualSSM: max_avg_window must exceed 4, got {max_avg_window}")
        d_state = max_avg_window - 1 if d_state is None else d_state
        if d_state < max_avg_window - 1:
            raise ValueError(f"ResidualSSM: d_state ({d_state}) must hold the longest window ({max_avg_window - 1})")
        windows = torch.randint(4, max_avg_window, (d_model,)).tolist()
        taps = torch.zeros(d_model, d_state, dtype=torch.float64)
        for h in range(d_model):
            kind = h % 8
            k = differencing_kernel(kind) if kind < 4 else moving_average_residual_kernel(windows[h])
            k = k.to(torch.float64)
            taps[h, : k.numel()] = k
        super().__init__(taps)
        self.windows = [w if h % 8 >= 4 else None for h, w in enumerate(windows)]
