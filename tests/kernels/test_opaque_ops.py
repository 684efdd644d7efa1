"""The custom ops that stand for the chunked PyTorch scans, the Vandermonde kernel and the
companion kernel and lag state under ``torch.compile`` pass
``torch.library.opcheck``: their fake (shape-only) outputs match the real ones, their
registered autograd gives the gradients of a numerical check, and they survive
TorchDynamo/AOTAutograd tracing, also with only some inputs differentiable; the backward
ops' fake outputs are their real gradients' shapes, dtypes and layouts. Each case runs the
op's own forward and backward code, so the numbers themselves are those the eager tests
check against the float64 loops."""

from __future__ import annotations

import importlib

import pytest
import torch
from fake_outputs import assert_fake_outputs_like_real, backward_op_calls
from torch.library import opcheck

from kernels.linear_scan.pytorch import _linear_scan_op
from kernels.selective_scan.pytorch import _selective_scan_op
from kernels.selective_scan_2d.pytorch import _scan_2d_op
from kernels.vandermonde.pytorch import _vandermonde_op


def draw(generator, *shape, dtype=torch.float64, grad=True):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(grad)


@pytest.mark.parametrize("complex_a, reverse, constant_a, with_h0", [
    (False, False, False, True),
    (False, True, True, False),
    (True, False, True, True),
    (True, True, False, False),
])
def test_linear_scan_op(complex_a, reverse, constant_a, with_h0):
    g = torch.Generator().manual_seed(0)
    dtype = torch.complex128 if complex_a else torch.float64
    a = draw(g, 1, 1, 5, dtype=dtype) if constant_a else draw(g, 2, 19, 5, dtype=dtype)
    h0 = draw(g, 2, 5, dtype=dtype) if with_h0 else None
    opcheck(_linear_scan_op, (a, draw(g, 2, 19, 5, dtype=dtype), h0, reverse))


@pytest.mark.parametrize("differentiable", ["a", "b", "h0"])
def test_linear_scan_op_with_one_input_differentiable(differentiable):
    """The backward op computes only the needed gradients and hands each to its own input."""
    g = torch.Generator().manual_seed(0)
    inputs = dict(a=draw(g, 2, 19, 5, grad=False), b=draw(g, 2, 19, 5, grad=False), h0=draw(g, 2, 5, grad=False))
    inputs[differentiable].requires_grad_()
    opcheck(_linear_scan_op, (*inputs.values(), False))


def selective_scan_args(complex_A, groups, options, grad, seed=1):
    """The op's arguments: Bsz, D, L, N = 2, 4, 37, 3; options "none", "all" or "constant C"."""
    g = torch.Generator().manual_seed(seed)
    Bsz, Dm, L, N = 2, 4, 37, 3  # L: two whole chunks and a part
    state = torch.complex128 if complex_A else torch.float64
    every = options == "all"
    A = (-torch.rand(Dm, N, generator=g, dtype=torch.float64)).to(state).requires_grad_(grad)
    B = draw(g, Bsz, groups, N, L, dtype=state, grad=grad)
    C = draw(g, Dm, N, dtype=state, grad=grad) if options == "constant C" else draw(g, Bsz, groups, N, L, dtype=state, grad=grad)
    D, bias = (draw(g, Dm, grad=grad), draw(g, Dm, grad=grad)) if options != "none" else (None, None)
    z = draw(g, Bsz, Dm, L, grad=grad) if every else None
    h0 = draw(g, Bsz, Dm, N, dtype=state, grad=grad) if every else None
    u, delta = draw(g, Bsz, Dm, L, grad=grad), draw(g, Bsz, Dm, L, grad=grad)
    return (u, delta, A, B, C, D, z, bias, h0, options != "none", groups, grad)


@pytest.mark.parametrize("complex_A, groups, options, grad", [
    (False, 1, "none", True),
    (False, 2, "all", True),
    (True, 2, "constant C", True),
    (True, 1, "all", True),
    (False, 1, "all", False),  # inference: nothing saved for a backward
])
def test_selective_scan_op(complex_A, groups, options, grad):
    opcheck(_selective_scan_op, selective_scan_args(complex_A, groups, options, grad))


@pytest.mark.parametrize("groups", [1, 3])
def test_selective_scan_2d_op(groups):
    g = torch.Generator().manual_seed(2)
    Bsz, Dm, H, W, N = 2, 3, 4, 5, 2
    u, dt = draw(g, Bsz, Dm, H, W), torch.rand(Bsz, Dm, H, W, generator=g, dtype=torch.float64).requires_grad_()
    A = (-torch.rand(Dm, N, generator=g, dtype=torch.float64)).requires_grad_()
    opcheck(_scan_2d_op, (u, dt, A, draw(g, Bsz, groups, N, H, W), draw(g, Bsz, groups, N, H, W)))


