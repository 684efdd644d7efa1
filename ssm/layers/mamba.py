"""Mamba: the selective state-space block (Gu and Dao, "Mamba: Linear-Time Sequence Modeling
with Selective State Spaces", 2023), on ``kernels.selective_scan``."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kernels import selective_scan, selective_state_update
from ssm.layers._checks import (
    check_batch_size,
    check_causal,
    check_choice,
    check_lr,
    check_positive_ints,
    check_sequence,
    check_state,
    check_step_input,
    resolve_dt_rank,
)
from ssm.layers._empty import zeros_in_graph
from ssm.layers._no_reinit import KeepsNoReinit, mark_no_reinit
from ssm.layers.diagonal import compute_dtype, ssm_lr, to_default_dtype, widen
from ssm.layers.selective import DT_INITS, dt_bias_init, dt_weight_init, inverse_softplus, s4d_real_log_A
from ssm.layers.softsort import soft_sort
from ssm.optim import register, set_hint
from ssm.padding import check_layer_mask



class MambaState(NamedTuple):
    """Recurrent state of :class:`Mamba` (a tuple: ``conv, ssm = state`` works).

    conv: (B, d_inner, d_conv), the last d_conv inputs of the causal convolution, oldest
        first (zeros before the sequence starts), in the layer's parameter dtype.
    ssm: (B, d_inner, d_state), the selective-scan state h, in float32 (float64 for a
        float64 layer).
    """

    conv: torch.Tensor
    ssm: torch.Tensor


IO_SPECTRA = ("positive", "negative", "mixed")


class PositiveDefiniteProjection(nn.Module):
    """x_proj whose B and C rows make S_Cᵀ S_B positive semidefinite (token-dynamics
    refinement 1, Vo et al., ICLR 2025): the rows [S_Δ; S_B; S_C] of the (dt_rank + 2N, E)
    weight are

        U = triu(P, 1) + I (the unit diagonal at entries (n, n)),    S_C = U,
        S_B = diag(σ ⊙ λ) U,  λ = softplus(d) + 0.7,

    so S_Cᵀ S_B = Uᵀ diag(σ ⊙ λ) U, symmetric with rank N, every |λ_n| > 0.7. The signs σ
    pick the spectrum: ``"positive"`` (σ = +1, the refinement: positive semidefinite, which
    under the paper's criterion rules out the scenario in which all tokens converge to zero),
    and the paper's two controls, ``"negative"`` (σ = -1: negative semidefinite, the
    convergent scenario) and ``"mixed"`` (σ = +1 on the first ceil(N/2) states, -1 on the
    rest: indefinite). S_Δ (dt_rank, E), P (N, E) and d (N,) are learned; P and S_Δ start
    like an nn.Linear weight, d at softplus⁻¹(0.3) so that |λ| starts at 1. Needs E >= N.

    ``weight`` is the effective (dt_rank + 2N, E) matrix; forward(x) = x @ weightᵀ.
    """

    def __init__(self, d_inner: int, dt_rank: int, d_state: int, spectrum: str = "positive") -> None:
        super().__init__()
        if d_inner < d_state:
            raise ValueError(
                f"PositiveDefiniteProjection: needs d_inner >= d_state for a rank-N U, got d_inner={d_inner}, "
                f"d_state={d_state}"
            )
        self.spectrum = check_choice(spectrum, IO_SPECTRA, "spectrum", type(self).__name__)
        bound = d_inner**-0.5  # nn.Linear's default init range for this fan-in
        self.dt_weight = nn.Parameter(torch.empty(dt_rank, d_inner).uniform_(-bound, bound))
        self.P = nn.Parameter(torch.empty(d_state, d_inner).uniform_(-bound, bound))
        self.d = nn.Parameter(torch.full((d_state,), math.log(math.expm1(0.3))))
        signs = torch.ones(d_state)
        if self.spectrum == "negative":
            signs = -signs
        elif self.spectrum == "mixed":
            signs[(d_state + 1) // 2 :] = -1.0
        self.register_buffer("signs", signs, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        N = self.P.shape[0]
        U = torch.triu(self.P, diagonal=1) + torch.eye(N, self.P.shape[1], dtype=self.P.dtype, device=self.P.device)
        lam = self.signs.to(self.P.dtype) * (F.softplus(self.d) + 0.7)
        return torch.cat([self.dt_weight, lam[:, None] * U, U], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"spectrum={self.spectrum!r}"


class Mamba(KeepsNoReinit):
    """The Mamba block on (batch, length, d_model) sequences, with E = d_inner = expand·d_model:

        [x, z] = in_proj(u)                                (d_model -> 2E, bias ``bias``)
        x = SiLU(causal depthwise Conv1d(x))               (kernel d_conv, bias ``conv_bias``)
        [δ, B, C] = x_proj(x)                              (E -> dt_rank + 2N, no bias)
        Δ = softplus(W_dt δ + b_dt)                        (dt_proj: dt_rank -> E)
        h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,  y_t = C_t h_t + D ⊙ x_t,  A = -exp(A_log)
        out = out_proj(y ⊙ SiLU(z))                         (E -> d_model, bias ``bias``)

    The scan is ``kernels.selective_scan(x, W_dt δ, A, B, C, D, z, delta_bias=b_dt,
    delta_softplus=True)`` with per-step B, C (B, N, L) shared by all channels; the decoding
    step is ``kernels.selective_state_update``.

    Initialization (the paper's): W_dt ~ U(±dt_rank^-½ · dt_scale) (``dt_init="random"``) or
    the constant dt_rank^-½ · dt_scale; b_dt = softplus⁻¹(Δ₀) with Δ₀ = exp(U·(log dt_max -
    log dt_min) + log dt_min) clamped at >= dt_init_floor, U ~ U[0, 1), so softplus(b_dt)
    lies in [dt_min, dt_max]; A_log[d, n] = log(n + 1) (S4D-Real: A = -(1, ..., N) in every
    channel) and D = 1, both without weight decay. The projections and the convolution keep
    PyTorch's default init.

    Args:
        d_model: channels H of the input and output.
        d_state: N, the state size per channel.
        d_conv: kernel size of the causal depthwise convolution.
        expand: E = expand · d_model inner channels.
        dt_rank: rank of the Δ projection; "auto" is ceil(d_model / 16).
        dt_min, dt_max: range of Δ at init (log-uniform).
        dt_init: "random" or "constant" init of W_dt; dt_scale scales it.
        dt_init_floor: lower clamp of Δ₀.
        conv_bias: bias in the convolution; bias: biases in in_proj and out_proj.
        bidirectional: an extension beyond the paper (default off): a second scan with its
            own convolution, x_proj, dt_proj, A_log and D (``*_b``) runs over the reversed
            sequence, sharing in_proj, z and out_proj; the two gated outputs are averaged
            before out_proj. It looks at the future, so it has no ``step``.
        lr: optimizer hint for the SSM tensors (Mamba uses the global lr): a float, None
            (global lr), 0 (frozen) or a dict with keys "A" (A_log), "D" and "dt" (b_dt).
            A_log and D always get weight decay 0; b_dt gets weight decay 0 when it has an lr.
        positive_definite: token-dynamics refinement 1 (Vo et al., ICLR 2025; default off):
            x_proj becomes a :class:`PositiveDefiniteProjection`, so S_Cᵀ S_B is positive
            semidefinite and the convergent scenario is excluded. Needs d_inner >= d_state.
            Shorthand for ``io_spectrum="positive"``.
        io_spectrum: None (default: a plain x_proj) or the spectrum of S_Cᵀ S_B that the
            :class:`PositiveDefiniteProjection` enforces: "positive" (the refinement), or the
            paper's controls "negative" (the convergent scenario) and "mixed".
        reorder_tokens: token-dynamics refinement 2 (default off): before the scan the
            convolved tokens are reordered by a learned importance score
            s_l = wᵀ(W_dt δ_l + b_dt) (the pre-softplus Δ; w a bias-free Linear(E -> 1), on
            all E channels) through the soft permutation P = soft_sort(-s, reorder_tau), so the
            most important tokens come last; Δ, B, C are recomputed from P x, the scan runs
            without the gate, its output is brought back to the original order by Pᵀ, then
            gated by SiLU(z). Every token then sees the whole sequence (not causal: no
            ``step``), and P costs O(L²) memory per sequence. (The reference code skips the
            un-permutation; we do not.)
        reorder_tau: SoftSort temperature (> 0).
        layer_idx: the block's index in a stack, kept as ``self.layer_idx`` (mamba_ssm's
            constructor takes it to key its inference cache; here it is only recorded).
        device, dtype: where and in which floating dtype to create the parameters, as for
            ``nn.Linear``; with a half ``dtype`` A_log and D stay float32, as in mamba_ssm
            (the scan computes in float32 for half precision either way).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        bidirectional: bool = False,
        lr: float | None | dict = None,
        positive_definite: bool = False,
        reorder_tokens: bool = False,
        reorder_tau: float = 1.0,
        io_spectrum: str | None = None,
        layer_idx: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        dt_rank = resolve_dt_rank(dt_rank, d_model, name)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"{name}: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        if not dt_init_floor >= 0:
            raise ValueError(f"{name}: dt_init_floor must be >= 0, got {dt_init_floor}")
        self.dt_init = check_choice(dt_init, DT_INITS, "dt_init", name)
        check_lr(lr, ("A", "D", "dt"), name)
        self.d_model, self.d_state, self.d_conv = int(d_model), int(d_state), int(d_conv)
        self.expand, self.dt_rank = int(expand), int(dt_rank)
        self.d_inner = self.expand * self.d_model
        self.bidirectional = bool(bidirectional)
        if positive_definite and io_spectrum not in (None, "positive"):
            raise ValueError(
                f"{name}: positive_definite=True means io_spectrum='positive', got io_spectrum={io_spectrum!r}"
            )
        if positive_definite:
            io_spectrum = "positive"
        self.io_spectrum = None if io_spectrum is None else check_choice(io_spectrum, IO_SPECTRA, "io_spectrum", name)
        self.positive_definite = self.io_spectrum == "positive"
        self.reorder_tokens = bool(reorder_tokens)
        if not reorder_tau > 0:
            raise ValueError(f"{name}: reorder_tau must be > 0, got {reorder_tau!r}")
        self.reorder_tau = float(reorder_tau)
        E, N = self.d_inner, self.d_state
        if self.io_spectrum is not None and E < N:
            raise ValueError(
                f"{name}: positive_definite / io_spectrum needs d_inner = expand·d_model >= d_state, got d_inner={E}, d_state={N}"
            )

        self.in_proj = nn.Linear(self.d_model, 2 * E, bias=bias)
        directions = ("", "_b") if self.bidirectional else ("",)
        for suffix in directions:
            self.add_module(
                f"conv1d{suffix}",
                nn.Conv1d(E, E, kernel_size=self.d_conv, groups=E, padding=self.d_conv - 1, bias=conv_bias),
            )
            if self.io_spectrum is not None:
                x_proj = PositiveDefiniteProjection(E, self.dt_rank, N, self.io_spectrum)
            else:
                x_proj = nn.Linear(E, self.dt_rank + 2 * N, bias=False)
            self.add_module(f"x_proj{suffix}", x_proj)
            dt_proj = nn.Linear(self.dt_rank, E, bias=True)
            self._init_dt_proj(dt_proj, dt_min, dt_max, dt_scale, dt_init_floor, ssm_lr(lr, "dt"))
            self.add_module(f"dt_proj{suffix}", dt_proj)
            A_log = s4d_real_log_A(E, N)
            # Names as in the reference implementations: A_log / D, and A_b_log / D_b.
            register(self, "A_b_log" if suffix else "A_log", A_log, ssm_lr(lr, "A"), weight_decay=0.0)
            register(self, f"D{suffix}", torch.ones(E), ssm_lr(lr, "D"), weight_decay=0.0)
        self.out_proj = nn.Linear(E, self.d_model, bias=bias)
        if self.reorder_tokens:  # created last: the other parameters draw the same numbers as without it
            for suffix in directions:
                self.add_module(f"importance{suffix}", nn.Linear(E, 1, bias=False))
        mark_no_reinit(self, *(f"dt_proj{suffix}.bias" for suffix in directions))  # a generic re-init must not zero Δ's bias
        to_default_dtype(self)
        self.layer_idx = layer_idx
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"{name}: dtype must be a floating torch.dtype, got {dtype!r}")
        if device is not None or dtype is not None:
            self._to_factory(device, dtype)

    def _to_factory(self, device, dtype) -> None:
        """Move to ``device`` and cast to ``dtype``, except that in half precision A_log and D
        (and their ``_b`` twins) stay in float32, as mamba_ssm creates them."""
        half = dtype in (torch.float16, torch.bfloat16)
        kept = {name: t.detach().clone() for name, t in self.named_parameters()
                if half and name in ("A_log", "D", "A_b_log", "D_b")}
        self.to(device=device, dtype=dtype)
        for name, value in kept.items():
            self.get_parameter(name).data = value.to(device=self.in_proj.weight.device)

    def _init_dt_proj(self, dt_proj, dt_min, dt_max, dt_scale, floor, lr) -> None:
        with torch.no_grad():
            dt_proj.weight.copy_(dt_weight_init(tuple(dt_proj.weight.shape), self.dt_rank, self.dt_init, dt_scale))
            dt_proj.bias.copy_(dt_bias_init((self.d_inner,), dt_min, dt_max, floor))
        if lr == 0.0:
            dt_proj.bias.requires_grad_(False)
        elif lr is not None:
            set_hint(dt_proj, "bias", {"lr": float(lr), "weight_decay": 0.0})

    def _directions(self):
        """(conv1d, x_proj, dt_proj, A_log, D, importance) of the forward scan, then of the
        backward one (importance is None without ``reorder_tokens``)."""
        yield self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D, getattr(self, "importance", None)
        if self.bidirectional:
            yield (self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b,
                   getattr(self, "importance_b", None))

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model).

        ``mask`` (B, L, 1), 1 on valid steps and 0 on right padding, zeroes the convolution's
        input and the scan's input x on the padding, so that the backward direction of a
        bidirectional layer starts from a zero state at the last valid step: no valid output
        depends on the padding. With ``reorder_tokens`` only the valid tokens are sorted,
        among themselves."""
        check_sequence(u, self.d_model, type(self).__name__, self.in_proj)  # u meets in_proj first
        L = u.shape[1]
        mask = check_layer_mask(mask, u.shape[0], L, type(self).__name__)
        if L == 0:  # nothing to convolve or scan
            return zeros_in_graph(u, self)
        x, z = self.in_proj(u.to(self.in_proj.weight.dtype)).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        valid = None if mask is None else mask.reshape(u.shape[0], 1, L).to(x.dtype)
        if valid is not None:
            x = x * valid
        ys = []
        for reverse, params in enumerate(self._directions()):
            xs, zs = (x.flip(-1), z.flip(-1)) if reverse else (x, z)
            ms = None if valid is None else (valid.flip(-1) if reverse else valid)
            y = self._scan(xs, zs, L, *params, mask=ms)
            ys.append(y.flip(-1) if reverse else y)
        y = ys[0] if len(ys) == 1 else (ys[0] + ys[1]) / 2
        return self.out_proj(y.transpose(1, 2)).to(u.dtype)

    def _scan(self, x, z, L, conv1d, x_proj, dt_proj, A_log, D, importance=None, mask=None,
              return_last_state: bool = False):
        """Convolution, projections and gated selective scan of one direction: (B, E, L)
        (and the last SSM state (B, E, N) with ``return_last_state``)."""
        x = F.silu(conv1d(x)[..., :L])
        if mask is not None:
            x = x * mask
        A = -torch.exp(widen(A_log))
        if importance is not None:
            return self._reordered_scan(x, z, x_proj, dt_proj, A, D, importance, mask)
        delta, B, C = self._project(x, x_proj, dt_proj)
        return selective_scan(x, delta, A, B, C, widen(D), z=z, delta_bias=widen(dt_proj.bias), delta_softplus=True,
                              return_last_state=return_last_state)

    def prefill(self, u: torch.Tensor) -> tuple[torch.Tensor, MambaState]:
        """(forward(u), the state after u's last step) for a prompt u (B, L, d_model), in one
        parallel pass: the conv state is the last d_conv inputs of the convolution (zeros
        before the first), the SSM state the scan's last state. ``step`` continues from it."""
        name = type(self).__name__
        self._check_recurrent()
        check_sequence(u, self.d_model, name, self.in_proj)
        Bsz, L = u.shape[:2]
        if L == 0:
            return zeros_in_graph(u, self), self.init_state(Bsz)
        x, z = self.in_proj(u.to(self.in_proj.weight.dtype)).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        conv_state = F.pad(x, (max(self.d_conv - L, 0), 0))[..., -self.d_conv:]
        y, last = self._scan(x, z, L, *next(self._directions()), return_last_state=True)
        state = MambaState(conv_state.to(self.conv1d.weight.dtype).contiguous(),
                           last.to(compute_dtype(self.conv1d.weight.dtype)))
        return self.out_proj(y.transpose(1, 2)).to(u.dtype), state

    def _project(self, x, x_proj, dt_proj):
        """(W_dt δ without the bias, B, C) from x (B, E, L): (B, E, L), (B, N, L), (B, N, L)."""
        delta, B, C = x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return (delta @ dt_proj.weight.T).transpose(1, 2), B.transpose(1, 2), C.transpose(1, 2)

    def _reordered_scan(self, x, z, x_proj, dt_proj, A, D, importance, mask=None) -> torch.Tensor:
        """Scan over the tokens soft-sorted by increasing importance, output in the original
        order. With a padding ``mask`` (B, 1, L) only the valid tokens are sorted, into the
        valid positions, so the padding is neither mixed into them nor scanned before them."""
        delta, _, _ = self._project(x, x_proj, dt_proj)
        scores = importance((delta + dt_proj.bias[:, None]).transpose(1, 2)).squeeze(-1)  # (B, L)
        valid = None if mask is None else mask[:, 0, :].bool()
        perm = soft_sort(-scores, self.reorder_tau, valid).to(x.dtype)  # (B, L, L): least important first
        x = x @ perm.transpose(1, 2)  # (B, E, L): token r of the result is Σ_c P[r, c] x_c
        delta, B, C = self._project(x, x_proj, dt_proj)
        y = selective_scan(x, delta, A, B, C, widen(D), delta_bias=widen(dt_proj.bias), delta_softplus=True)
        return (y @ perm.to(y.dtype)) * F.silu(z)  # Pᵀ back to the original order, then the gate

    def _check_recurrent(self) -> None:
        name = type(self).__name__
        check_causal(self.bidirectional, name)
        if self.reorder_tokens:  # RuntimeError, as for the other layers without a step
            raise RuntimeError(
                f"{name}: reorder_tokens=True reorders the whole sequence before the scan, so the "
                "layer has no recurrent step; use forward"
            )

    def init_state(self, batch_size: int) -> MambaState:
        """Zero state: conv (batch_size, d_inner, d_conv), ssm (batch_size, d_inner, d_state)."""
        self._check_recurrent()
        batch_size = check_batch_size(batch_size, type(self).__name__)
        weight = self.conv1d.weight
        ssm_dtype = compute_dtype(weight.dtype)
        return MambaState(
            torch.zeros(batch_size, self.d_inner, self.d_conv, dtype=weight.dtype, device=weight.device),
            torch.zeros(batch_size, self.d_inner, self.d_state, dtype=ssm_dtype, device=weight.device),
        )

    def step(self, u_t: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """One step: u_t (B, d_model), state -> (y_t (B, d_model), new state).

        conv ← [conv[:, :, 1:], x_t];  x_t ← SiLU(Σ_k w_k conv[:, :, k] + b);
        Δ = softplus(W_dt δ_t + b_dt);  h ← exp(ΔA) ⊙ h + Δ x_t B_t;  y_t = C_t h + D x_t,
        gated by SiLU(z_t) and projected by out_proj. The given state is not modified.
        """
        name = type(self).__name__
        self._check_recurrent()
        check_step_input(u_t, self.d_model, name, self.in_proj)
        conv_state, ssm_state = self._check_state(state, u_t.shape[0])
        x, z = self.in_proj(u_t.to(self.in_proj.weight.dtype)).chunk(2, dim=-1)  # (B, E) each
        conv_state = torch.cat([conv_state[:, :, 1:], x[:, :, None].to(conv_state.dtype)], dim=-1)
        x = (conv_state * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        delta, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        y, ssm_state = selective_state_update(
            ssm_state, x, delta @ self.dt_proj.weight.T, -torch.exp(widen(self.A_log)), B, C,
            widen(self.D), z=z, dt_bias=widen(self.dt_proj.bias), dt_softplus=True,
        )
        return self.out_proj(y).to(u_t.dtype), MambaState(conv_state, ssm_state)

    def _check_state(self, state, batch: int) -> MambaState:
        name = type(self).__name__
        if not (isinstance(state, tuple) and len(state) == 2 and all(torch.is_tensor(t) for t in state)):
            raise TypeError(f"{name}: state must be the (conv, ssm) pair from init_state, got {type(state).__name__}")
        conv, h = state
        weight = self.conv1d.weight
        check_state(conv, (batch, self.d_inner, self.d_conv), weight.dtype, weight.device, name, "conv state")
        check_state(h, (batch, self.d_inner, self.d_state), compute_dtype(weight.dtype), weight.device, name,
                    "ssm state")
        return MambaState(conv, h)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}, bidirectional={self.bidirectional}"
            + (f", io_spectrum={self.io_spectrum!r}" if self.io_spectrum else "")
            + (f", reorder_tokens=True, reorder_tau={self.reorder_tau:g}" if self.reorder_tokens else "")
        )


__all__ = ["IO_SPECTRA", "Mamba", "MambaState", "PositiveDefiniteProjection", "inverse_softplus"]
