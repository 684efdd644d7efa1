"""S4-PTD: S4D initialized by perturb-then-diagonalize of HiPPO-LegS (Yu, Mahoney, Erichson,
"Robustifying State-space Models for Long Sequences via Approximate Diagonalization", 2023)."""

from __future__ import annotations

import torch

from ssm.hippo import ptd_legs, transition
from ssm.layers.diagonal import DiagonalSSM
from ssm.layers.s4d import S4D


class S4PTD(S4D):
    """Diagonal SSM ``y = K * u + D ⊙ u`` started from a well-conditioned approximate
    diagonalization of HiPPO-LegS.

    ``ssm.hippo.ptd_legs(N)`` gives A_LegS + E = Ṽ diag(Λ) Ṽ⁻¹ with a small E and a well
    conditioned Ṽ. The layer starts from the N modes

        A = Λ (Re Λ ≤ 0),   B = Ṽ⁻¹ B_LegS,   C = C₀ Ṽ,   C₀ ~ N(0, 1) real (per channel),

    so that at initialization Re(C (zI - A)⁻¹ B) = C₀ (zI - A_LegS - E)⁻¹ B_LegS, the
    transfer function of the perturbed LegS system. The spectrum of a complex E is not
    conjugate-closed, so every one of the N states is its own mode, and the kernel is the
    S4D kernel with 2·Re over all of them, as in the S4-PTD code (twice the perturbed LegS
    system's kernel at initialization; C is learned, so only its starting scale depends on it):

        K_l = 2 Re sum_{n<N} C_n B̄_n Ā_n^l,   l = 0 .. L-1

    with the discretization of :class:`ssm.S4D` (``zoh`` or ``bilinear``) and Δ per channel.
    Everything after the starting point is S4D's (``init`` reads "ptd"): A is parameterized
    as -exp(log_A_real) + i A_imag (so it stays stable) and C is trained freely.

    Args:
        d_model: channels H. Input and output are (batch, length, H).
        d_state: state size N (any N >= 1); N complex modes are stored.
        disc: "zoh" or "bilinear".
        dt_min, dt_max: Δ ~ LogUniform[dt_min, dt_max] per channel.
        bidirectional: a second C gives a kernel over the future; ``kernel(L)`` is (2, H, L).
        lr: optimizer hint for Δ, A and B (weight decay 0): a float, None (global lr), 0
            (frozen), or a dict with keys "dt", "A", "B", and "C" for C alone (global weight
            decay), as in :class:`ssm.S4D`.
        ptd: keyword arguments for ``ssm.hippo.ptd_legs`` (e.g. the target size of E).
        n_ssm: trained copies of (A, B), dividing d_model; channel h uses copy h mod n_ssm
            (None: one per channel; the S4-PTD paper's LRA configs use 1).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        lr: float | None | dict = 1e-3,
        ptd: dict | None = None,
        n_ssm: int | None = None,
    ) -> None:
        # S4D's constructor draws S4D's starting point; only the shared base is reused here.
        DiagonalSSM.__init__(self, d_model, d_state, bidirectional, conjugate_pairs=False)
        self.init = "ptd"
        H, N = self.d_model, self.d_state
        Lam, V, Vinv = ptd_legs(N, **(ptd or {}))
        _, B_legs = transition("legs", N)
        B = Vinv @ B_legs.to(torch.complex128)
        C = torch.randn(self.channels, H, N, dtype=torch.float64).to(torch.complex128) @ V
        # Re Λ <= 0 is guaranteed by ptd; keep it strictly negative for the log.
        A = torch.complex(Lam.real.clamp(max=-1e-4), Lam.imag)
        self._register_modes(A, B, C, disc, dt_min, dt_max, lr, n_ssm)
