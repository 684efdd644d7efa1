"""Chimera: an input-dependent 2D state-space model over time × variates for multivariate
series (after Behrouz, Santacatterina and Zabih, "Chimera: Effectively Modeling
Multivariate Time Series with 2-Dimensional State Space Models", NeurIPS 2024).

The paper's exact equations were not available to us. What is confirmed (abstract, figure
captions): a 2D SSM over (variate, time) with input-dependent parameters, two heads with
different discretizations (long-term progression and seasonal patterns), training cost
linear in the input, 2D Mamba as a special case. What follows is our reconstruction, with
every assumption stated; the recurrence is exact and tested against a sequential loop.

**Recurrence** (the Roesser 2D form h¹ = s, h² = r with the variate-to-time transition A₂
set to 0, so the time state is causal in time alone, the coupling c in the place of the
time-to-variate A₃, and A₄ the variate transition). Per channel e and state n, variate v,
time t:

    s[v, t] = exp(Δ₁[v,t] A₁) s[v, t-τ] + Δ₁[v,t] B₁[v,t] x[v,t]             (time state)
    r[v, t] = exp(Δ₂[v,t] A₄) r[v-1, t] + Δ₂[v,t] (c ⊙ s[v-1, t] + B₂[v,t] x[v,t])   (variate state)
    y[v, t] = Σ_n C₁[v,t] s[v,t] + C₂[v,t] r[v,t]

with s[·, t<0] = 0, r[-1, ·] = 0, diagonal A₁, A₄ < 0 (ZOH for the transitions, Euler
for the inputs, as in Mamba), a learned coupling c (E, N) through which each variate reads
the time state of the previous one, and Δ, B, C computed from x at every (v, t). With
constant parameters the map is shift-invariant in both axes, i.e. a 2D causal convolution.
Assumptions: the variate-to-time term A₂ is zero (which makes the cost two 1D scans, linear in
V·T); the coupling enters the variate state with the variate step Δ₂. A third-party
paraphrase of the paper's method section says the time state also weighs "past
cross-variable information" (a nonzero variate-to-time term, the full Roesser form), that
A₁ is structured so as to recover autoregressive processes, and mentions no seasonal lag;
we could not read the equations themselves, so these stay open.

**Heads.** The trend head has lag τ = 1 and small time steps (Δ₁ log-uniform in
[1e-3, 1e-1] at init: slow, long memory); the seasonal head has lag τ = ``period`` (its
time state links t to t - period, i.e. it is discretized on the seasonal grid) and larger
steps (Δ₁ in [1e-2, 1]). This is our reading of "two heads with different discretizations".

**Variates** have no natural order: with ``bidirectional`` (default) a second variate
state runs from the last variate to the first with its own parameters, and its readout
is added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kernels import linear_scan
from ssm.layers._checks import NoRecurrentStep, check_input_dtype, check_positive_ints, resolve_dt_rank
from ssm.layers._empty import zeros_in_graph
from ssm.layers.diagonal import to_default_dtype, widen
from ssm.layers.selective import dt_bias_init, dt_weight_init, s4d_real_log_A
from ssm.optim import KeepsOptimHints, register


def _check_scan_args(x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling, lag):
    if x.dim() != 4:
        raise ValueError(f"chimera_scan: expected x of shape (B, V, T, E), got {tuple(x.shape)}")
    Bsz, V, T, E = x.shape
    N = A_time.shape[-1]
    for name, t, shape in (
        ("dt_time", dt_time, (Bsz, V, T, E)), ("dt_var", dt_var, (Bsz, V, T, E)),
        ("A_time", A_time, (E, N)), ("A_var", A_var, (E, N)), ("coupling", coupling, (E, N)),
        ("B_time", B_time, (Bsz, V, T, N)), ("B_var", B_var, (Bsz, V, T, N)),
        ("C_time", C_time, (Bsz, V, T, N)), ("C_var", C_var, (Bsz, V, T, N)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"chimera_scan: expected {name} of shape {shape}, got {tuple(t.shape)}")
    if isinstance(lag, bool) or int(lag) != lag or lag < 1:
        raise ValueError(f"chimera_scan: lag must be a positive integer, got {lag!r}")


def chimera_scan(x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling, lag=1, reverse=False):
    """The 2D recurrence of one head (module docstring), as two 1D scans.

    Args:
        x: (B, V, T, E) inputs; dt_time, dt_var: (B, V, T, E) step sizes Δ₁, Δ₂ (> 0).
        A_time, A_var: (E, N) diagonal transitions; coupling: (E, N).
        B_time, B_var, C_time, C_var: (B, V, T, N), shared by the E channels.
        lag: τ of the time recurrence s[v, t] ← s[v, t - τ].
        reverse: run the variate recurrence from the last variate (r[v] ← r[v + 1],
            reading s[v + 1]).

    Returns:
        y (B, V, T, E) = Σ_n C₁ s + C₂ r, in x's dtype (computed in at least float32).
    """
    _check_scan_args(x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling, lag)
    dtype = x.dtype
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling = (
        t.to(wide) for t in (x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling)
    )
    s = time_state(x, dt_time, A_time, B_time, lag)
    r = variate_state(s, x, dt_var, A_var, B_var, coupling, reverse)
    return (readout(s, C_time) + readout(r, C_var)).to(dtype)


def readout(h: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Σ_n C[..., n] h[..., e, n]: h (B, V, T, E, N), C (B, V, T, N) -> (B, V, T, E)."""
    return (h @ C[..., :, None]).squeeze(-1)


