"""S5: one MIMO diagonal SSM per layer (Smith, Warrington, Linderman, "Simplified State Space
Layers for Sequence Modeling", 2023), with the HiPPO-N or the PTD initialization."""

from __future__ import annotations

import math

import torch
from torch import nn

from kernels import linear_scan
from ssm.hippo import nplr, ptd_legs
from ssm.layers._checks import (
    check_batch_size,
    check_causal,
    check_choice,
    check_lr,
    check_positive_ints,
    check_sequence,
    check_state,
    check_step_input,
)
from ssm.layers.diagonal import complex_dtype, discretize, ssm_lr, to_default_dtype, widen
from ssm.optim import KeepsOptimHints, register

INITS = ("hippo_n", "ptd")
DISCRETIZATIONS = ("zoh", "bilinear")
C_INITS = ("lecun_normal", "trunc_standard_normal", "complex_normal")
OPT_CONFIGS = ("standard", "BandCdecay", "BfastandCdecay", "noBCdecay")

# Standard deviation of a standard normal truncated to [-2, 2]; dividing by it makes a
# truncated draw have the requested variance.
_TRUNC_STD = 0.87962566103423978


def lecun_normal(*shape: int, fan_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Truncated normal (at ±2σ) with variance 1/fan_in: float64 tensor of ``shape``."""
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    w = torch.empty(*shape, dtype=torch.float64)
    return nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)


def block_eigenbasis(init: str, size: int, conj_sym: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Λ (m,), V (size, m), V⁻¹ (m, size)), complex128, for one block of the state.

    - ``hippo_n``: the normal part S of HiPPO-LegS, S = V diag(Λ) Vᴴ with V unitary; with
      ``conj_sym`` only the eigenvalue with Im > 0 of each conjugate pair is kept (m =
      size/2) and S = 2 Re(V diag(Λ) Vᴴ).
    - ``ptd``: perturb-then-diagonalize of HiPPO-LegS, A + E = V diag(Λ) V⁻¹ (m = size).
    """
    if init == "ptd":
        return ptd_legs(size)
    Lam, _, _, V = nplr("legs", size, B_clip=None)
    if not conj_sym:
        Lam, V = torch.cat([Lam, Lam.conj()]), torch.cat([V, V.conj()], dim=1)
    return Lam, V, V.mH


class S5(KeepsOptimHints):
    """Multi-input multi-output diagonal SSM on (batch, length, H) sequences.

    With P states shared by all H channels (m stored complex modes), Δ per mode:

        h_t = Λ̄ ⊙ h_{t-1} + B̄ u_t,    y_t = s · Re(C h_t) + D ⊙ u_t

    - ZOH: Λ̄ = exp(ΔΛ), B̄ = (Λ̄ - 1)/Λ ⊙ B;  bilinear: Λ̄ = (1 + ΔΛ/2)/(1 - ΔΛ/2),
      B̄ = Δ/(1 - ΔΛ/2) ⊙ B (row-wise over the modes).
    - Λ ∈ ℂ^m, B ∈ ℂ^{m×H}, C ∈ ℂ^{H×m}, D ∈ ℝ^H ~ N(0, 1), Δ ~ LogUniform[dt_min, dt_max].
    - ``conj_sym=True``: every conjugate pair of modes is stored once (m = P/2) and s = 2;
      otherwise m = P and s = 1.
    - Init, block-diagonal with J = ``blocks`` blocks of size P/J: Λ is the block spectrum
      tiled J times, B = V⁻¹ B₀ and C = C₀ V with V = blockdiag(V_blk), B₀ real (P, H) and
      C₀ complex (H, P) per ``C_init`` (``complex_normal`` draws C directly, without V).
      The draws are S5's: JAX's ``lecun_normal`` (a normal truncated at ±2σ with variance
      1/fan_in, fan_in the second-to-last axis times any leading ones) on B₀'s (P, H), so
      variance 1/P, and on C₀'s real and imaginary parts as an (H, P, 2) array, so variance
      1/(P·H) each.
      ``init="hippo_n"``: V_blk diagonalizes the normal part of HiPPO-LegS (unitary).
      ``init="ptd"``: V_blk from ``ssm.hippo.ptd_legs`` (needs ``conj_sym=False``).
    - ``clip_eigs``: Re Λ is clamped to <= -1e-4 when used (stable for unbounded lengths).
    - ``bidirectional``: a second scan runs backwards in time over the same Λ̄, B̄ and a
      second C adds s · Re(C' h'_t), h'_t = Λ̄ ⊙ h'_{t+1} + B̄ u_t.

    The scan is ``kernels.linear_scan`` (Triton on CUDA, a chunked parallel scan on CPU).

    Args:
        d_model: channels H.
        d_state: P, the full state size (``ssm_size_base`` in the S5 code).
        blocks: J, number of diagonal blocks of the initialization; P/J must be an integer
            (even for ``hippo_n``).
        init: "hippo_n" or "ptd".
        conj_sym: store conjugate pairs once (not possible with ``ptd``).
        disc: "zoh" or "bilinear".
        bidirectional, clip_eigs, dt_min, dt_max: as above.
        C_init: "lecun_normal" (Re, Im of C₀ each of variance 1/(P·H), see above),
            "trunc_standard_normal" (a lecun-normal draw per row of C₀: variance 1/P each) or
            "complex_normal" (C itself, Re, Im ~ N(0, 1/2)).
        lr: the SSM learning rate (S5's ``ssm_lr``) for Λ ("A"), Δ ("dt") and B ("B"), with
            weight decay 0: a float, None (global lr), 0 (frozen) or a dict with those keys.
        opt_config: where B, C and D go (S5's ``opt_config``): "standard" (B as above; C, D
            with the global lr and weight decay), "BandCdecay" (B at the SSM lr but with the
            global weight decay), "BfastandCdecay" (B with the global lr and weight decay),
            "noBCdecay" (B, C and D at the SSM lr, weight decay 0).
        dt_global: Δ uses the global lr and weight decay (S5's ``dt_global``; Δ stays per mode).
        step_rescale: multiplies Δ (evaluate at another sampling rate).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        blocks: int = 1,
        init: str = "hippo_n",
        conj_sym: bool = True,
        disc: str = "zoh",
        bidirectional: bool = False,
        clip_eigs: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        C_init: str = "lecun_normal",
        lr: float | None | dict = 1e-3,
        opt_config: str = "standard",
        dt_global: bool = False,
        step_rescale: float = 1.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_ints(name, d_model=d_model, d_state=d_state, blocks=blocks)
        self.init = check_choice(init, INITS, "init", name)
        self.disc = check_choice(disc, DISCRETIZATIONS, "disc", name)
        self.C_init = check_choice(C_init, C_INITS, "C_init", name)
        self.opt_config = check_choice(opt_config, OPT_CONFIGS, "opt_config", name)
        check_lr(lr, ("A", "dt", "B"), name)
        if d_state % blocks:
            raise ValueError(f"{name}: d_state={d_state} is not divisible by blocks={blocks}")
        block = d_state // blocks
        if init == "ptd" and conj_sym:
            raise ValueError(
                f"{name}: the PTD spectrum is not conjugate-closed; use conj_sym=False (or ssm.S5PTD)"
            )
        if init == "hippo_n" and block % 2:
            raise ValueError(
                f"{name}: init='hippo_n' needs an even block size d_state/blocks, got {d_state}/{blocks} = {block}"
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"{name}: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        if step_rescale <= 0:
            raise ValueError(f"{name}: step_rescale must be positive, got {step_rescale}")
        self.d_model, self.d_state, self.blocks = int(d_model), int(d_state), int(blocks)
        self.conj_sym, self.bidirectional, self.clip_eigs = bool(conj_sym), bool(bidirectional), bool(clip_eigs)
        self.step_rescale = float(step_rescale)
        self.channels = 2 if self.bidirectional else 1
        H, P = self.d_model, self.d_state

        Lam_blk, V_blk, Vinv_blk = block_eigenbasis(init, block, self.conj_sym)
        Lam = Lam_blk.repeat(self.blocks)
        V = torch.block_diag(*[V_blk] * self.blocks)  # (P, m)
        Vinv = torch.block_diag(*[Vinv_blk] * self.blocks)  # (m, P)
        self.n_modes = Lam.shape[0]
        B = Vinv @ lecun_normal(P, H, fan_in=P).to(torch.complex128)  # (m, H)
        if self.C_init == "complex_normal":
            C = torch.randn(self.channels, H, self.n_modes, dtype=torch.complex128)
        else:  # one (H, P, 2) draw per C, or one (1, P, 2) draw per row
            fan_in = P * H if self.C_init == "lecun_normal" else P
            C0 = torch.view_as_complex(lecun_normal(self.channels, H, P, 2, fan_in=fan_in))
            C = C0 @ V
        log_dt = torch.rand(self.n_modes) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)

        register(self, "Lambda_real", Lam.real.float().contiguous(), ssm_lr(lr, "A"))
        register(self, "Lambda_imag", Lam.imag.float().contiguous(), ssm_lr(lr, "A"))
        if dt_global:
            register(self, "log_dt", log_dt, None, weight_decay=None)
        else:
            register(self, "log_dt", log_dt, ssm_lr(lr, "dt"))
        B = torch.view_as_real(B.to(torch.complex64)).clone()
        if opt_config == "BandCdecay":
            register(self, "B", B, ssm_lr(lr, "B"), weight_decay=None)
        elif opt_config == "BfastandCdecay":
            register(self, "B", B, None, weight_decay=None)
        else:
            register(self, "B", B, ssm_lr(lr, "B"))
        C = torch.view_as_real(C.to(torch.complex64)).clone()
        if opt_config == "noBCdecay":
            register(self, "C", C, ssm_lr(lr, "B"))
            register(self, "D", torch.randn(H), ssm_lr(lr, "B"))
        else:
            self.C = nn.Parameter(C)
            self.D = nn.Parameter(torch.randn(H))
        to_default_dtype(self)

    @property
    def output_scale(self) -> float:
        """s in y = s · Re(C h): 2 when conjugate pairs are stored once."""
        return 2.0 if self.conj_sym else 1.0

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Δ (m,), Λ (m,), B (m, H), C (channels, H, m) before discretization."""
        real = widen(self.Lambda_real).clamp(max=-1e-4) if self.clip_eigs else widen(self.Lambda_real)
        dt = torch.exp(widen(self.log_dt)) * self.step_rescale
        return (dt, torch.complex(real, widen(self.Lambda_imag)), torch.view_as_complex(widen(self.B)),
                torch.view_as_complex(widen(self.C)))

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Λ̄ (m,), B̄ (m, H), C (channels, H, m)."""
        dt, Lam, B, C = self.continuous()
        x, factor = discretize(dt, Lam, torch.ones_like(Lam), self.disc)
        return torch.exp(x), factor.unsqueeze(-1) * B, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H). Computed in the parameters' dtype, also under autocast
        (half-precision products cannot form the complex B̄u the scan needs)."""
        return self._forward_and_states(x)[0]

    def _forward_and_states(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward(x), the forward scan's states h (B, L, m); None when bidirectional)."""
        check_sequence(x, self.d_model, type(self).__name__, self)
        with torch.autocast(x.device.type, enabled=False):
            u = x.to(widen(self.D).dtype)
            Lam_bar, B_bar, C = self.discrete()
            Bu = torch.complex(u @ B_bar.real.T, u @ B_bar.imag.T)  # (B, L, m)
            h = linear_scan(Lam_bar, Bu)
            y = self._readout(h, C[0])
            if self.bidirectional:  # no prefill then: free the forward states before the reverse scan
                h = None
                y = y + self._readout(linear_scan(Lam_bar, Bu, reverse=True), C[1])
            y = y + self.D * u
        return y.to(x.dtype), h

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward(x), the state after x's last step: the scan's last state (B, m)), from
        which :meth:`step` continues."""
        check_causal(self.bidirectional, type(self).__name__)
        y, h = self._forward_and_states(x)
        return y, (h[:, -1] if x.shape[1] else self.init_state(x.shape[0]))

    def _readout(self, h: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """s · Re(h Cᵀ) without forming the complex product: (B, L, m) -> (B, L, H)."""
        return self.output_scale * (h.real @ C.real.T - h.imag @ C.imag.T)

    def init_state(self, batch_size: int) -> torch.Tensor:
        """Zero state: complex (batch_size, m)."""
        check_causal(self.bidirectional, type(self).__name__)
        batch_size = check_batch_size(batch_size, type(self).__name__)
        return torch.zeros(batch_size, self.n_modes, dtype=complex_dtype(self.D.dtype), device=self.D.device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x_t (B, H), state (B, m) -> (y_t (B, H), new state (B, m))."""
        check_causal(self.bidirectional, type(self).__name__)
        check_step_input(x_t, self.d_model, type(self).__name__, self)
        check_state(state, (x_t.shape[0], self.n_modes), complex_dtype(self.D.dtype), self.D.device,
                    type(self).__name__)
        with torch.autocast(x_t.device.type, enabled=False):
            Lam_bar, B_bar, C = self.discrete()
            u = x_t.to(widen(self.D).dtype)
            state = Lam_bar * state + u.to(state.dtype) @ B_bar.T
            y = self._readout(state, C[0]) + self.D * u
        return y.to(x_t.dtype), state

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, blocks={self.blocks}, init={self.init!r}, "
            f"conj_sym={self.conj_sym}, disc={self.disc!r}, bidirectional={self.bidirectional}, "
            f"clip_eigs={self.clip_eigs}"
        )


class S5PTD(S5):
    """S5 with the PTD initialization: ``S5(init="ptd", conj_sym=False)``.

    Each block of size P/J starts from A_LegS + E = Ṽ diag(Λ) Ṽ⁻¹ (``ssm.hippo.ptd_legs``),
    with B = Ṽ⁻¹ B₀ and C = C₀ Ṽ. Other arguments as in :class:`S5`.
    """

    def __init__(self, d_model: int, d_state: int, blocks: int = 1, **kwargs) -> None:
        for fixed in ("init", "conj_sym"):
            if fixed in kwargs:
                raise TypeError(f"S5PTD: {fixed} is fixed (init='ptd', conj_sym=False); use ssm.S5 to change it")
        super().__init__(d_model, d_state, blocks, init="ptd", conj_sym=False, **kwargs)
