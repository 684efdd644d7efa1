"""Companion kernel with the spectral combination fused into one Triton kernel.

The FFT stages of the generating-function algorithm (``pytorch.py``) stay in torch; the
pointwise step between them,

    K̂_j = Q(c̃,b)_j + Q(c̃,a)_j Q(e_d,b)_j / (w_j - Q(e_d,a)_j),    w_j = exp(2πij/L),

reads the four spectra once and writes K̂ once (torch takes five complex passes and two
temporaries). Its backward is one kernel too: with r = 1/(w - Q(e_d,a)) and the PyTorch
convention for holomorphic maps (grad_in = grad_out · conj(∂out/∂in)),

    g_cb = g,   g_ca = g·conj(Q(e_d,b) r),   g_eb = g·conj(Q(c̃,a) r),   g_ea = g·conj(Q(c̃,a) Q(e_d,b) r²).

Complex tensors travel as interleaved (re, im) real views; the kernels compute in the real
dtype of the spectra (float32, or float64 for float64 inputs). The roots w_j come in as an
(F, 2) table in that precision (a float32 literal 2π/L would cost float64 its accuracy).

Importing this module decorates the kernels, which fixes whether they run compiled or in
the Triton interpreter (``TRITON_INTERPRET=1``); ``kernels.companion_kernel`` imports it on
first use.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels import _launch
from kernels._autograd import first_order_only
from kernels.companion_kernel.pytorch import companion_kernel_torch, inverse_roots

BLOCK = 256  # frequencies per program


@triton.jit
def _load_complex(ptr, offs, mask):
    return tl.load(ptr + 2 * offs, mask=mask, other=0.0), tl.load(ptr + 2 * offs + 1, mask=mask, other=0.0)


@triton.jit
def _store_complex(ptr, offs, re, im, mask):
    tl.store(ptr + 2 * offs, re, mask=mask)
    tl.store(ptr + 2 * offs + 1, im, mask=mask)


@triton.jit
def _frequency_block(F, BLOCK: tl.constexpr):
    """This program's frequencies: (flat offsets row·F + j, j, mask j < F)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(F, BLOCK)
    row = (pid // n_blocks).to(tl.int64)
    j = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    return row * F + j, j, j < F


@triton.jit
def _ratio_terms(s_ptr, w_ptr, n, F, offs, j, mask):
    """The four spectra at (row, j) and r = 1/(w_j - Q(e_d,a)_j), each as (re, im)."""
    plane = tl.cast(n, tl.int64) * F  # int64: 3 · n · F passes 2^31 before the spectra fill a GPU
    cbr, cbi = _load_complex(s_ptr, offs, mask)
    car, cai = _load_complex(s_ptr, offs + plane, mask)
    ebr, ebi = _load_complex(s_ptr, offs + 2 * plane, mask)
    ear, eai = _load_complex(s_ptr, offs + 3 * plane, mask)
    wr, wi = _load_complex(w_ptr, j, mask)
    dr = wr - ear
    di = wi - eai
    # Masked lanes hold zeros; keep their denominator away from 0.
    dr = tl.where(mask, dr, 1.0)
    scale = 1.0 / (dr * dr + di * di)
    return cbr, cbi, car, cai, ebr, ebi, dr * scale, -di * scale


@triton.jit
def _combine_fwd_kernel(s_ptr, w_ptr, out_ptr, n, F, BLOCK: tl.constexpr):
    offs, j, mask = _frequency_block(F, BLOCK)
    cbr, cbi, car, cai, ebr, ebi, rr, ri = _ratio_terms(s_ptr, w_ptr, n, F, offs, j, mask)
    pr = car * ebr - cai * ebi  # Q(c̃,a) Q(e_d,b)
    pi = car * ebi + cai * ebr
    _store_complex(out_ptr, offs, cbr + pr * rr - pi * ri, cbi + pr * ri + pi * rr, mask)


@triton.jit
def _combine_bwd_kernel(s_ptr, w_ptr, g_ptr, grad_ptr, n, F, BLOCK: tl.constexpr):
    offs, j, mask = _frequency_block(F, BLOCK)
    plane = tl.cast(n, tl.int64) * F
    cbr, cbi, car, cai, ebr, ebi, rr, ri = _ratio_terms(s_ptr, w_ptr, n, F, offs, j, mask)
    gr, gi = _load_complex(g_ptr, offs, mask)
    tr = ebr * rr - ebi * ri  # t = Q(e_d,b) r
    ti = ebr * ri + ebi * rr
    ur = car * rr - cai * ri  # u = Q(c̃,a) r
    ui = car * ri + cai * rr
    vr = ur * tr - ui * ti  # u t = Q(c̃,a) Q(e_d,b) r²
    vi = ur * ti + ui * tr
    # g · conj(x) = (gr xr + gi xi) + i (gi xr - gr xi)
    _store_complex(grad_ptr, offs, gr, gi, mask)
    _store_complex(grad_ptr, offs + plane, gr * tr + gi * ti, gi * tr - gr * ti, mask)
    _store_complex(grad_ptr, offs + 2 * plane, gr * ur + gi * ui, gi * ur - gr * ui, mask)
    _store_complex(grad_ptr, offs + 3 * plane, gr * vr + gi * vi, gi * vr - gr * vi, mask)


def _roots(L: int, F: int, like: torch.Tensor) -> torch.Tensor:
    """w_j = exp(2πij/L), j < F, as an (F, 2) real view in the spectra's precision."""
    return torch.view_as_real(inverse_roots(L, F, like.real.dtype, like.device)).contiguous()


def _grid(n: int, F: int) -> tuple[int]:
    return (n * math.ceil(F / BLOCK),)


class _Combine(torch.autograd.Function):
    # forward and setup_context apart: torch.func.vjp (the companion kernel's backward under
    # torch.compile) accepts only Functions of this form
    @staticmethod
    def forward(spectra: torch.Tensor, L: int) -> torch.Tensor:
        spectra = spectra.contiguous()
        _, n, F = spectra.shape
        out = torch.empty(n, F, dtype=spectra.dtype, device=spectra.device)
        with _launch.device_guard(spectra):
            _combine_fwd_kernel[_grid(n, F)](
                torch.view_as_real(spectra), _roots(L, F, spectra), torch.view_as_real(out), n, F, BLOCK=BLOCK
            )
        return out

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        spectra, ctx.L = inputs
        ctx.save_for_backward(spectra)

    @staticmethod
    @first_order_only("companion_kernel (triton)")
    def backward(ctx, grad: torch.Tensor):
        spectra = ctx.saved_tensors[0].contiguous()
        _, n, F = spectra.shape
        grad = grad.resolve_conj().contiguous()
        out = torch.empty_like(spectra)
        with _launch.device_guard(spectra):
            _combine_bwd_kernel[_grid(n, F)](
                torch.view_as_real(spectra), _roots(ctx.L, F, spectra), torch.view_as_real(grad),
                torch.view_as_real(out), n, F, BLOCK=BLOCK,
            )
        return out, None


def combine_spectra_triton(spectra: torch.Tensor, L: int) -> torch.Tensor:
    """Fused K̂ from (4, n, F) complex spectra: (n, F), differentiable."""
    return _Combine.apply(spectra, int(L))


def companion_kernel_triton(a, b, c, L: int, method: str = "fft") -> torch.Tensor:
    """(n, L) kernel, as :func:`companion_kernel_torch` with the fused spectral combination.

    ``method="series"`` has no fused step and runs the torch path as it is."""
    return companion_kernel_torch(a, b, c, L, method=method, combine=combine_spectra_triton)