def time_state(x, dt_time, A_time, B_time, lag: int = 1) -> torch.Tensor:
    """s[v, t] = exp(Δ₁ A₁) s[v, t - τ] + Δ₁ B₁ x, all (B, V, T, E, N): τ interleaved 1D
    scans of length ⌈T/τ⌉, batched over (B, V, phase)."""
    Bsz, V, T, E = x.shape
    N = A_time.shape[-1]
    a = torch.exp(dt_time[..., None] * A_time)  # (B, V, T, E, N)
    b = (dt_time * x)[..., None] * B_time[:, :, :, None, :]
    pad = -T % lag
    a, b = (F.pad(t, (0, 0, 0, 0, 0, pad), value=v) for t, v in ((a, 1.0), (b, 0.0)))
    Tp = (T + pad) // lag

    def by_phase(t):  # (B, V, Tp·τ, E, N) -> (B·V·τ, Tp, E·N)
        return t.reshape(Bsz, V, Tp, lag, E * N).permute(0, 1, 3, 2, 4).reshape(Bsz * V * lag, Tp, E * N)

    s = linear_scan(by_phase(a), by_phase(b))
    return s.reshape(Bsz, V, lag, Tp, E, N).permute(0, 1, 3, 2, 4, 5).reshape(Bsz, V, Tp * lag, E, N)[:, :, :T]


def variate_state(s, x, dt_var, A_var, B_var, coupling, reverse: bool = False) -> torch.Tensor:
    """r[v, t] = exp(Δ₂ A₄) r[v-1, t] + Δ₂ (c ⊙ s[v-1, t] + B₂ x) (v+1 with ``reverse``),
    (B, V, T, E, N): one 1D scan along the variates, batched over (B, T)."""
    Bsz, V, T, E, N = s.shape
    a = torch.exp(dt_var[..., None] * A_var)
    prev = s.flip(1) if reverse else s
    prev = F.pad(prev, (0, 0, 0, 0, 0, 0, 1, 0))[:, :V]  # s[v - 1] (s[v + 1] with reverse), 0 at the edge
    prev = prev.flip(1) if reverse else prev
    b = dt_var[..., None] * (coupling * prev + x[..., None] * B_var[:, :, :, None, :])

    def by_time(t):  # (B, V, T, E, N) -> (B·T, V, E·N)
        return t.permute(0, 2, 1, 3, 4).reshape(Bsz * T, V, E * N)

    r = linear_scan(by_time(a), by_time(b), reverse=reverse)
    return r.reshape(Bsz, T, V, E, N).permute(0, 2, 1, 3, 4)


