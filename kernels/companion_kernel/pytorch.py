"""Companion kernel K[i, k] = c[i]ᵀ A_i^k b[i] in O((d + L) log(d + L)), without forming A^L.

A = S + a e_dᵀ is the matrix of "multiply by x" modulo χ(x) = x^d - Σ_j a_j x^j (A e_j =
e_{j+1}, A e_{d-1} = a), so polynomials mod χ stand in for powers of A. Two algorithms:

``method="fft"`` (SpaceTime's; math reference §8.2). At z_j = exp(-2πi j/L), z_j^L = 1,

    K̂(z) = Σ_{k<L} K_k z^k = c̃ᵀ (I - zA)^{-1} b,     c̃ = (I - A^L)ᵀ c,

and Sherman–Morrison on I - zA = (I - zS) - z a e_dᵀ gives

    K̂(z) = Q(c̃, b) + Q(c̃, a) Q(e_d, b) / (z^{-1} - Q(e_d, a)),
    Q(u, v)(z) = uᵀ (I - zS)^{-1} v = Σ_{k<d} z^k r_k,   r_k = Σ_i u_{i+k} v_i,

four polynomials of degree < d (two cross-correlations and two reversals), folded modulo
z^L - 1 and evaluated by one length-L FFT; K = irfft(K̂). The combination is the "fused
part" (``combine_spectra``; ``triton.py`` has it as one kernel). c̃ needs cᵀA^L: with
h_k = cᵀ A^k e_0 (h_k = c_k for k < d, then the recurrence of χ) and ρ = x^L mod χ (binary
powering, O(d log d log L)), (cᵀA^L)_m = Σ_j h_{m+j} ρ_j.

The denominator z^{-1} - Q(e_d, a) = z^{-1} Q_rev(z) vanishes where A has an eigenvalue at
an L-th root of unity; rows that come within ``SINGULAR_TOL`` of that are recomputed by:

``method="series"``. h'_k = cᵀ A^k e_0 for k < L + d - 1 is the power series of
P/Q_rev (Q_rev(z) = 1 - Σ_j a_j z^{d-j}, P = Q_rev·c mod z^d), and since A^k b =
Σ_m b_m A^{k+m} e_0, K_k = Σ_m b_m h'_{k+m}: one series inversion (Newton) and one
correlation, also O((L + d) log(L + d)), and never singular (Q_rev(0) = 1). Its Newton
steps amplify rounding where 1/Q_rev's coefficients grow, which ||a||_1 <= 1 rules out (the
L1-normalized a of the layers); other rows, singular ones of the fft method included, take
the blocked recurrence (``series_rows_inaccurate``).

Both algorithms combine terms that grow with the coefficients (h_k follows the recurrence
of χ; the Sherman–Morrison ratio divides by Q_rev) and cancel to a much smaller kernel, so
they lose accuracy once ||a||_1 is well above 1, already at L = 1 where K = cᵀb (float32,
d = 16: relative error 1e-5 at ||a||_1 = 4, O(1) at 8; float64, d = 64: 4e-5 at 16). They
also lose the small early taps of a growing kernel (spectral radius ρ > 1: the rounding
scales with max|K| ~ ρ^L, and the series method's Newton steps amplify it), so rows with
||a||_1 above ``SPECTRAL_MAX_L1`` or with ρ >= 1 (:func:`spectral_rows_inaccurate`) are
computed instead by the blocked recurrence in float64 (``blocked.py``, O(d² L)).
||a||_1 <= 1 bounds ρ by 1 (|z| > 1 gives |Σ_j a_j z^j| < |z|^d), so the layers'
L1-normalized a never leave the fast path and need no eigenvalues.

Everything is plain differentiable torch (FFTs, products); autograd gives the backward.
"""

from __future__ import annotations

import math

import torch

from kernels.companion_kernel.blocked import companion_kernel_blocked, spectral_radius_at_least_one

# Rows whose |z^{-1} - Q(e_d, a)| falls below this (times 1 + ||a||_1) at some root of unity
# go to the series method: there the Sherman–Morrison ratio is a cancellation of small terms.
SINGULAR_TOL = {torch.float64: 1e-6, torch.float32: 1e-2}

