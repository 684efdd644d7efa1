"""Input-dependent (selective) SSM parameters shared by the Mamba-style layers: the paper's
initializations, and K independent sets of projections for layers that scan one input
along K orders (VMamba's four cross-scan directions, MaIR's four nested S-shaped scans).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kernels import selective_scan

from ssm.layers._checks import check_lr
from ssm.layers._no_reinit import KeepsNoReinit, mark_no_reinit
from ssm.layers.diagonal import ssm_lr, widen
from ssm.optim import register, set_hint

DT_INITS = ("random", "constant")


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus⁻¹(x) = x + log(-expm1(-x)) for x > 0."""
    return x + torch.log(-torch.expm1(-x))


def dt_weight_init(shape: tuple[int, ...], dt_rank: int, dt_init: str = "random", dt_scale: float = 1.0) -> torch.Tensor:
    """W_dt of the Δ projection: U(±dt_rank^-½·dt_scale) ("random") or that bound ("constant")."""
    if dt_init not in DT_INITS:
        raise ValueError(f"dt_init must be one of {DT_INITS}, got {dt_init!r}")
    std = dt_rank**-0.5 * dt_scale
    if dt_init == "constant":
        return torch.full(shape, std)
    return torch.empty(shape).uniform_(-std, std)


def dt_bias_init(shape: tuple[int, ...], dt_min: float, dt_max: float, floor: float = 1e-4) -> torch.Tensor:
    """b_dt = softplus⁻¹(Δ₀), Δ₀ = exp(U·(log dt_max - log dt_min) + log dt_min) clamped at >=
    ``floor``, U ~ U[0, 1): softplus(b_dt) is log-uniform in [dt_min, dt_max]."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
    log_dt = torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    return inverse_softplus(torch.exp(log_dt).clamp(min=floor))


def s4d_real_log_A(channels: int, d_state: int) -> torch.Tensor:
    """A_log (channels, N) with A = -exp(A_log) = -(1, ..., N) in every channel (S4D-Real)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1)


class SelectiveProjections(KeepsNoReinit):
    """K independent sets of selective-SSM parameters over E channels (VMamba's layout):

        [δ_k, B_k, C_k] = x_proj_weight[k] x_k          (E -> R + 2N per position, no bias)
        Δ_k = softplus(dt_projs_weight[k] δ_k + dt_projs_bias[k])     (R -> E)
        A = -exp(A_logs) (K·E, N),  D = Ds (K·E,)

    with the Mamba paper's init (``dt_weight_init``, ``dt_bias_init``, S4D-Real A, D = 1).
    A_logs and Ds get weight decay 0; dt_projs_bias is flagged no-reinit. ``lr`` is the
    optimizer hint of :class:`ssm.Mamba` (a float, None, 0, or a dict with keys "A", "D", "dt").

    ``scan(xs)`` runs the K 1D selective scans of ``xs`` (B, K, E, L) as one grouped
    ``kernels.selective_scan`` call (channel k·E + e reads B_k, C_k); ``project(xs)`` gives
    the raw (Δ without bias (B, K, E, L), B (B, K, N, L), C (B, K, N, L)) for other scans.
    """

    def __init__(
        self,
        d_inner: int,
        d_state: int,
        dt_rank: int,
        k: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        lr: float | None | dict = None,
    ) -> None:
        super().__init__()
        check_lr(lr, ("A", "D", "dt"), type(self).__name__)
        E, N, R, K = int(d_inner), int(d_state), int(dt_rank), int(k)
        self.d_inner, self.d_state, self.dt_rank, self.k = E, N, R, K
        bound = E**-0.5  # nn.Linear's default range for fan-in E
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, E).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(dt_weight_init((K, E, R), R, dt_init, dt_scale))
        self.dt_projs_bias = nn.Parameter(dt_bias_init((K, E), dt_min, dt_max, dt_init_floor))
        mark_no_reinit(self, "dt_projs_bias")
        dt_lr = ssm_lr(lr, "dt")
        if dt_lr == 0.0:
            self.dt_projs_bias.requires_grad_(False)
        elif dt_lr is not None:
            set_hint(self, "dt_projs_bias", {"lr": float(dt_lr), "weight_decay": 0.0})
        register(self, "A_logs", s4d_real_log_A(K * E, N), ssm_lr(lr, "A"), weight_decay=0.0)
        register(self, "Ds", torch.ones(K * E), ssm_lr(lr, "D"), weight_decay=0.0)

    def project(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """xs (B, K, E, L) -> Δ before bias and softplus (B, K, E, L), B and C (B, K, N, L)."""
        x_dbl = torch.einsum("bkel,kce->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, Bs, Cs = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        return torch.einsum("bkrl,ker->bkel", dts, self.dt_projs_weight.to(xs.dtype)), Bs, Cs

    def A(self) -> torch.Tensor:
        """(K·E, N) state matrix diagonal -exp(A_logs), float32 (float64 for a float64 layer)."""
        return -torch.exp(widen(self.A_logs))

    def scan(self, xs: torch.Tensor) -> torch.Tensor:
        """The K selective scans: xs (B, K, E, L) -> ys (B, K, E, L) (no gate)."""
        Bsz, K, E, L = xs.shape
        if (K, E) != (self.k, self.d_inner):
            raise ValueError(f"SelectiveProjections: expected xs of shape (B, {self.k}, {self.d_inner}, L), got {tuple(xs.shape)}")
        delta, Bs, Cs = self.project(xs)
        ys = selective_scan(
            xs.reshape(Bsz, K * E, L), delta.reshape(Bsz, K * E, L), self.A(), Bs, Cs, widen(self.Ds),
            delta_bias=widen(self.dt_projs_bias).reshape(-1), delta_softplus=True,
        )
        return ys.view(Bsz, K, E, L)

    def extra_repr(self) -> str:
        return f"k={self.k}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}"