def chimera_scan_reference(x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling, lag=1,
                           reverse=False):
    """The same recurrence one (v, t) at a time (slow; for tests)."""
    _check_scan_args(x, dt_time, dt_var, A_time, A_var, B_time, B_var, C_time, C_var, coupling, lag)
    Bsz, V, T, E = x.shape
    zero = x.new_zeros(Bsz, E, A_time.shape[-1])
    s, r = {}, {}
    for t in range(T):
        for v in range(V):
            s[v, t] = (torch.exp(dt_time[:, v, t, :, None] * A_time) * s.get((v, t - lag), zero)
                       + (dt_time[:, v, t] * x[:, v, t])[..., None] * B_time[:, v, t, None, :])
    for t in range(T):
        for v in (range(V - 1, -1, -1) if reverse else range(V)):
            w = v + 1 if reverse else v - 1
            r[v, t] = (torch.exp(dt_var[:, v, t, :, None] * A_var) * r.get((w, t), zero)
                       + dt_var[:, v, t, :, None] * (coupling * s.get((w, t), zero)
                                                      + x[:, v, t, :, None] * B_var[:, v, t, None, :]))
    if V == 0 or T == 0:
        return x.new_zeros(x.shape)
    y = [[(s[v, t] * C_time[:, v, t, None, :]).sum(-1) + (r[v, t] * C_var[:, v, t, None, :]).sum(-1)
          for t in range(T)] for v in range(V)]
    return torch.stack([torch.stack(row, dim=1) for row in y], dim=1)


