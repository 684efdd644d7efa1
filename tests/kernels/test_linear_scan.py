"""kernels.linear_scan: h[:, t] = a[:, t] h[:, t-1] + b[:, t] (torch and reference backends)."""

import importlib

import pytest
import torch
from reference import (
    constant_a_near_unit_circle,
    linear_recurrence,
    linear_scan_inputs,
    scan_errors_against_complex128,
)
from tolerances import assert_close, assert_close_summed

import kernels
from kernels import linear_scan

lpt = importlib.import_module("kernels.linear_scan.pytorch")
scan_pkg = importlib.import_module("kernels.linear_scan")  # the package (kernels.linear_scan is the op)

BACKENDS = ["torch", "reference"]
LENGTHS = [0, 1, 7, 33, 100, 129]
C128 = torch.complex128


def run(a0, b0, h00, reverse, backend, weight):
    """(h, grad a, grad b, grad h0) of Re sum(h * weight); inputs that get no grad give zeros."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (a0, b0, h00)]
    h = linear_scan(*leaves, reverse=reverse, backend=backend)
    (h * weight.to(h.dtype)).real.sum().backward()
    grads = [None if t is None else (torch.zeros_like(t) if t.grad is None else t.grad) for t in leaves]
    return [h.detach()] + grads


def oracle(a0, b0, h00, reverse, weight):
    """The same four results from the float64 loop in tests/reference.py."""
    leaves = [
        None if t is None else t.detach().to(C128 if t.is_complex() else torch.float64).requires_grad_(True)
        for t in (a0, b0, h00)
    ]
    h = linear_recurrence(*leaves, reverse=reverse)
    if h.requires_grad:  # not when L = 0
        (h * weight.to(h.dtype)).real.sum().backward()
    grads = [None if t is None else (torch.zeros_like(t) if t.grad is None else t.grad) for t in leaves]
    return [h.detach()] + grads


def check_against_oracle(a, b, h0, reverse, backend, dtype=None):
    weight = torch.randn(b.shape, dtype=C128 if b.is_complex() else torch.float64)
    got = run(a, b, h0, reverse, backend, weight)
    want = oracle(a, b, h0, reverse, weight)
    assert got[0].shape == b.shape and got[0].dtype == b.dtype
    for name, x, y, leaf in zip(["h", "grad a", "grad b", "grad h0"], got, want, (b, a, b, h0)):
        if leaf is None:
            continue
        assert x.dtype == leaf.dtype and x.shape == leaf.shape, name
        # grad a of a shared a (P,) sums B·L terms: compared relative to its largest entry.
        compare = assert_close_summed if name == "grad a" and a.dim() == 1 else assert_close
        compare(x, y, dtype=dtype or leaf.dtype, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float64, C128], ids=["real", "complex"])
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no-h0", "h0"])
def test_matches_oracle_float64(backend, L, dtype, const, reverse, with_h0):
    torch.manual_seed(L)
    a, b, h0 = linear_scan_inputs(2, L, 5, dtype, const=const, h0=with_h0)
    check_against_oracle(a, b, h0, reverse, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_real_a_drives_complex_b(backend, const, reverse):
    torch.manual_seed(1)
    a, b, h0 = linear_scan_inputs(2, 37, 3, C128, a_dtype=torch.float64, const=const)
    check_against_oracle(a, b, h0, reverse, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.complex64, torch.float16, torch.bfloat16], ids=str
)
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
def test_low_precision_matches_oracle(backend, dtype, const):
    # The oracle sees exactly the rounded inputs; the tolerance is the one of dtype.
    torch.manual_seed(2)
    a, b, h0 = linear_scan_inputs(2, 129, 7, dtype, const=const)
    for reverse in (False, True):
        check_against_oracle(a, b, h0, reverse, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_half_precision_is_accumulated_in_float32(backend, dtype, const, reverse):
    """With a = 1 the scan is a running sum. Accumulated in float32, each of 2048 sums of
    half-precision inputs is that sum rounded once to ``dtype`` (within one ulp of the exact
    float64 sum); accumulated in ``dtype`` itself, the rounding of every step adds up to
    several ulps. The tolerances of the other tests could not tell the two apart."""
    torch.manual_seed(12)
    b = (0.25 + 0.5 * torch.rand(2, 2048, 3, dtype=torch.float64)).to(dtype)
    a = torch.ones(3 if const else b.shape, dtype=dtype)
    exact = b.double().flip(1).cumsum(1).flip(1) if reverse else b.double().cumsum(1)
    h = linear_scan(a, b, reverse=reverse, backend=backend)
    assert h.dtype == dtype
    error = ((h.double() - exact).abs() / exact).max().item()
    assert error <= torch.finfo(dtype).eps, error


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mag", [(1e-6, 1e-3), (1 - 1e-6, 1.0), (1.0, 1.0)], ids=["near-0", "near-1", "unit"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.complex128], ids=str)
def test_extreme_magnitudes(backend, mag, dtype):
    torch.manual_seed(3)
    a, b, h0 = linear_scan_inputs(2, 100, 3, dtype, mag=mag)
    check_against_oracle(a, b, h0, False, backend)


@pytest.mark.parametrize("mag", [(1e-30, 1e-20), (1 - 1e-7, 1.0)], ids=["tiny", "near-1"])
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
def test_long_sequence_torch_backend(mag, const):
    # Several levels of chunks; products of tiny |a| underflow to 0 without harm (no division).
    torch.manual_seed(4)
    a, b, h0 = linear_scan_inputs(1, 3000, 2, C128, const=const, mag=mag)
    check_against_oracle(a, b, h0, True, "torch")
    a32, b32, h32 = (t.to(torch.complex64) for t in (a, b, h0))
    h = linear_scan(a32, b32, h32, backend="torch")
    assert torch.isfinite(torch.view_as_real(h)).all()
    # 3000 float32 steps with |a| ~ 1: rounding errors add up along the scan (as in a loop).
    assert_close_summed(h, linear_recurrence(a32, b32, h32))


@pytest.mark.parametrize("reverse", [False, True])
def test_constant_a_near_the_unit_circle_keeps_its_error_at_float32_rounding(reverse):
    """A constant a (P,) with 1 - |a| in [1e-7, 1e-5] (S5's shape): the chunk power a^16 was
    rounded to complex64 once and reused L/16 times, so its rounding added up coherently and
    the error grew linearly in L (1.5e-5 at L = 16384, 3x a complex64 loop). The carry scan
    now runs in complex128: forward and gradients stay at a few float32 ulps."""
    a, b, weight = constant_a_near_unit_circle(16384)
    torch.testing.assert_close(linear_scan(a.to(C128), b.to(C128), reverse=reverse, backend="torch"),
                               linear_recurrence(a.to(C128), b.to(C128), None, reverse=reverse))
    errors = scan_errors_against_complex128(a, b, weight, reverse, "torch")
    assert errors[0] < 2e-6
    for name, error in zip("ab", errors[1:]):
        assert error < 2e-6, name

@pytest.mark.parametrize("chunk", [2, 3, 5])
@pytest.mark.parametrize("L", [1, 2, 9, 10, 64, 101])
def test_every_chunk_size_and_tail(monkeypatch, chunk, L):
    # Tiny chunks: deep recursion over chunk ends, and tails of every length.
    monkeypatch.setattr(lpt, "CHUNK", chunk)
    torch.manual_seed(5)
    for const in (False, True):
        for reverse in (False, True):
            a, b, h0 = linear_scan_inputs(2, L, 3, C128, const=const)
            check_against_oracle(a, b, h0, reverse, "torch")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, C128], ids=["real", "complex"])
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck(monkeypatch, backend, dtype, const, reverse):
    monkeypatch.setattr(lpt, "CHUNK", 2)
    torch.manual_seed(6)
    a, b, h0 = (t.requires_grad_(True) for t in linear_scan_inputs(2, 5, 2, dtype, const=const))
    assert torch.autograd.gradcheck(
        lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, backend=backend), (a, b, h0)
    )


def test_gradcheck_real_a_complex_b():
    torch.manual_seed(7)
    a, b, h0 = (t.requires_grad_(True) for t in linear_scan_inputs(2, 6, 2, C128, a_dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, backend="torch"), (a, b, h0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length(backend):
    torch.manual_seed(8)
    a, b, h0 = (t.requires_grad_(True) for t in linear_scan_inputs(2, 0, 3, C128, const=True))
    h = linear_scan(a, b, h0, backend=backend)
    assert h.shape == (2, 0, 3)
    grads = torch.autograd.grad(h.sum().abs(), (a, b, h0))  # in the graph, with zero gradients
    assert all(torch.all(g == 0) for g in grads)


def test_default_backend_on_cpu_is_torch_and_use_backend_forces_one(monkeypatch):
    torch.manual_seed(9)
    a, b, h0 = linear_scan_inputs(2, 9, 3)
    calls = []
    for name in BACKENDS:
        impl = scan_pkg._IMPLEMENTATIONS[name]
        monkeypatch.setitem(
            scan_pkg._IMPLEMENTATIONS, name, lambda *args, _n=name, _f=impl: calls.append(_n) or _f(*args)
        )
    linear_scan(a, b, h0)
    with kernels.use_backend("reference"):
        linear_scan(a, b, h0)
        linear_scan(a, b, h0, backend="torch")  # an explicit backend wins over the block
    linear_scan(a, b, h0)
    assert calls == ["torch", "reference", "torch", "torch"]


def test_backends_agree_on_non_contiguous_and_conjugated_inputs():
    torch.manual_seed(10)
    a, b, h0 = linear_scan_inputs(3, 20, 4)
    a_view = a.transpose(0, 2).contiguous().transpose(0, 2).conj()  # strided, conj bit
    b_view = b.transpose(1, 2).contiguous().transpose(1, 2)
    assert not b_view.is_contiguous() and a_view.is_conj()
    want = linear_recurrence(a.conj(), b, h0)
    for backend in BACKENDS:
        assert_close(linear_scan(a_view, b_view, h0, backend=backend), want)


def test_grad_only_for_inputs_that_require_it():
    torch.manual_seed(11)
    a, b, h0 = linear_scan_inputs(2, 40, 3)
    b.requires_grad_(True)
    linear_scan(a, b, h0, backend="torch").abs().sum().backward()
    assert b.grad is not None and torch.isfinite(torch.view_as_real(b.grad)).all()
    assert a.grad is None and h0.grad is None


def test_pytorch_path_is_not_a_loop_over_time(monkeypatch):
    # With chunk size T the Python loops run O(T log_T L) steps, not L.
    steps = []
    original = lpt._steps

    def counting(a, b, out, h, reverse):
        steps.append(b.shape[-2])
        return original(a, b, out, h, reverse)

    monkeypatch.setattr(lpt, "_steps", counting)
    a, b, h0 = linear_scan_inputs(1, 4096, 2)
    linear_scan(a, b, h0, backend="torch")
    assert sum(steps) <= 4 * lpt.CHUNK * 3


E = r"\(B, L, P\)"


@pytest.mark.parametrize(
    "a, b, h0, exc, pattern",
    [
        (torch.rand(2, 5, 3), torch.rand(5, 3), None, ValueError, E),
        (torch.rand(2, 5, 4), torch.rand(2, 5, 3), None, ValueError, r"\(P,\) = \(3,\)"),
        (torch.rand(4), torch.rand(2, 5, 3), None, ValueError, r"\(2, 5, 3\)"),
        (torch.rand(5, 3), torch.rand(2, 5, 3), None, ValueError, E),
        (torch.rand(3), torch.rand(2, 5, 3), torch.rand(3), ValueError, r"h0 of shape \(B, P\) = \(2, 3\)"),
        (torch.rand(3, dtype=C128), torch.rand(2, 5, 3, dtype=torch.float64), None, TypeError, "complex"),
        (torch.rand(3, dtype=torch.float64), torch.rand(2, 5, 3), None, TypeError, "precision"),
        (torch.rand(3), torch.rand(2, 5, 3), torch.rand(2, 3, dtype=torch.float64), TypeError, "h0"),
        (torch.ones(3, dtype=torch.int64), torch.ones(2, 5, 3, dtype=torch.int64), None, TypeError, "int64"),
        ([0.5, 0.5, 0.5], torch.rand(2, 5, 3), None, TypeError, "tensors"),
    ],
    ids=["b-rank", "a-width", "a-const-width", "a-rank", "h0-shape", "complex-a-real-b",
         "precision", "h0-dtype", "integer", "not-a-tensor"],
)
def test_bad_inputs_raise_clear_errors(a, b, h0, exc, pattern):
    with pytest.raises(exc, match=pattern):
        linear_scan(a, b, h0)


def test_unknown_backend_raises_value_error():
    a, b, h0 = linear_scan_inputs(2, 5, 3)
    with pytest.raises(ValueError, match="backend"):
        linear_scan(a, b, h0, backend="numpy")


def test_triton_backend_unavailable_names_available_backends(monkeypatch):
    a, b, h0 = linear_scan_inputs(2, 5, 3)
    monkeypatch.delitem(scan_pkg._IMPLEMENTATIONS, "triton", raising=False)
    with pytest.raises(ValueError, match="triton") as info:
        linear_scan(a, b, h0, backend="triton")
    assert "torch" in str(info.value) and "reference" in str(info.value)
