"""FFT convolution in Triton: the DFT of each padded row as matrix products (FlashFFTConv idea).

Each (b, h) row is zero-padded to n = 2^p >= 2L (at least 256: tl.dot needs dimensions
>= 16) and n is factored as n = N1 * N2, N1 = 2^ceil(p/2) and N2 powers of two from 16 up to
128 x 64 (MAX_N, in ``triton_op.py``). Writing the padded row as an (N1, N2) tile
x[m1, m2] = x[N2 m1 + m2], the DFT

    X[f1 + N1 f2] = sum_{m2} F_N2[m2, f2] T[f1, m2] sum_{m1} F_N1[f1, m1] x[m1, m2],
    T[f1, m2] = exp(-2 pi i f1 m2 / n),

is two matrix products (``tl.dot`` on real and imaginary parts) around a pointwise twiddle.
The spectrum stays in this [f1, f2] layout, is multiplied by the kernel's spectrum and sent
back by the conjugate steps (@ conj(F_N2), * conj(T), conj(F_N1) @, real part), all inside
one program, so the padded sequence never goes back to memory between stages. A program
loads the DFT matrices once and runs 1 to 8 rows in turn (more when B * H is large against
the GPU's multiprocessor count). Since L <= n / 2, only the first N1 / 2 rows of a tile hold
input or wanted output: for N1 >= 32 the outer products use F_N1[:, :N1/2] and its transpose.

What runs where:

- Triton: the fused convolution (forward, and grad_u with the conjugate kernel spectrum), the
  per-row cross-spectrum DFT(grad_y) * conj(DFT(u)) for grad_k, and its inverse DFT.
- torch (launcher): the DFT matrices and twiddles (built in float64, passed as float32), the
  kernel's spectrum (``torch.fft.fft`` of the zero-padded or circular kernel, once per call),
  the batch sum of the cross-spectra, grad_D = sum_{b,t} grad_y u. The cross-spectra are
  formed for a chunk of the batch at a time, at most CROSS_SPECTRUM_ELEMENTS per real / imaginary
  buffer (or one batch row, H·n, if that is more), and the chunks' sums are added up: the
  backward's memory does not grow with the batch (all at once, B = 64, H = 1024, L = 4096
  held 4.3 GB of them). A batch that fits in one chunk sums exactly as a single pass.

Limits: one fused kernel covers n <= 8192, i.e. L <= 4096; longer sequences, and float64
inputs (the kernel computes in float32), go to :func:`fftconv_torch`, and so does any FFT
length whose kernels raise ``triton.OutOfResources`` on the device (remembered per device;
the backward then takes torch.fft's gradients). float16 / bfloat16 are computed in float32
and cast back. On GPUs the products use ``input_precision="tf32x3"``
(float32-level accuracy on tensor cores).

Importing this module decorates the kernels, which fixes whether they run compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); the entry point,
:func:`kernels.fftconv.triton_op.fftconv_triton`, imports it on first use.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels._autograd import first_order_only
from kernels.fftconv.pytorch import circular_kernel, fftconv_torch

MIN_N = 256  # 16 x 16: tl.dot needs every dimension >= 16
_PRECISION = "tf32x3"
# Elements of each cross-spectrum buffer (real, imaginary) the kernel gradient holds at once:
# 2^25 float32 = 128 MiB each, so chunks of 4 batch rows at H = 1024, n = 8192.
CROSS_SPECTRUM_ELEMENTS = 1 << 25
# (n, device) whose kernels raised OutOfResources (tiles too large for on-chip memory there):
# later calls go straight to fftconv_torch.
_TOO_LARGE: set[tuple[int, str]] = set()


# ----------------------------------------------------------------------------- Triton


@triton.jit
def _load_block(ptr, R: tl.constexpr, C: tl.constexpr, ld: tl.constexpr):
    """(R, C) block of a row-major matrix with ``ld`` columns, from its top-left corner."""
    rows = tl.arange(0, R)[:, None]
    cols = tl.arange(0, C)[None, :]
    return tl.load(ptr + rows * ld + cols)


@triton.jit
def _dft_real(x, f1r, f1i, tr, ti, f2r, f2i, PREC: tl.constexpr):
    """Real (M1, N2) tile x[m1, m2] (rows m1 >= M1 zero) -> its DFT in the [f1, f2] layout.

    f1 is F_N1[:, :M1] (N1, M1); returns (real, imag), each (N1, N2).
    """
    # Along N1: F_N1 @ x (x real: two products).
    br = tl.dot(f1r, x, input_precision=PREC)
    bi = tl.dot(f1i, x, input_precision=PREC)
    # Twiddle.
    cr = br * tr - bi * ti
    ci = br * ti + bi * tr
    # Along N2: C @ F_N2.
    xr = tl.dot(cr, f2r, input_precision=PREC) - tl.dot(ci, f2i, input_precision=PREC)
    xi = tl.dot(cr, f2i, input_precision=PREC) + tl.dot(ci, f2r, input_precision=PREC)
    return xr, xi


@triton.jit
def _idft_real_part(yr, yi, g1r, g1i, tr, ti, f2r, f2i, PREC: tl.constexpr):
    """Spectrum (N1, N2) in the [f1, f2] layout -> real part of its unscaled inverse DFT.

    g1 is F_N1[:M, :] (M, N1): returns the rows m1 < M of the output tile [m1, m2].
    """
    # Along N2: Y @ conj(F_N2).
    dr = tl.dot(yr, f2r, input_precision=PREC) + tl.dot(yi, f2i, input_precision=PREC)
    di = tl.dot(yi, f2r, input_precision=PREC) - tl.dot(yr, f2i, input_precision=PREC)
    # Conjugate twiddle.
    er = dr * tr + di * ti
    ei = di * tr - dr * ti
    # Along N1: Re(conj(F_N1) @ E).
    return tl.dot(g1r, er, input_precision=PREC) + tl.dot(g1i, ei, input_precision=PREC)


@triton.jit
def _conv_kernel(
    x_ptr, sr_ptr, si_ptr, d_ptr, y_ptr,
    f1r_ptr, f1i_ptr, tr_ptr, ti_ptr, f2r_ptr, f2i_ptr,
    n_rows, H, L,
    HAS_D: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, M1: tl.constexpr,
    ROWS: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """y = IDFT(DFT(x padded to n) * S)[:L] (+ D x) for ROWS (b, h) rows; S carries the 1/n.

    Only the first M1 rows of the (N1, N2) tile can hold samples t < L <= n / 2.
    """
    f1r = _load_block(f1r_ptr, N1, M1, N1)  # F_N1[:, :M1]
    f1i = _load_block(f1i_ptr, N1, M1, N1)
    g1r = tl.trans(f1r)  # F_N1[:M1, :] (F_N1 is symmetric)
    g1i = tl.trans(f1i)
    tr = _load_block(tr_ptr, N1, N2, N2)
    ti = _load_block(ti_ptr, N1, N2, N2)
    f2r = _load_block(f2r_ptr, N2, N2, N2)
    f2i = _load_block(f2i_ptr, N2, N2, N2)

    idx = tl.arange(0, M1)[:, None] * N2 + tl.arange(0, N2)[None, :]
    spec_idx = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]
    for r in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + r
        h = row % H
        valid = idx < tl.minimum(L, (n_rows - row) * L)  # t < L, and row < n_rows
        x = tl.load(x_ptr + row * L + idx, mask=valid, other=0.0)
        xr, xi = _dft_real(x, f1r, f1i, tr, ti, f2r, f2i, PREC)
        sr = tl.load(sr_ptr + h * (N1 * N2) + spec_idx)
        si = tl.load(si_ptr + h * (N1 * N2) + spec_idx)
        yr = xr * sr - xi * si
        yi = xr * si + xi * sr
        y = _idft_real_part(yr, yi, g1r, g1i, tr, ti, f2r, f2i, PREC)
        if HAS_D:
            y += tl.load(d_ptr + h) * x
        tl.store(y_ptr + row * L + idx, y, mask=valid)


@triton.jit
def _cross_spectrum_kernel(
    g_ptr, x_ptr, pr_ptr, pi_ptr,
    f1r_ptr, f1i_ptr, tr_ptr, ti_ptr, f2r_ptr, f2i_ptr,
    n_rows, L,
    N1: tl.constexpr, N2: tl.constexpr, M1: tl.constexpr, ROWS: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """P = DFT(g) * conj(DFT(x)) of ROWS (b, h) pairs of rows padded to n; [f1, f2] layout."""
    f1r = _load_block(f1r_ptr, N1, M1, N1)
    f1i = _load_block(f1i_ptr, N1, M1, N1)
    tr = _load_block(tr_ptr, N1, N2, N2)
    ti = _load_block(ti_ptr, N1, N2, N2)
    f2r = _load_block(f2r_ptr, N2, N2, N2)
    f2i = _load_block(f2i_ptr, N2, N2, N2)

    idx = tl.arange(0, M1)[:, None] * N2 + tl.arange(0, N2)[None, :]
    spec_idx = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]
    for r in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + r
        valid = idx < tl.minimum(L, (n_rows - row) * L)  # t < L, and row < n_rows
        g = tl.load(g_ptr + row * L + idx, mask=valid, other=0.0)
        x = tl.load(x_ptr + row * L + idx, mask=valid, other=0.0)
        gr, gi = _dft_real(g, f1r, f1i, tr, ti, f2r, f2i, PREC)
        xr, xi = _dft_real(x, f1r, f1i, tr, ti, f2r, f2i, PREC)
        out = row * (N1 * N2) + spec_idx
        in_range = spec_idx < (n_rows - row) * (N1 * N2)  # row < n_rows, as a tile mask
        tl.store(pr_ptr + out, gr * xr + gi * xi, mask=in_range)
        tl.store(pi_ptr + out, gi * xr - gr * xi, mask=in_range)


@triton.jit
def _inverse_kernel(
    pr_ptr, pi_ptr, y_ptr,
    f1r_ptr, f1i_ptr, tr_ptr, ti_ptr, f2r_ptr, f2i_ptr,
    n_rows,
    N1: tl.constexpr, N2: tl.constexpr, ROWS: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Real part of the inverse DFT (no 1/n) of ROWS rows' [f1, f2] spectra: all n samples."""
    f1r = _load_block(f1r_ptr, N1, N1, N1)
    f1i = _load_block(f1i_ptr, N1, N1, N1)
    tr = _load_block(tr_ptr, N1, N2, N2)
    ti = _load_block(ti_ptr, N1, N2, N2)
    f2r = _load_block(f2r_ptr, N2, N2, N2)
    f2i = _load_block(f2i_ptr, N2, N2, N2)

    idx = tl.arange(0, N1)[:, None] * N2 + tl.arange(0, N2)[None, :]
    for r in range(ROWS):
        row = tl.program_id(0).to(tl.int64) * ROWS + r
        in_range = idx < (n_rows - row) * (N1 * N2)  # row < n_rows, as a tile mask
        pr = tl.load(pr_ptr + row * (N1 * N2) + idx, mask=in_range, other=0.0)
        pi = tl.load(pi_ptr + row * (N1 * N2) + idx, mask=in_range, other=0.0)
        y = _idft_real_part(pr, pi, f1r, f1i, tr, ti, f2r, f2i, PREC)
        tl.store(y_ptr + row * (N1 * N2) + idx, y, mask=in_range)