# The largest ||a||_1 a row may have for the fft and series methods (the computing dtype's);
# rows beyond it take the squaring Krylov. Measured over random a of d = 4..256 and
# L = 1..2048: relative errors below 1e-4 in float32 up to 2 (9e-5 at 3, d = 64), below 1e-11
# in float64 up to 4.
SPECTRAL_MAX_L1 = {torch.float64: 4.0, torch.float32: 2.0}


def large_coefficient_rows(a: torch.Tensor) -> torch.Tensor:
    """Rows (n,) bool of a (n, d) whose ||a||_1 exceeds ``SPECTRAL_MAX_L1`` of a's dtype,
    where the spectral formulas (and the fast reductions modulo χ) cancel large terms."""
    return a.detach().abs().sum(-1) > SPECTRAL_MAX_L1.get(a.dtype, SPECTRAL_MAX_L1[torch.float32])


def spectral_rows_inaccurate(a: torch.Tensor) -> torch.Tensor:
    """Rows (n,) bool of a (n, d) that the spectral formulas (and the reductions modulo χ)
    cannot compute accurately: a large ||a||_1, or a spectral radius >= 1."""
    large = large_coefficient_rows(a)
    return large | spectral_radius_at_least_one(a.masked_fill(large[:, None], 0.0))  # zeroed: no eigenvalues