class ChimeraHead(KeepsOptimHints):
    """One input-dependent 2D SSM head: per token x[v, t] (E channels)

        [δ₁, B₁, C₁] = x_proj_time x,   Δ₁ = softplus(dt_time_weight δ₁ + dt_time_bias)
        [δ₂, B₂, C₂] = x_proj_d x,      Δ₂ = softplus(dt_d_weight δ₂ + dt_d_bias)

    (each x_proj (R + 2N, E) without bias, each dt weight (E, R)), one (δ₂, B₂, C₂, Δ₂,
    A₄, c) set per variate direction d in ("fwd", "bwd" with ``bidirectional``), sharing
    the time state s; y = C₁·s + Σ_d C₂·r_d, with the time state of ``time_state`` and
    the variate states of ``variate_state`` (see ``chimera_scan`` for the recurrences).
    A₁ = -exp(A_time_log) and A₄ = -exp(A_d_log) start at S4D-Real -(1..N); Δ₁ starts in
    ``dt_range``, Δ₂ in [1e-3, 1e-1]; the coupling c starts at 1. The SSM tensors get
    weight decay 0.
    """

    def __init__(self, d_inner: int, d_state: int, dt_rank: int, lag: int, dt_range: tuple[float, float],
                 bidirectional: bool = True) -> None:
        super().__init__()
        E, N, R = d_inner, d_state, dt_rank
        self.d_inner, self.d_state, self.dt_rank, self.lag = E, N, R, int(lag)
        directions = ("fwd", "bwd") if bidirectional else ("fwd",)
        self.directions = directions
        bound = E**-0.5
        # time-axis projections, shared by the directions
        self.x_proj_time = nn.Parameter(torch.empty(R + 2 * N, E).uniform_(-bound, bound))
        self.dt_time_weight = nn.Parameter(dt_weight_init((E, R), R))
        self.dt_time_bias = nn.Parameter(dt_bias_init((E,), *dt_range))
        register(self, "A_time_log", s4d_real_log_A(E, N), None, weight_decay=0.0)
        for d in directions:
            self.register_parameter(f"x_proj_{d}", nn.Parameter(torch.empty(R + 2 * N, E).uniform_(-bound, bound)))
            self.register_parameter(f"dt_{d}_weight", nn.Parameter(dt_weight_init((E, R), R)))
            self.register_parameter(f"dt_{d}_bias", nn.Parameter(dt_bias_init((E,), 1e-3, 1e-1)))
            register(self, f"A_{d}_log", s4d_real_log_A(E, N), None, weight_decay=0.0)
            register(self, f"coupling_{d}", torch.ones(E, N), None, weight_decay=0.0)

    def _project(self, x, weight, dt_weight, dt_bias):
        delta, B, C = F.linear(x, weight.to(x.dtype)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(F.linear(delta, dt_weight.to(x.dtype)) + dt_bias.to(x.dtype)), B, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, V, T, E) -> y (B, V, T, E)."""
        dt_time, B_time, C_time = self._project(x, self.x_proj_time, self.dt_time_weight, self.dt_time_bias)
        A_time = -torch.exp(widen(self.A_time_log))
        wide = A_time.dtype
        x, dt_time, B_time, C_time = (t.to(wide) for t in (x, dt_time, B_time, C_time))
        s = time_state(x, dt_time, A_time, B_time, self.lag)
        y = readout(s, C_time)
        for d in self.directions:
            dt_var, B_var, C_var = self._project(
                x, getattr(self, f"x_proj_{d}"), getattr(self, f"dt_{d}_weight"), getattr(self, f"dt_{d}_bias")
            )
            A_var = -torch.exp(widen(getattr(self, f"A_{d}_log")))
            r = variate_state(s, x, dt_var, A_var, B_var, widen(getattr(self, f"coupling_{d}")), d == "bwd")
            y = y + readout(r, C_var)
        return y


class Chimera(NoRecurrentStep, KeepsOptimHints):
    """Chimera block on multivariate series (B, L, V, d_model) (time, variates, channels):

        [x, z] = in_proj(u)                                  (d_model -> 2E per token)
        x = SiLU(causal depthwise Conv1d over time(x))       (kernel d_conv, per variate)
        y = trend(x) + seasonal(x) + D ⊙ x                   (two ChimeraHeads)
        out = out_proj(y ⊙ SiLU(z))

    See the module docstring for the recurrence and the assumptions behind it.

    Args:
        d_model: channels C.
        d_state: N per channel and head.
        d_conv: kernel of the causal time convolution (1 disables mixing there).
        expand: E = expand · d_model.
        dt_rank: rank of the Δ projections ("auto" = ceil(d_model / 16)).
        period: lag τ of the seasonal head (e.g. 24 for hourly data with a daily cycle).
        bidirectional: also scan the variates from last to first.
        seasonal: include the seasonal head (False leaves the trend head alone).
    """

    no_step_reason = "it scans across the variates as well as along time"

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        period: int = 24,
        bidirectional: bool = True,
        seasonal: bool = True,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, period=period)
        dt_rank = resolve_dt_rank(dt_rank, d_model, name)
        self.d_model, self.d_state, self.d_conv, self.period = int(d_model), int(d_state), int(d_conv), int(period)
        self.d_inner = E = int(expand) * self.d_model
        self.in_proj = nn.Linear(self.d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, self.d_conv, groups=E, padding=self.d_conv - 1)
        self.trend = ChimeraHead(E, self.d_state, dt_rank, 1, (1e-3, 1e-1), bidirectional)
        self.seasonal = ChimeraHead(E, self.d_state, dt_rank, self.period, (1e-2, 1.0), bidirectional) if seasonal else None
        register(self, "D", torch.ones(E), None, weight_decay=0.0)
        self.out_proj = nn.Linear(E, self.d_model, bias=False)
        to_default_dtype(self)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, L, V, d_model) -> (B, L, V, d_model)."""
        name = type(self).__name__
        if not torch.is_tensor(u) or u.dim() != 4 or u.shape[-1] != self.d_model:
            shape = tuple(u.shape) if torch.is_tensor(u) else type(u).__name__
            raise ValueError(f"{name}: expected u of shape (batch, length, variates, {self.d_model}), got {shape}")
        if not u.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point u, got {u.dtype}")
        check_input_dtype(u, self, name, "u")
        Bsz, L, V, _ = u.shape
        if L == 0 or V == 0:
            return zeros_in_graph(u, self)
        x, z = self.in_proj(u.to(self.in_proj.weight.dtype)).chunk(2, dim=-1)  # (B, L, V, E)
        x = x.permute(0, 2, 3, 1).reshape(Bsz * V, self.d_inner, L)
        x = F.silu(self.conv1d(x)[..., :L]).view(Bsz, V, self.d_inner, L).transpose(2, 3)  # (B, V, L, E)
        y = self.trend(x) + x * widen(self.D)
        if self.seasonal is not None:
            y = y + self.seasonal(x)
        y = y.transpose(1, 2).to(z.dtype) * F.silu(z)  # (B, L, V, E)
        return self.out_proj(y).to(u.dtype)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_inner={self.d_inner}, period={self.period}, "
                f"bidirectional={len(self.trend.directions) == 2}, seasonal={self.seasonal is not None}")