# ----------------------------------------------------------------------------- launchers


def fft_size(L: int) -> tuple[int, int, int]:
    """(n, N1, N2): n = 2^p >= max(2L, 256), N1 = 2^ceil(p/2), N2 = n / N1."""
    n = max(MIN_N, 1 << max(0, (2 * L - 1).bit_length()))
    p = n.bit_length() - 1
    N1 = 1 << ((p + 1) // 2)
    return n, N1, n // N1


_PLANS: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}


def _dft_matrix(N: int) -> torch.Tensor:
    j = torch.arange(N, dtype=torch.int64)
    return torch.exp(-2j * math.pi * ((j[:, None] * j[None, :]) % N).to(torch.float64) / N)


def _plan(n: int, N1: int, N2: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """float32 (F_N1 real, imag, T real, imag, F_N2 real, imag) on ``device``, cached (built
    outside inference mode, so that a plan made there serves later differentiated calls)."""
    key = (N1, N2, str(device))
    if key not in _PLANS:
        with torch.inference_mode(False):
            f1 = _dft_matrix(N1)
            f2 = _dft_matrix(N2)
            f, m = torch.arange(N1)[:, None], torch.arange(N2)[None, :]
            t = torch.exp(-2j * math.pi * ((f * m) % n).to(torch.float64) / n)
            _PLANS[key] = tuple(
                part.to(device=device, dtype=torch.float32).contiguous()
                for z in (f1, t, f2)
                for part in (z.real, z.imag)
            )
    return _PLANS[key]


def _to_tile_layout(spec: torch.Tensor, N1: int, N2: int) -> torch.Tensor:
    """(..., n) spectrum in natural order f = f1 + N1 f2 -> (..., N1, N2) indexed [f1, f2]."""
    return spec.reshape(*spec.shape[:-1], N2, N1).transpose(-1, -2).contiguous()


def _launch_options(n: int) -> dict:
    # num_stages=1: nothing to pipeline, and staging buffers would only cost shared memory.
    return {"num_warps": 4 if n <= 1024 else 8, "num_stages": 1}


def _half_rows(N1: int) -> int:
    """M1: rows of the (N1, N2) tile that hold t < n / 2; tl.dot needs it >= 16."""
    return N1 // 2 if N1 >= 32 else N1


def multiprocessors(device: torch.device) -> int | None:
    """Streaming multiprocessors of a CUDA device; None elsewhere (one row per program)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def _rows_per_program(n_rows: int, n: int, device: torch.device) -> int:
    """Rows per program (a power of two <= 8): the DFT matrices are loaded once per program,
    so share them among rows while keeping about two programs per streaming multiprocessor.
    One row per program for n >= 4096, where several rows need more than 227 KB of shared
    memory (offline sm_90 compile)."""
    sms = multiprocessors(device)
    if sms is None or n >= 4096:
        return 1
    target = 2 * sms
    rows = 1
    while rows < 8 and n_rows >= 2 * rows * target:
        rows *= 2
    return rows


def _conv(x, spec_r, spec_i, D, n, N1, N2):
    B, H, L = x.shape
    y = torch.empty_like(x)
    mats = _plan(n, N1, N2, x.device)
    rows = _rows_per_program(B * H, n, x.device)
    with _launch.device_guard(x):
        _conv_kernel[(triton.cdiv(B * H, rows),)](
            x, spec_r, spec_i, x if D is None else D, y, *mats, B * H, H, L,
            HAS_D=D is not None, N1=N1, N2=N2, M1=_half_rows(N1), ROWS=rows, PREC=_PRECISION,
            **_launch_options(n),
        )  # fmt: skip
    return y


def _kernel_grad(g, x, n, N1, N2):
    """sum_b IDFT(DFT(g_b) conj(DFT(x_b))): the gradient of the length-n circular kernel (H, n).

    g, x contiguous (B, H, L). The cross-spectra of a chunk of batch rows at a time, at most
    CROSS_SPECTRUM_ELEMENTS per buffer (at least one row), summed over the chunk and added up."""
    B, H, L = x.shape
    mats = _plan(n, N1, N2, x.device)
    chunk = min(B, max(1, CROSS_SPECTRUM_ELEMENTS // (H * n)))
    pr = torch.empty(chunk, H, N1, N2, dtype=x.dtype, device=x.device)
    pi = torch.empty_like(pr)
    sum_r = sum_i = None
    for b0 in range(0, B, chunk):
        m = min(chunk, B - b0)
        rows = _rows_per_program(m * H, n, x.device)
        with _launch.device_guard(x):
            _cross_spectrum_kernel[(triton.cdiv(m * H, rows),)](
                g[b0 : b0 + m], x[b0 : b0 + m], pr, pi, *mats, m * H, L,
                N1=N1, N2=N2, M1=_half_rows(N1), ROWS=rows, PREC=_PRECISION, **_launch_options(n),
            )  # fmt: skip
        part_r, part_i = pr[:m].sum(0), pi[:m].sum(0)
        sum_r = part_r if sum_r is None else sum_r.add_(part_r)
        sum_i = part_i if sum_i is None else sum_i.add_(part_i)
    pr = (sum_r / n).contiguous()
    pi = (sum_i / n).contiguous()
    out = torch.empty(H, n, dtype=x.dtype, device=x.device)
    rows = _rows_per_program(H, n, x.device)
    with _launch.device_guard(x):
        _inverse_kernel[(triton.cdiv(H, rows),)](
            pr, pi, out, *mats, H, N1=N1, N2=N2, ROWS=rows, PREC=_PRECISION, **_launch_options(n)
        )
    return out


def too_large(L: int, device: torch.device) -> bool:
    """Whether the kernels of L's FFT length have run out of on-chip resources on ``device``."""
    return (fft_size(L)[0], str(device)) in _TOO_LARGE


def _remember_too_large(L: int, device: torch.device) -> None:
    _TOO_LARGE.add((fft_size(L)[0], str(device)))


def _kernel_spectrum(k: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The spectrum of the length-n circular kernel of k, over n, in the [f1, f2] tile
    layout: (real, imag), each (H, N1, N2)."""
    n, N1, N2 = fft_size(L)
    kernel_f = torch.fft.fft(circular_kernel(k, n), n=n) / n
    kernel_f = _to_tile_layout(kernel_f, N1, N2)
    return kernel_f.real.contiguous(), kernel_f.imag.contiguous()


def forward(u, k, D, save):
    """Launch the forward on float32, contiguous u (B, H, L), k (H, L) or (2, H, L), D (H,)
    or None: (y (B, H, L), spectrum real, spectrum imag), the kernel's spectrum (H, N1, N2)
    saved for the backward, or None twice unless ``save``. Where the kernels run out of
    on-chip resources on this device (now or before), y is :func:`fftconv_torch`'s, as an
    eager call would have been sent there."""
    L = u.shape[-1]
    spec_r, spec_i = _kernel_spectrum(k, L)
    y = None
    if not too_large(L, u.device):
        try:
            y = _conv(u, spec_r, spec_i, D, *fft_size(L))
        except triton.OutOfResources:
            _remember_too_large(L, u.device)
    if y is None:
        y = fftconv_torch(u, k, D)
    return (y, spec_r, spec_i) if save else (y, None, None)


def gradients(saved, grad_y, needs):
    """The backward from what the forward saved: ``saved`` = (u, k, D, spectrum real,
    spectrum imag), ``needs`` which of (u, k, D) want a gradient. The gradients of those
    three, None where not needed; where the kernels run out of on-chip resources on this
    device, those of :func:`fftconv_torch` (torch.fft's)."""
    u, k, D, spec_r, spec_i = saved
    try:
        return _grads(grad_y.contiguous(), u, k, D, spec_r, spec_i, needs)
    except triton.OutOfResources:  # the kernels do not fit this device: the gradients of torch.fft
        _remember_too_large(u.shape[-1], u.device)
        return _torch_grads(needs, grad_y, u, k, D)


def _grads(g, u, k, D, spec_r, spec_i, needs):
    """The Triton gradients of (u, k, D) for a contiguous grad_y ``g`` (None where not
    needed); raises triton.OutOfResources where the kernels do not fit this device."""
    L = u.shape[-1]
    n, N1, N2 = fft_size(L)  # the forward's
    grad_u = grad_k = grad_D = None
    if needs[0]:
        # Correlation with k: the forward kernel with the conjugate spectrum, plus D g.
        grad_u = _conv(g, spec_r, (-spec_i).contiguous(), D, n, N1, N2)
    if needs[1]:
        grad_kc = _kernel_grad(g, u, n, N1, N2)
        if k.dim() == 3:  # circular kernel [k0, 0, ..., 0, reverse(k1)]
            grad_k = torch.stack([grad_kc[:, :L], grad_kc[:, n - L :].flip(-1)])
        else:
            grad_k = grad_kc[:, :L]
    if D is not None and needs[2]:
        grad_D = (g * u).sum(dim=(0, 2))
    return grad_u, grad_k, grad_D


class FFTConvTriton(torch.autograd.Function):
    """The fused convolution with its hand-written backward, on float32, contiguous u
    (B, H, L), k (H, L) or (2, H, L), D (H,) or None (eager mode; under ``torch.compile``
    the same launches run as the ops of :mod:`kernels.fftconv.triton_op`)."""

    @staticmethod
    def forward(ctx, u, k, D):
        L = u.shape[-1]
        spec_r, spec_i = _kernel_spectrum(k, L)
        y = _conv(u, spec_r, spec_i, D, *fft_size(L))
        ctx.save_for_backward(u, k, D, spec_r, spec_i)
        return y

    @staticmethod
    @first_order_only("fftconv (triton)")
    def backward(ctx, grad_y):
        return gradients(ctx.saved_tensors, grad_y, ctx.needs_input_grad)


def convolve(u, k, D):
    """:class:`FFTConvTriton` on float32, contiguous u, k, D; None where its kernels do not
    fit this device's on-chip memory (the FFT length is then remembered, and later calls go
    to :func:`fftconv_torch`)."""
    try:
        return FFTConvTriton.apply(u, k, D)
    except triton.OutOfResources:
        _remember_too_large(u.shape[-1], u.device)
        return None


def _torch_grads(needs, grad_y, u, k, D):
    """Gradients of :func:`fftconv_torch` at (u, k, D), None where not needed: the backward's
    fallback. ``torch.func.vjp`` rather than autograd: it also runs inside the backward op,
    where autograd does not record."""
    inputs = (u, k) if D is None else (u, k, D)
    _, vjp = torch.func.vjp(fftconv_torch, *inputs)
    grads = (*vjp(grad_y), None)  # the None stands for an absent D
    return tuple(g if need else None for g, need in zip(grads, needs))


__all__ = ["fft_size"]
