"""S4D: the diagonal structured state space (Gu et al., "On the Parameterization and
Initialization of Diagonal State Space Models", 2022)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ssm.hippo import diagonal_B_init, diagonal_init
from ssm.layers._checks import check_choice, check_lr, check_positive_ints
from ssm.layers.diagonal import DiagonalSSM, discretize, log_uniform_dt, ssm_lr, to_default_dtype, widen
from ssm.optim import register

INITS = ("lin", "inv", "legs", "real")
DISCRETIZATIONS = ("zoh", "bilinear")


class S4D(DiagonalSSM):
    """Diagonal SSM ``y = K * u + D ⊙ u`` with ``K_l = 2 Re sum_n C_n Ā_n^l B̄_n``.

    Continuous parameters per channel h and mode n < N/2 (one of each conjugate pair):
    A_n = -exp(log_A_real) + i A_imag, B_n, C_n complex, Δ_h = exp(log_dt) with
    Δ ~ LogUniform[dt_min, dt_max] at init.

    - ``disc="zoh"``:      Ā = exp(ΔA),                 B̄ = (exp(ΔA) - 1)/A · B
    - ``disc="bilinear"``: Ā = (1 + ΔA/2)/(1 - ΔA/2),    B̄ = Δ/(1 - ΔA/2) · B

    Inits (``ssm.hippo.diagonal_init``): ``lin`` -1/2 + iπn, ``inv`` -1/2 + i(N/π)(N/(2n+1) - 1),
    ``legs`` eigenvalues of the normal part of HiPPO-LegS (with B = V*B_LegS, Im clipped
    to ±2), ``real`` -(n+1). B = 1 except for ``legs``; C ~ CN(0, 1); D ~ N(0, 1).

    With ``n_ssm`` = S < H, only S copies of (A, B) are trained, (S, N/2) each, tied across
    channels as in S4's code: channel h uses copy h mod S (Δ, C and D stay per channel).

    Args:
        d_model: channels H. Input and output are (batch, length, H).
        d_state: state size N (even); N/2 complex modes are stored.
        bidirectional: a second C gives a kernel over the future; ``kernel(L)`` is then (2, H, L).
        lr: optimizer hint for Δ, A and B (weight decay 0): a float, None (global lr), 0
            (frozen), or a dict with keys "dt", "A", "B", and "C" for an lr of C alone (which
            keeps the global weight decay; 0 freezes C).
        n_ssm: trained copies of (A, B), dividing d_model (None: one per channel, n_ssm = H).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        init: str = "inv",
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        lr: float | None | dict = 1e-3,
        n_ssm: int | None = None,
    ) -> None:
        super().__init__(d_model, d_state, bidirectional)
        self.init = check_choice(init, INITS, "init", "S4D")
        H, N = self.d_model, self.d_state
        C = torch.randn(self.channels, H, N // 2, dtype=torch.complex64)
        self._register_modes(diagonal_init(init, N), diagonal_B_init(init, N), C, disc, dt_min, dt_max, lr, n_ssm)

    def _register_modes(
        self,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        disc: str,
        dt_min: float,
        dt_max: float,
        lr: float | None | dict,
        n_ssm: int | None,
    ) -> None:
        """Register Δ (H,), A and B (n_ssm, n_modes) with their optimizer hints, and C, from
        the starting point A, B (n_modes,) complex and C (channels, H, n_modes)."""
        name = type(self).__name__
        self.disc = check_choice(disc, DISCRETIZATIONS, "disc", name)
        check_lr(lr, ("dt", "A", "B", "C"), name)
        H = self.d_model
        if n_ssm is not None:
            check_positive_ints(name, n_ssm=n_ssm)
            if H % n_ssm:
                raise ValueError(f"{name}: n_ssm ({n_ssm}) must divide d_model ({H})")
        self.n_ssm = H if n_ssm is None else int(n_ssm)
        A = A.to(torch.complex64).expand(self.n_ssm, -1)
        B = B.to(torch.complex64).expand(self.n_ssm, -1)
        register(self, "log_dt", log_uniform_dt(H, dt_min, dt_max), ssm_lr(lr, "dt"))
        register(self, "log_A_real", torch.log(-A.real).contiguous(), ssm_lr(lr, "A"))
        register(self, "A_imag", A.imag.contiguous(), ssm_lr(lr, "A"))
        register(self, "B", torch.view_as_real(B.contiguous()).clone(), ssm_lr(lr, "B"))
        C_lr = lr.get("C") if isinstance(lr, Mapping) else None
        register(self, "C", torch.view_as_real(C.to(torch.complex64)).clone(), C_lr, weight_decay=None)
        to_default_dtype(self)

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Δ (H,), A (H, n_modes), B (H, n_modes), C (channels, H, n_modes) before
        discretization; with n_ssm < H, channel h gets A and B of copy h mod n_ssm."""
        dt = torch.exp(widen(self.log_dt))
        A = torch.complex(-torch.exp(widen(self.log_A_real)), widen(self.A_imag))
        B = torch.view_as_complex(widen(self.B))
        tiles = self.d_model // self.n_ssm
        if tiles > 1:
            A, B = A.repeat(tiles, 1), B.repeat(tiles, 1)
        return dt, A, B, torch.view_as_complex(widen(self.C))

    def modes(self, L: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dt, A, B, C = self.continuous()
        x, B_bar = discretize(dt.unsqueeze(-1), A, B, self.disc)
        # The base class sums 2 Re(v e^{xl}): one stored mode per conjugate pair (S4D), and
        # S4-PTD's 2 Re over all its N modes, as in its paper's code.
        return C * B_bar, x

    def extra_repr(self) -> str:
        tied = f", n_ssm={self.n_ssm}" if self.n_ssm != self.d_model else ""
        return f"{super().extra_repr()}, init={self.init!r}, disc={self.disc!r}{tied}"