def _fft_size(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def polymul(p: torch.Tensor, q: torch.Tensor, n_out: int) -> torch.Tensor:
    """The first ``n_out`` coefficients of p·q for coefficient vectors (..., m1), (..., m2)."""
    if p.numel() == 0 or q.numel() == 0:  # an empty batch (the FFT libraries reject it)
        return p.new_zeros(*torch.broadcast_shapes(p.shape[:-1], q.shape[:-1]), n_out)
    n_fft = _fft_size(p.shape[-1] + q.shape[-1] - 1)
    fp = torch.fft.rfft(p, n_fft)
    prod = torch.fft.irfft(fp * (fp if q is p else torch.fft.rfft(q, n_fft)), n_fft)
    out = prod[..., :n_out]
    if out.shape[-1] < n_out:
        out = torch.nn.functional.pad(out, (0, n_out - out.shape[-1]))
    return out


def correlate(u: torch.Tensor, v: torch.Tensor, n_out: int) -> torch.Tensor:
    """r_k = Σ_i u_{i+k} v_i for k < n_out (u_j = 0 beyond its length): (..., n_out)."""
    if u.numel() == 0 or v.numel() == 0:
        return u.new_zeros(*torch.broadcast_shapes(u.shape[:-1], v.shape[:-1]), n_out)
    n_fft = _fft_size(max(u.shape[-1], v.shape[-1] + n_out - 1))
    # conj_physical, not the lazy conj: a custom op's first run under torch.compile (the
    # companion kernel's, kernels.companion_kernel.compiled) has the conjugate bit ignored
    r = torch.fft.irfft(torch.fft.rfft(u, n_fft) * torch.fft.rfft(v, n_fft).conj_physical(), n_fft)
    return r[..., :n_out]


def series_inverse(q: torch.Tensor, n: int) -> torch.Tensor:
    """1/q mod z^n for q (..., m) with q[..., 0] = 1, by Newton's iteration g ← g (2 - q g)."""
    g = torch.ones(*q.shape[:-1], 1, dtype=q.dtype, device=q.device)
    m = 1
    while m < n:
        m = min(2 * m, n)
        e = -polymul(q[..., :m], g, m)
        e[..., 0] = e[..., 0] + 2
        g = polymul(g, e, m)
    return g[..., :n]


def reversed_characteristic(a: torch.Tensor) -> torch.Tensor:
    """Q_rev = z^d χ(1/z) = 1 - Σ_j a_j z^{d-j}: coefficients (n, d + 1)."""
    one = torch.ones_like(a[..., :1])
    return torch.cat([one, -a.flip(-1)], dim=-1)


def _times_x_mod(r: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x·r mod χ = A r (shift up one degree, x^d ≡ Σ a_j x^j)."""
    shifted = torch.nn.functional.pad(r[..., :-1], (1, 0))
    return shifted + r[..., -1:] * a


def reduce_mod(p: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """p mod χ, χ(z) = z^d - Σ_m a_m z^m, for coefficients p (..., m) and a (..., d), with g
    holding 1/Q_rev to at least m - d terms: the quotient q = ⌊p/χ⌋ has reversed
    coefficients rev(p)·g mod z^{m-d+1}, and p - χq = p[:d] + (a q)[:d]. Returns (..., d)."""
    d, m = a.shape[-1], p.shape[-1]
    if m <= d:
        return torch.nn.functional.pad(p, (0, d - m))
    quotient = polymul(p[..., d:].flip(-1), g[..., : m - d], m - d).flip(-1)
    return p[..., :d] + polymul(a, quotient, d)


def _square_mod(r: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """r² mod χ for r of degree < d, with g = 1/Q_rev to at least d - 1 terms."""
    return reduce_mod(polymul(r, r, 2 * a.shape[-1] - 1), a, g)


def x_power_mod(a: torch.Tensor, L: int, g: torch.Tensor | None = None) -> torch.Tensor:
    """ρ = x^L mod χ: (n, d), the coordinates of A^L e_0 (so A^L = ρ(A)).

    Binary powering from the leading bits of L: while the exponent m is below d, x^m mod χ
    is x^m itself (e_m), so only the last bits cost a squaring. ``g`` is 1/Q_rev to at
    least d - 1 terms (computed when not given)."""
    d = a.shape[-1]
    bits = bin(L)[2:] if L > 0 else ""
    lead = 0
    while lead < len(bits) and int(bits[: lead + 1], 2) < d:
        lead += 1
    r = torch.zeros_like(a)
    r[..., int(bits[:lead], 2) if lead else 0] = 1
    if lead == len(bits):
        return r
    if g is None:
        g = series_inverse(reversed_characteristic(a), max(d - 1, 1))
    for bit in bits[lead:]:
        r = _square_mod(r, a, g)
        if bit == "1":
            r = _times_x_mod(r, a)
    return r


def power_row(a: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """cᵀ A^L for each row: (n, d), in O(d log d log L) and without any d×d matrix."""
    d = a.shape[-1]
    q = reversed_characteristic(a)
    g = series_inverse(q, 2 * d - 1)
    h = polymul(polymul(q, c, d), g, 2 * d - 1)  # h_k = cᵀ A^k e_0
    return correlate(h, x_power_mod(a, L, g), d)


def quadratic_form_spectra(a: torch.Tensor, b: torch.Tensor, c_tilde: torch.Tensor, L: int) -> torch.Tensor:
    """Q(c̃, b), Q(c̃, a), Q(e_d, b), Q(e_d, a) at z_j = exp(-2πij/L), j <= L // 2: complex (4, n, L//2 + 1)."""
    d = a.shape[-1]
    coeffs = torch.stack([correlate(c_tilde, b, d), correlate(c_tilde, a, d), b.flip(-1), a.flip(-1)])
    if d > L:  # z^L = 1: fold the coefficients modulo L
        blocks = -(-d // L)
        coeffs = torch.nn.functional.pad(coeffs, (0, blocks * L - d)).unflatten(-1, (blocks, L)).sum(-2)
    return torch.fft.rfft(coeffs, L)


def inverse_roots(L: int, F: int, dtype: torch.dtype, device) -> torch.Tensor:
    """z_j^{-1} = exp(2πij/L) for j < F, complex."""
    angle = torch.arange(F, device=device, dtype=dtype) * (2 * math.pi / L)
    return torch.polar(torch.ones_like(angle), angle)


def combine_spectra(spectra: torch.Tensor, L: int) -> torch.Tensor:
    """K̂ = Q(c̃,b) + Q(c̃,a) Q(e_d,b) / (z^{-1} - Q(e_d,a)) from (4, n, F) spectra: (n, F)."""
    qcb, qca, qeb, qea = spectra
    w = inverse_roots(L, spectra.shape[-1], spectra.real.dtype, spectra.device)
    return qcb + qca * qeb / (w - qea)


def singular_rows(a: torch.Tensor, spectra: torch.Tensor, L: int) -> torch.Tensor:
    """Rows (n,) bool whose Sherman–Morrison denominator comes near zero at some z_j."""
    w = inverse_roots(L, spectra.shape[-1], spectra.real.dtype, spectra.device)
    den = (w - spectra[3]).abs().amin(-1)
    tol = SINGULAR_TOL.get(a.dtype, SINGULAR_TOL[torch.float32])
    return ~(den > tol * (1 + a.abs().sum(-1)))  # NaN counts as singular


def kernel_fft(a, b, c, L: int, combine=combine_spectra) -> torch.Tensor:
    """The generating-function algorithm; ``combine`` is the fused spectral step."""
    spectra = quadratic_form_spectra(a, b, c - power_row(a, c, L), L)
    bad = singular_rows(a.detach(), spectra.detach(), L)
    if not bool(bad.any()):
        return torch.fft.irfft(combine(spectra, L), L)
    # Rows near a singular z_j never enter the ratio (a 0/0 there would poison the backward).
    good = ~bad
    K = a.new_zeros(a.shape[0], L)
    if bool(good.any()):
        K[good] = torch.fft.irfft(combine(spectra[:, good], L), L)
    series = bad & ~series_rows_inaccurate(a.detach())
    recurrence = bad & ~series
    if bool(series.any()):
        K[series] = kernel_series(a[series], b[series], c[series], L)
    if bool(recurrence.any()):
        K[recurrence] = companion_kernel_blocked(a[recurrence], b[recurrence], c[recurrence], L).to(K.dtype)
    return K


def series_rows_inaccurate(a: torch.Tensor) -> torch.Tensor:
    """Rows (n,) bool with ||a||_1 > 1, where the series method's Newton inversion amplifies
    rounding: 1/Q_rev's coefficients stay within 1 for ||a||_1 <= 1 (|h_k| <= ||a||_1 max|h|),
    but beyond it they can grow like k^m ρ^k for a pole of multiplicity m near the unit circle
    (float64, d = 2, a double pole at radius 0.999 next to z = 1, ||a||_1 = 3, L = 8192:
    relative error 1e20). The layers' L1-normalized rows round to 1 + O(d eps) and stay."""
    return a.abs().sum(-1) > 1.0 + 4 * a.shape[-1] * torch.finfo(a.dtype).eps


def kernel_series(a, b, c, L: int) -> torch.Tensor:
    """The power-series algorithm: K_k = Σ_m b_m h'_{k+m}, h' = (Q_rev·c mod z^d) / Q_rev.

    Computed in float64 (returned in a's dtype): the coefficients of 1/Q_rev decay like ρ^k,
    so near a root at z = 1 (ρ → 1, the rows the fft method hands over) their ℓ1 norm, about
    1/(1 - ρ), amplifies the FFT rounding of every product, and the gradients more."""
    dtype = a.dtype
    a, b, c = (t.to(torch.float64) for t in (a, b, c))
    d = a.shape[-1]
    n = L + d - 1
    q = reversed_characteristic(a)
    h = polymul(polymul(q, c, d), series_inverse(q, n), n)
    return correlate(h, b, L).to(dtype)


METHODS = {"fft": kernel_fft, "series": kernel_series}


def companion_kernel_torch(a, b, c, L: int, method: str = "fft", combine=combine_spectra) -> torch.Tensor:
    """(n, L) kernel for a, b, c (n, d); float16/bfloat16 inputs are computed in float32.
    ``combine`` is the spectral step of the fft method (the Triton backend passes its own)."""
    dtype = a.dtype
    if dtype in (torch.float16, torch.bfloat16):
        a, b, c = a.float(), b.float(), c.float()
    if L == 0:
        return torch.zeros(a.shape[0], 0, dtype=dtype, device=a.device)

    def spectral(a, b, c):
        return kernel_fft(a, b, c, L, combine=combine) if method == "fft" else METHODS[method](a, b, c, L)

    hard = spectral_rows_inaccurate(a)
    if method == "series":
        hard = hard | series_rows_inaccurate(a.detach())
    if not bool(hard.any()):
        return spectral(a, b, c).to(dtype)
    if bool(hard.all()):
        return companion_kernel_blocked(a, b, c, L).to(dtype)
    K = a.new_zeros(a.shape[0], L)
    K[~hard] = spectral(a[~hard], b[~hard], c[~hard])
    K[hard] = companion_kernel_blocked(a[hard], b[hard], c[hard], L).to(K.dtype)
    return K.to(dtype)
