"""Shared machinery of the diagonal LTI layers (S4D, DSS): kernel, convolution, recurrence.

A subclass describes its discretized modes (v, x) so that the kernel is

    K[c, h, l] = 2 Re sum_n v[c, h, n] exp(x[h, n] l),     c = 0 (forward), 1 (backward)

and this base class turns that into the convolution ``y = K * u + D ⊙ u`` and into the
equivalent recurrence ``s_l = exp(x) ⊙ s_{l-1} + u_l``,  ``y_l = 2 Re(v · s_l) + D u_l``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from kernels import fftconv, vandermonde
from ssm.layers._checks import (
    check_batch_size,
    check_causal,
    check_positive_ints,
    check_sequence,
    check_state,
    check_step_input,
)
from ssm.optim import KeepsOptimHints


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision SSM parameters of ``dtype`` are computed in: float64 stays, anything
    else is float32 (there are no complex float16/bfloat16 operations on CPU)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def to_default_dtype(module: nn.Module) -> None:
    """Cast the floating-point parameters and buffers of a newly built layer to torch's
    default dtype, as ``nn.Linear`` does by itself: initializations computed in a fixed
    precision must not leave a layer half float32 under ``torch.set_default_dtype(torch.float64)``."""
    default = torch.get_default_dtype()
    if default != torch.float32:
        module._apply(lambda t: t.to(default) if t.is_floating_point() else t)


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex counterpart of :func:`compute_dtype`: the dtype of recurrent complex states."""
    return torch.complex128 if compute_dtype(dtype) == torch.float64 else torch.complex64


def widen(t: torch.Tensor) -> torch.Tensor:
    """``t`` in its :func:`compute_dtype` (itself when already there)."""
    return t.to(compute_dtype(t.dtype))


def log_uniform_dt(d_model: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """log Δ for each channel with Δ ~ LogUniform[dt_min, dt_max]: (d_model,)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(d_model)
    return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def discretize(
    dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, disc: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discretize diagonal modes: returns (x, B̄) with Ā = exp(x).

    ``dt`` broadcasts against ``A`` (e.g. (H, 1) against (H, n)); ``B`` has A's shape.

    - ``"zoh"``:      x = ΔA,                          B̄ = (exp(ΔA) - 1)/A · B
    - ``"bilinear"``: x = log((1 + ΔA/2)/(1 - ΔA/2)) = 2 atanh(ΔA/2),  B̄ = Δ/(1 - ΔA/2) · B
    """
    dtA = dt * A
    if disc == "zoh":
        return dtA, B * torch.expm1(dtA) / A
    if disc == "bilinear":
        # log((1 + z)/(1 - z)) = 2 atanh(z): the ratio rounds to 1 + O(eps) and its log loses
        # Re x's relative precision at small ΔA (2.6e-4 at Δ = 1e-4 in float32); atanh keeps it
        return 2 * torch.atanh(dtA / 2), B * dt / (1 - dtA / 2)
    raise ValueError(f"unknown discretization {disc!r}; expected 'zoh' or 'bilinear'")


def ssm_lr(lr: float | None | Mapping, key: str) -> float | None:
    """The learning-rate hint of SSM tensor ``key`` from a float or a per-key dict."""
    if isinstance(lr, Mapping):  # a dict, or a config mapping from Hydra
        return lr.get(key)
    return lr


class DiagonalSSM(KeepsOptimHints):
    """Base of diagonal SSM layers on (batch, length, d_model) sequences.

    Subclasses implement :meth:`modes`. The skip D ~ N(0, 1) of shape (d_model,) lives here.
    With ``conjugate_pairs=True`` (S4D, DSS) the N states are N/2 conjugate pairs and one
    mode of each pair is stored (``n_modes = N/2``, N must be even); otherwise every state
    is its own mode (``n_modes = N``, e.g. S4-PTD, whose perturbed spectrum is not
    conjugate-closed).
    """

    def __init__(
        self, d_model: int, d_state: int, bidirectional: bool, conjugate_pairs: bool = True
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, d_model=d_model, d_state=d_state)
        if conjugate_pairs and d_state % 2:
            raise ValueError(
                f"{name}: d_state must be an even integer >= 2 (conjugate pairs), got {d_state!r}"
            )
        self.d_model = int(d_model)
        self.d_state = int(d_state)
        self.bidirectional = bool(bidirectional)
        self.channels = 2 if self.bidirectional else 1
        self.conjugate_pairs = bool(conjugate_pairs)
        self.n_modes = self.d_state // 2 if conjugate_pairs else self.d_state
        self.D = nn.Parameter(torch.randn(self.d_model))

    def modes(self, L: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Discretized modes: v complex (channels, H, n_modes) and x complex (H, n_modes)."""
        raise NotImplementedError

    def kernel(self, L: int) -> torch.Tensor:
        """SSM kernel of length L: (H, L), or (2, H, L) when bidirectional."""
        v, x = self.modes(L)
        k = vandermonde(v, x, L)
        return k if self.bidirectional else k[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = K * x + D ⊙ x on x of shape (B, L, H); returns (B, L, H)."""
        check_sequence(x, self.d_model, type(self).__name__, self)
        L = x.shape[1]
        u = x.transpose(1, 2)
        k = self.kernel(L).to(u.dtype)
        y = fftconv(u, k, self.D.to(u.dtype))
        return y.transpose(1, 2)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Zero recurrent state: complex (batch_size, H, n_modes)."""
        check_causal(self.bidirectional, type(self).__name__)
        batch_size = check_batch_size(batch_size, type(self).__name__)
        return torch.zeros(batch_size, self.d_model, self.n_modes, dtype=complex_dtype(self.D.dtype),
                           device=self.D.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: x_t (B, H) -> (y_t (B, H), new state (B, H, n_modes))."""
        check_causal(self.bidirectional, type(self).__name__)
        check_step_input(x_t, self.d_model, type(self).__name__, self)
        check_state(state, (x_t.shape[0], self.d_model, self.n_modes), complex_dtype(self.D.dtype), self.D.device,
                    type(self).__name__)
        v, x = self.step_modes()
        state = torch.exp(x) * state + x_t.unsqueeze(-1).to(state.dtype)
        y = 2 * (v[0] * state).sum(-1).real + self.D * x_t
        return y.to(x_t.dtype), state

    def prefill(self, x: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward(x), the state after x's last step) for a prompt x (B, L, H): the state
        s_{L-1} = Σ_l e^{x_n (L-1-l)} u_l of :meth:`step`, summed in chunks of ``chunk``
        steps (s ← e^{x_n c} s + Σ_j e^{x_n (c-1-j)} u_j) instead of L steps."""
        check_causal(self.bidirectional, type(self).__name__)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"{type(self).__name__}.prefill: chunk must be a positive integer, got {chunk!r}")
        y = self(x)
        _, modes = self.step_modes()
        state = self.init_state(x.shape[0])
        u = x.transpose(1, 2).to(state.dtype)  # (B, H, L)
        for start in range(0, x.shape[1], chunk):
            c = min(chunk, x.shape[1] - start)
            lags = torch.arange(c - 1, -1, -1, device=x.device, dtype=modes.real.dtype)
            powers = torch.exp(modes.unsqueeze(-1) * lags)  # (H, n_modes, c)
            state = torch.exp(modes * c) * state + torch.einsum("bhj,hnj->bhn", u[..., start:start + c], powers)
        return y, state

    def step_modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The modes used by :meth:`step` (layers whose kernel depends on L override this)."""
        return self.modes(None)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, bidirectional={self.bidirectional}"
