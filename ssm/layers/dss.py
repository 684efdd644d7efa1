"""DSS: diagonal state spaces (Gupta, Gu, Berant, "Diagonal State Spaces are as Effective as
Structured State Spaces", 2022)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from kernels import vandermonde
from kernels.fftconv.pytorch import circular_kernel, fft_length
from ssm.hippo import diagonal_init
from ssm.layers._checks import (
    check_causal,
    check_choice,
    check_kernel_length,
    check_lr,
    check_sequence,
    check_state,
    check_step_input,
)
from ssm.layers._empty import zeros_in_graph
from ssm.layers.diagonal import (
    DiagonalSSM,
    complex_dtype,
    compute_dtype,
    log_uniform_dt,
    ssm_lr,
    to_default_dtype,
    widen,
)
from ssm.optim import register
from ssm.padding import check_layer_mask

VARIANTS = ("exp", "softmax")


class SoftmaxState(NamedTuple):
    """Recurrent state of ``DSS(variant="softmax")``: s = sigma · exp(log_scale), both
    (batch, H, N/2), and ``length``, the normalization length fixed when the state was
    made, so that each stream keeps its own. A growing mode's s_t = sum_l e^{a(t-l)} u_l spans e^{Re(a) L}, beyond
    float range for long L; the floating exponent keeps |sigma| <= 1 once s is large."""

    sigma: torch.Tensor
    log_scale: torch.Tensor
    length: int | None = None  # the normalization length of the steps (see DSS.init_state)


class DSS(DiagonalSSM):
    """Diagonal state space with Λ initialized to the skew-HiPPO (LegS normal part) spectrum.

    With λ_n = Λ_re + iΛ_im, Δ_h per channel and W complex:

    - ``variant="exp"``:     Λ_re = -exp(·) < 0 and
      K_l = Re sum_n W_n (e^{λ_n Δ} - 1)/λ_n · e^{λ_n Δ l}
    - ``variant="softmax"``: Λ_re unconstrained and
      K_l = Re sum_n (W_n/λ_n) · softmax_l(λ_n Δ l),
      softmax_l(a l) = e^{a l} (e^a - 1)/(e^{a L} - 1) = e^{a l} / sum_{l'<L} e^{a l'};
      modes with Re λ > 0 are evaluated as e^{μ(L-1-l)}(e^μ - 1)/(e^{μL} - 1), μ = -λΔ, so
      nothing overflows (L the normalization length), and 1/λ is computed as
      conj(λ)/(|λ|² + 1e-7).

    The softmax kernel depends on its length L. ``forward`` uses the input length (or
    ``l_max`` if given); with a padding mask, each sequence's own valid length, so that a
    padded sequence gets the output it gets alone. ``step`` uses ``l_max``, else the
    ``length`` passed to the last :meth:`init_state`, else the length of the last ``forward``
    call. Its state is a :class:`SoftmaxState` (a floating exponent), so that growing modes
    do not overflow.

    Args:
        d_model: channels H. Input and output are (batch, length, H).
        d_state: state size N (even); N/2 complex modes.
        variant: "exp" or "softmax".
        dt_min, dt_max: range of the log-uniform initial Δ.
        bidirectional: second W for a kernel over the future; ``kernel(L)`` is (2, H, L).
        lr: optimizer hint for Δ and Λ (weight decay 0); a float, None, 0 or {"dt", "A"}.
        l_max: fixed normalization length of the softmax kernel (None: the input length).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        variant: str = "exp",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        lr: float | None | dict = 1e-3,
        l_max: int | None = None,
    ) -> None:
        super().__init__(d_model, d_state, bidirectional)
        self.variant = check_choice(variant, VARIANTS, "variant", "DSS")
        check_lr(lr, ("dt", "A"), "DSS")
        if l_max is not None and (int(l_max) != l_max or l_max < 1):
            raise ValueError(f"DSS: l_max must be a positive integer or None, got {l_max!r}")
        self.l_max = l_max
        self._forward_length: int | None = None  # of the last forward
        H, N = self.d_model, self.d_state
        Lam = diagonal_init("legs", N).to(torch.complex64).expand(H, -1)
        real = torch.log(-Lam.real) if self.variant == "exp" else Lam.real
        register(self, "log_dt", log_uniform_dt(H, dt_min, dt_max), ssm_lr(lr, "dt"))
        register(self, "Lambda_real", real.contiguous(), ssm_lr(lr, "A"))
        register(self, "Lambda_imag", Lam.imag.contiguous(), ssm_lr(lr, "A"))
        W = torch.randn(self.channels, H, N // 2, dtype=torch.complex64)
        self.W = torch.nn.Parameter(torch.view_as_real(W))
        to_default_dtype(self)

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Δ (H,), Λ (H, N/2), W (channels, H, N/2)."""
        real = -torch.exp(widen(self.Lambda_real)) if self.variant == "exp" else widen(self.Lambda_real)
        return (torch.exp(widen(self.log_dt)), torch.complex(real, widen(self.Lambda_imag)),
                torch.view_as_complex(widen(self.W)))

    def modes(self, L: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, x) with K_l = 2 Re sum v e^{x l}; the softmax variant needs L."""
        dt, Lam, W = self.continuous()
        x = dt.unsqueeze(-1) * Lam
        if self.variant == "exp":
            return W * (torch.expm1(x) / Lam) / 2, x
        L = self._normalization_length(L)
        return W * _reciprocal(Lam) * _softmax_weight(x, L) / 2, x

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """y = K * x + D ⊙ x on x of shape (B, L, H); returns (B, L, H).

        ``mask`` (B, L, 1) or (B, L), 1 on valid steps and 0 on right padding, zeroes x on the
        padding. The softmax variant without ``l_max`` then normalizes each sequence's kernel
        over its own number of valid steps n_b instead of L, so no valid output depends on how
        far the batch is padded; the exp kernel does not depend on L and needs nothing more.
        The softmax variant remembers L as the normalization length of the states that
        :meth:`init_state` makes afterwards."""
        name = type(self).__name__
        check_sequence(x, self.d_model, name, self)
        B, L = x.shape[0], x.shape[1]
        mask = check_layer_mask(mask, B, L, name)
        if mask is not None:
            x = x * mask.to(x.dtype)
        if mask is None or self.variant == "exp" or self.l_max is not None or B == 0 or L == 0:
            y = super().forward(x)
        else:  # counted, not summed in the mask's dtype (a bfloat16 sum counts 257 as 256)
            y = self._forward_per_length(x, (mask.reshape(B, L) != 0).sum(1))
        if self.variant == "softmax" and L > 0:
            self._forward_length = L
        return y

    def _forward_per_length(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The softmax forward with sequence b's kernel that of its valid length n_b alone
        (see :meth:`_kernels_of_lengths`; an all-padding sequence, zeros, takes n = L): one
        kernel per distinct length (per sequence while TorchDynamo traces, which cannot size
        ``torch.unique``'s output), all from one Vandermonde call, and one FFT convolution
        with a kernel per sequence."""
        L = x.shape[1]
        n = torch.where(lengths > 0, lengths, L)
        if torch.compiler.is_compiling():  # torch.unique's size depends on the values: a kernel per sequence
            distinct, which = n, torch.arange(n.shape[0], device=n.device)
        else:
            distinct, which = torch.unique(n, return_inverse=True)
        k = self._kernels_of_lengths(distinct, L)[which]  # (B, channels, H, L)
        u = x.transpose(1, 2)
        compute = k.dtype  # float32 for half-precision layers, as the kernel
        y = _fftconv_per_sequence(u.to(compute), k, self.D.to(compute))
        return y.to(x.dtype).transpose(1, 2)

    def _kernels_of_lengths(self, n: torch.Tensor, L: int) -> torch.Tensor:
        """For lengths n (U,), each in [1, L]: the softmax kernel of a sequence of length n_u
        alone, n_u taps normalized over n_u, then zeros (the taps past n_u reach only padding,
        and a growing mode's would overflow): (U, channels, H, L). Growing modes are summed as
        the decaying e^{-a k} at k = n_u - 1 - l, gathered per length."""
        v, a, growing = self._stable_weights(n.to(compute_dtype(self.D.dtype)).view(-1, 1, 1, 1))
        x_stable = torch.where(growing, -a, a)
        U, C, H, M = v.shape  # one set of weights per length
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        decaying = vandermonde(torch.where(growing, zero, v).reshape(U * C, H, M), x_stable, L)
        reversed_ = vandermonde(torch.where(growing, v, zero).reshape(U * C, H, M), x_stable, L)
        steps = torch.arange(L, device=n.device)
        back = (n.view(-1, 1) - 1 - steps).clamp(min=0)  # (U, L): k = n_u - 1 - l
        grown = reversed_.view(U, C, H, L).gather(-1, back.view(U, 1, 1, L).expand(U, C, H, L))
        valid = (steps < n.view(-1, 1)).view(U, 1, 1, L)
        return torch.where(valid, decaying.view(U, C, H, L) + grown, 0.0)

    def kernel(self, L: int) -> torch.Tensor:
        """The convolution kernel (H, L), or (2, H, L) when bidirectional; the softmax variant
        is normalized over ``l_max``, else over L. Reading it changes no state."""
        L = check_kernel_length(L, type(self).__name__)
        if self.variant == "exp":
            return super().kernel(L)
        if L == 0:  # an empty kernel; its normalization length would be 0
            shape = (self.channels, self.d_model, 0) if self.bidirectional else (self.d_model, 0)
            return zeros_in_graph(self.log_dt.new_zeros(shape), self)
        return self._softmax_kernel(L, self._normalization_length(L))

    def _softmax_kernel(self, L: int, n: int) -> torch.Tensor:
        """The softmax kernel's first L taps, normalized over n steps; (channels, H, L) when
        bidirectional, else (H, L)."""
        v, x, growing = self._stable_weights(n)
        x_stable = torch.where(growing, -x, x)
        zero = torch.zeros((), dtype=v.dtype, device=v.device)
        decaying = vandermonde(torch.where(growing, zero, v), x_stable, L)
        # growing: e^{μ(n-1-l)} = e^{μ(n-L)} e^{μ(L-1-l)}, the flipped Vandermonde times a constant
        shifted = v * torch.exp(torch.where(growing, x_stable * (n - L), torch.zeros_like(x_stable)))
        reversed_ = vandermonde(torch.where(growing, shifted, zero), x_stable, L).flip(-1)
        k = decaying + reversed_
        return k if self.bidirectional else k[0]

    def _stable_weights(self, n: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Softmax variant normalized over n: (v (channels, H, N/2), a = ΔΛ (H, N/2), growing
        = Re a > 0), with v the weight of e^{a l} on decaying modes and of e^{-a(n-1-l)} on
        growing ones, so that neither overflows. A tensor n of shape (U, 1, 1, 1) gives v of
        shape (U, channels, H, N/2), one set per length."""
        dt, Lam, W = self.continuous()
        a = dt.unsqueeze(-1) * Lam
        growing = a.real > 0
        return W * _reciprocal(Lam) * _softmax_weight(torch.where(growing, -a, a), n) / 2, a, growing

    def init_state(self, batch_size: int, length: int | None = None) -> torch.Tensor | SoftmaxState:
        """Zero state: complex (batch_size, H, N/2), or a :class:`SoftmaxState` of that shape
        for the softmax variant, which carries the normalization length of its steps:
        ``length``, else the length of the last forward so far (``l_max``, when set, takes
        precedence over both). A later forward or init_state leaves this state's length as it is."""
        if length is not None and (isinstance(length, bool) or int(length) != length or length < 1):
            raise ValueError(f"DSS.init_state: length must be a positive integer, got {length!r}")
        state = super().init_state(batch_size)
        if self.variant == "exp":
            return state
        length = self._forward_length if length is None else int(length)
        return SoftmaxState(state, torch.zeros(state.shape, dtype=state.real.dtype, device=state.device), length)

    def step(self, x_t: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor | SoftmaxState]:
        """One recurrent step: x_t (B, H) -> (y_t (B, H), new state). For the softmax
        variant, with a = ΔΛ, the state s_t = e^a s_{t-1} + u_t is kept as sigma·e^E and
        y_t = 2 Re(v e^{ε} s_t) + D u_t, where v e^{ε} (ε = -a(L-1) on growing modes, 0 else)
        is the kernel's weight written without overflow, as in :meth:`kernel`."""
        if self.variant == "exp":
            return super().step(x_t, state)
        name = type(self).__name__
        check_causal(self.bidirectional, name)
        check_step_input(x_t, self.d_model, name, self)
        if not isinstance(state, SoftmaxState):
            raise TypeError(f"{name}: the state must be the SoftmaxState from init_state, got {type(state).__name__}")
        shape, real = (x_t.shape[0], self.d_model, self.n_modes), compute_dtype(self.D.dtype)
        check_state(state.sigma, shape, complex_dtype(self.D.dtype), self.D.device, name, "state.sigma")
        check_state(state.log_scale, shape, real, self.D.device, name, "state.log_scale")
        L = self._normalization_length(state.length)
        v, a, growing = self._stable_weights(L)
        v = v[0]
        offset = torch.where(growing, -a * (L - 1), torch.zeros_like(a))
        u = x_t.unsqueeze(-1).to(state.sigma.dtype)
        # e^a = e^growth · e^(a - growth): a step's growth beyond e^40 joins the exponent (e^a alone
        # overflows float32 past Re a = 88.7); below it the state keeps its rounding as before
        growth = (a.real - 40.0).clamp(min=0.0)
        scale = state.log_scale + growth
        sigma = torch.exp(a - growth) * state.sigma + u * torch.exp(-scale)
        magnitude = sigma.abs().clamp(min=torch.finfo(real).tiny)
        log_scale = (scale + torch.log(magnitude)).clamp(min=0.0)
        sigma = sigma * torch.exp(scale - log_scale)
        y = 2 * (v * torch.exp(offset + log_scale) * sigma).sum(-1).real + self.D * x_t
        return y.to(x_t.dtype), SoftmaxState(sigma, log_scale, state.length)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | SoftmaxState]:
        """(forward(x), the state after x's last step): for the exp variant in one pass (see
        ``DiagonalSSM.prefill``); the softmax variant steps through x with its kernel
        normalized over x's length (``l_max`` when set), as forward is."""
        if self.variant == "exp":
            return super().prefill(x)
        from ssm.prefill import prefill_by_steps

        check_sequence(x, self.d_model, type(self).__name__, self)
        return prefill_by_steps(self, x, length=x.shape[1] or None)  # empty: init_state's own rule

    def _normalization_length(self, L: int | None) -> int:
        L = self.l_max or L
        if L is None:
            raise RuntimeError(
                "DSS(variant='softmax'): the kernel is normalized over its length; pass "
                "l_max=... at construction or init_state(batch_size, length=L) (or run forward before "
                "init_state) before step()"
            )
        return int(L)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant!r}"


def _reciprocal(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return z.conj() / (z.real**2 + z.imag**2 + eps)


def _softmax_weight(a: torch.Tensor, L: int | torch.Tensor) -> torch.Tensor:
    """(e^a - 1)/(e^{aL} - 1), with its limit 1/L at a = 0; L an int or a real tensor that
    broadcasts against a."""
    tiny = a.abs() < 1e-12
    safe = torch.where(tiny, torch.ones_like(a), a)
    w = torch.expm1(safe) / torch.expm1(safe * L)
    return torch.where(tiny, (1.0 / L) + torch.zeros_like(w), w)


def _fftconv_per_sequence(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """y_b = k_b * u_b + D ⊙ u_b for u (B, H, L) and a kernel per sequence k (B, 1, H, L)
    (causal) or (B, 2, H, L) (k[:, 1] acting on the future, as in :func:`kernels.fftconv`)."""
    L = u.shape[-1]
    n = fft_length(L)
    circular = k[:, 0] if k.shape[1] == 1 else circular_kernel(k.transpose(0, 1), n)
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(circular, n=n), n=n)[..., :L]
    return y + D[:, None] * u