@pytest.mark.parametrize("C, L", [(1, 1), (2, 37), (1, 0)])
def test_vandermonde_op(C, L):
    g = torch.Generator().manual_seed(3)
    v = torch.randn(C, 3, 4, dtype=torch.complex128, generator=g).requires_grad_()
    x = torch.complex(-torch.rand(3, 4, dtype=torch.float64, generator=g), torch.randn(3, 4, dtype=torch.float64, generator=g))
    opcheck(_vandermonde_op, (v, x.requires_grad_(), L))


@pytest.mark.parametrize("differentiable", ["v", "x"])
def test_vandermonde_op_with_one_input_differentiable(differentiable):
    """The backward op computes only the needed gradient and hands it to its own input."""
    g = torch.Generator().manual_seed(3)
    v = torch.randn(2, 3, 4, dtype=torch.complex128, generator=g)
    x = torch.complex(-torch.rand(3, 4, dtype=torch.float64, generator=g), torch.randn(3, 4, dtype=torch.float64, generator=g))
    dict(v=v, x=x)[differentiable].requires_grad_()
    opcheck(_vandermonde_op, (v, x, 9))


def companion_rows(generator, dtype=torch.float64):
    """a, b, c (4, 5): two rows the spectral formula takes, one with a large ||a||_1 (the
    blocked recurrence) and one with an eigenvalue at z = 1, a root of unity (the fft
    method's singular rows go to the series method), so the op's choice of formula, made
    from the values, differs per row."""
    a = 0.1 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
    a[1] *= 40.0
    a[2] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # χ = z^4 (z - 1)
    b, c = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    return tuple(t.to(dtype).requires_grad_() for t in (a, b, c))


@pytest.mark.parametrize("L, method", [(1, "fft"), (7, "fft"), (20, "series")])
def test_companion_kernel_op(L, method):
    from kernels.companion_kernel.compiled import _forward_op

    opcheck(_forward_op, (*companion_rows(torch.Generator().manual_seed(4)), L, method, "torch"))


def test_companion_lag_state_op():
    from kernels.companion_kernel.lag_state import _forward_op

    g = torch.Generator().manual_seed(5)
    a, b, _ = companion_rows(g)
    u = draw(g, 2, 4, 9)
    opcheck(_forward_op, (a, b, u))


def backward_through(op, args) -> None:
    """op(*args), then a backward from all its differentiable outputs."""
    outs = op(*args)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    torch.autograd.backward([o.real.sum() for o in outs if o.requires_grad])


def _backward_cases():
    g = torch.Generator().manual_seed(6)
    v = torch.randn(2, 3, 4, dtype=torch.complex128, generator=g).requires_grad_()
    x = torch.complex(-torch.rand(3, 4, dtype=torch.float64, generator=g), torch.randn(3, 4, dtype=torch.float64, generator=g))
    a, b, _ = companion_rows(g)
    return {
        # complex a and b, h0, from the end
        "linear_scan": ("kernels.linear_scan.pytorch", "_linear_scan_backward_op", _linear_scan_op,
                        (draw(g, 2, 19, 5, dtype=torch.complex128), draw(g, 2, 19, 5, dtype=torch.complex128),
                         draw(g, 2, 5, dtype=torch.complex128), True)),
        # complex A, B, C, h0 with real u, delta, D, z, bias: gradients of two dtypes
        "selective_scan-complex": ("kernels.selective_scan.pytorch", "_selective_scan_backward_op", _selective_scan_op,
                                   selective_scan_args(True, 1, "all", True)),
        "selective_scan-constant-C": ("kernels.selective_scan.pytorch", "_selective_scan_backward_op",
                                      _selective_scan_op, selective_scan_args(False, 2, "constant C", True)),
        "selective_scan_2d": ("kernels.selective_scan_2d.pytorch", "_scan_2d_backward_op", _scan_2d_op,
                              (draw(g, 2, 3, 4, 5), draw(g, 2, 3, 4, 5), draw(g, 3, 2), draw(g, 2, 3, 2, 4, 5),
                               draw(g, 2, 3, 2, 4, 5))),
        "vandermonde": ("kernels.vandermonde.pytorch", "_vandermonde_backward_op", _vandermonde_op,
                        (v, x.requires_grad_(), 11)),
        "companion_kernel": ("kernels.companion_kernel.compiled", "_backward_op", None,
                             (*companion_rows(g), 7, "fft", "torch")),
        "companion_lag_state": ("kernels.companion_kernel.lag_state", "_backward_op", None, (a, b, draw(g, 2, 4, 9))),
    }


@pytest.mark.parametrize("case", sorted(_backward_cases()))
def test_backward_op_fake_outputs_are_its_real_ones(case):
    """Each op's backward op, called as the forward op's autograd calls it: its fake outputs
    (what the compiler plans with) have the real gradients' shapes, dtypes and layout. opcheck
    on the forward op runs the backward op inside AOTAutograd only, where a wrong fake dtype
    or a strided real gradient (from a transposed or expanded intermediate) passes unseen."""
    module_name, name, op, args = _backward_cases()[case]
    module = importlib.import_module(module_name)
    op = op or module._forward_op
    for backward_op, backward_args in backward_op_calls(module, name, lambda: backward_through(op, args)):
        assert_fake_outputs_like_real(backward_op, backward_args)
