"""kernels.linear_scan, Triton backend: forward and backward against the float64 loop.

On a CPU-only machine the kernel runs in the Triton interpreter (conftest sets
TRITON_INTERPRET=1), which steps through every scan combine in Python: shapes here stay
small. On a CUDA machine the same tests run compiled, and the CUDA-only tests at the end
check larger shapes against the torch backend.
"""

import importlib

import pytest
import torch
from compiled_like_eager import assert_compiled_like_eager
from devices import TRITON_DEVICE, requires_cuda
from reference import (
    constant_a_near_unit_circle,
    linear_recurrence,
    linear_scan_inputs,
    scan_errors_against_complex128,
)
from tolerances import assert_close, assert_close_summed

import kernels
from kernels import linear_scan, select_backend
from kernels.linear_scan.triton_op import _forward_op

scan_pkg = importlib.import_module("kernels.linear_scan")
pytestmark = pytest.mark.skipif("triton" not in scan_pkg._IMPLEMENTATIONS, reason="triton is not installed")
if "triton" in scan_pkg._IMPLEMENTATIONS:
    ltr = importlib.import_module("kernels.linear_scan.triton")

C128 = torch.complex128


def results(a0, b0, h00, reverse, weight, backend=None, device="cpu"):
    """(h, grad a, grad b, grad h0) of Re sum(h * weight), on CPU; backend None: the oracle."""
    leaves = [None if t is None else t.detach().to(device).requires_grad_(True) for t in (a0, b0, h00)]
    if backend is None:
        h = linear_recurrence(*leaves, reverse=reverse)
    else:
        h = linear_scan(*leaves, reverse=reverse, backend=backend)
    if h.requires_grad:
        (h * weight.to(device=device, dtype=h.dtype)).real.sum().backward()
    grads = [None if t is None else (torch.zeros_like(t) if t.grad is None else t.grad) for t in leaves]
    return [t if t is None else t.detach().cpu() for t in [h] + grads]


def check(a, b, h0, reverse, backend="triton", device=TRITON_DEVICE, oracle=None):
    """Compare with the float64 loop (or ``oracle`` results) at the tolerance of b's dtype."""
    weight = torch.randn(b.shape, dtype=C128 if b.is_complex() else torch.float64)
    got = results(a, b, h0, reverse, weight, backend, device)
    wide = [None if t is None else t.to(C128 if t.is_complex() else torch.float64) for t in (a, b, h0)]
    want = oracle(*wide, reverse, weight) if oracle else results(*wide, reverse, weight)
    assert got[0].shape == b.shape and got[0].dtype == b.dtype
    for name, x, y, leaf in zip(["h", "grad a", "grad b", "grad h0"], got, want, (b, a, b, h0)):
        if leaf is None:
            continue
        assert x.dtype == leaf.dtype and x.shape == leaf.shape, name
        # grad a of a shared a (P,) sums B·L terms: compared relative to its largest entry.
        compare = assert_close_summed if name == "grad a" and a.dim() == 1 else assert_close
        compare(x, y, dtype=leaf.dtype, msg=name)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks smaller than the shapes: several tiles along L and several channel blocks."""
    monkeypatch.setattr(ltr, "BLOCK_L", 8)
    monkeypatch.setattr(ltr, "MIN_BLOCK", 8)
    monkeypatch.setattr(ltr, "BLOCK_P", 4)


# (L, P, a of shape (P,), reverse, h0): every option on and off, tiles with and without tails.
CASES = [
    (1, 3, False, False, False),
    (7, 5, True, True, True),
    (33, 5, False, True, False),
    (64, 3, True, False, True),
    (65, 3, False, False, True),
    (130, 3, True, True, False),
    (129, 2, False, True, True),
]
DTYPES = {"real": (torch.float64, None), "complex": (C128, None), "real-a-complex-b": (C128, torch.float64)}


@pytest.mark.parametrize("L, P, const, reverse, with_h0", CASES)
@pytest.mark.parametrize("kind", DTYPES)
def test_matches_oracle_float64(L, P, const, reverse, with_h0, kind):
    torch.manual_seed(L)
    dtype, a_dtype = DTYPES[kind]
    a, b, h0 = linear_scan_inputs(2, L, P, dtype, a_dtype=a_dtype, const=const, h0=with_h0)
    check(a, b, h0, reverse)


@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_small_blocks(small_blocks, const, reverse):
    torch.manual_seed(1)
    a, b, h0 = linear_scan_inputs(2, 37, 7, C128, const=const)
    check(a, b, h0, reverse)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.complex64, torch.float16, torch.bfloat16], ids=str
)
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
def test_low_precision_matches_oracle(dtype, const):
    # The oracle sees exactly the rounded inputs; the tolerance is the one of dtype.
    torch.manual_seed(2)
    a, b, h0 = linear_scan_inputs(2, 70, 3, dtype, const=const)
    check(a, b, h0, reverse=const)


@pytest.mark.parametrize("mag", [(1e-6, 1e-3), (1 - 1e-6, 1.0)], ids=["near-0", "near-1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=str)
def test_extreme_magnitudes(mag, dtype):
    torch.manual_seed(3)
    a, b, h0 = linear_scan_inputs(2, 100, 2, dtype, mag=mag)
    check(a, b, h0, reverse=False)


@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradcheck(const, reverse):
    torch.manual_seed(4)
    a, b, h0 = (t.to(TRITON_DEVICE).requires_grad_(True) for t in linear_scan_inputs(2, 5, 2, C128, const=const))
    assert torch.autograd.gradcheck(
        lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, backend="triton"), (a, b, h0), fast_mode=True
    )


def test_zero_length_and_gradients():
    torch.manual_seed(5)
    a, b, h0 = (t.to(TRITON_DEVICE).requires_grad_(True) for t in linear_scan_inputs(2, 0, 3, C128, const=True))
    h = linear_scan(a, b, h0, backend="triton")
    assert h.shape == (2, 0, 3)
    h.sum().abs().backward()
    for t in (a, h0):
        assert t.grad is None or torch.all(t.grad == 0)


def test_non_contiguous_conjugated_inputs_and_broadcast_gradient():
    torch.manual_seed(6)
    a, b, h0 = linear_scan_inputs(3, 20, 4)
    # The views are made on the kernel's device: a copy to another device drops the conj bit.
    a_view = a.to(TRITON_DEVICE).transpose(0, 2).contiguous().transpose(0, 2).conj()  # strided, conj bit
    b_view = b.to(TRITON_DEVICE).transpose(1, 2).contiguous().transpose(1, 2)
    assert not b_view.is_contiguous() and a_view.is_conj()
    h = linear_scan(a_view, b_view, h0.to(TRITON_DEVICE), backend="triton")
    assert_close(h.cpu(), linear_recurrence(a.conj(), b, h0))
    # The gradient of sum() arrives as an expanded (stride 0) tensor.
    b_leaf = b.detach().to(TRITON_DEVICE).requires_grad_(True)
    linear_scan(a.to(TRITON_DEVICE), b_leaf, backend="triton").sum().real.backward()
    b_ref = b.detach().clone().requires_grad_(True)
    linear_recurrence(a, b_ref).sum().real.backward()
    assert_close(b_leaf.grad.cpu(), b_ref.grad)


def test_use_backend_runs_the_kernel():
    torch.manual_seed(7)
    a, b, h0 = linear_scan_inputs(2, 9, 3)
    with kernels.use_backend("triton"):
        h = linear_scan(a.to(TRITON_DEVICE), b.to(TRITON_DEVICE), h0.to(TRITON_DEVICE))
    assert_close(h.cpu(), linear_recurrence(a, b, h0))


class _FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports itself as CUDA, to test the routing rule without a GPU."""

    @property
    def is_cuda(self):
        return True


def test_dispatch_routes_cuda_tensors_to_triton():
    t = torch.zeros(2, 3, 4).as_subclass(_FakeCudaTensor)
    impls = scan_pkg._IMPLEMENTATIONS
    assert select_backend("linear_scan", impls, None, t, t) is impls["triton"]
    cpu = torch.zeros(2, 3, 4)
    assert select_backend("linear_scan", impls, None, cpu, cpu) is impls["torch"]


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    a, b, h0 = linear_scan_inputs(2, 5, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        linear_scan(a, b, h0, backend="triton")


def torch_oracle(a, b, h0, reverse, weight):
    """The float64 torch backend on CUDA (itself checked against the loop), for large shapes."""
    return results(a, b, h0, reverse, weight, "torch", "cuda")


@pytest.mark.parametrize("reverse", [False, True])
def test_constant_a_near_the_unit_circle_keeps_its_error_at_float32_rounding(reverse):
    """As for the torch path: a constant a (P,) with 1 - |a| in [1e-7, 1e-5]. The product of a
    over a tile (a^64 in float32) was rounded the same way in every tile, so the carry's error
    grew linearly in L (8.8e-6 at L = 4096, 5x a complex64 loop); the carry and a^k are now
    float64, forward and backward."""
    a, b, weight = constant_a_near_unit_circle(2048)
    errors = scan_errors_against_complex128(a, b, weight, reverse, "triton", device=TRITON_DEVICE)
    assert errors[0] < 2e-6
    for name, error in zip("ab", errors[1:]):
        assert error < 2e-6, name


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_constant_real_a_of_either_sign_matches_the_loop(sign):
    """The float64 carry's power a^k for a real constant a, negative included (odd k)."""
    gen = torch.Generator().manual_seed(9)
    a = sign * (0.5 + 0.5 * torch.rand(3, generator=gen, dtype=torch.float64))
    b = torch.randn(2, 150, 3, generator=gen, dtype=torch.float64)
    h = linear_scan(a.float().to(TRITON_DEVICE), b.float().to(TRITON_DEVICE), backend="triton")
    assert_close(h.cpu(), linear_recurrence(a.float().double(), b.float().double()), dtype=torch.float32)

@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("const", [False, True], ids=["a-BLP", "a-P"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("B, L, P", [(4, 4096, 256), (3, 1000, 33)])
def test_cuda_large_shapes_match_torch_float64(dtype, const, reverse, B, L, P):
    torch.manual_seed(8)
    a, b, h0 = linear_scan_inputs(B, L, P, dtype, const=const, mag=(0.9, 1.0))
    check(a, b, h0, reverse, device="cuda", oracle=torch_oracle)


@requires_cuda
def test_cuda_default_backend_is_triton():
    torch.manual_seed(9)
    a, b, h0 = (t.cuda() for t in linear_scan_inputs(2, 300, 40, torch.complex64))
    h = linear_scan(a, b, h0)
    assert h.is_cuda and torch.equal(h, linear_scan(a, b, h0, backend="triton"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_gradients_come_from_float32_states(dtype):
    """The states saved for the backward are float32 (only the output is rounded), so the
    Triton gradients agree with the torch path's, which keeps float32 states too, far more
    closely than the dtype's rounding (bf16 states used to double the grad-a error)."""
    torch.manual_seed(7)
    a, b, h0 = linear_scan_inputs(2, 11, 3, dtype)
    weight = torch.randn(b.shape, dtype=torch.float64)
    tri = results(a, b, h0, False, weight, "triton", TRITON_DEVICE)
    ref = results(a, b, h0, False, weight, "torch")
    assert tri[0].dtype == dtype
    # the same float32 states rounded once: equal in the interpreter; compiled on a GPU the
    # float32 sums may round differently in the last bit, so one ulp of the output dtype
    torch.testing.assert_close(tri[0], ref[0], rtol=torch.finfo(dtype).eps, atol=1e-6)
    for x, y in zip(tri[1:], ref[1:]):
        torch.testing.assert_close(x.float(), y.float(), rtol=1e-2 if dtype == torch.bfloat16 else 2e-3, atol=1e-3)


# ----------------------------------------------------------------------------- torch.compile

WITH_HALF = {**DTYPES, "float16": (torch.float16, None)}


@pytest.mark.parametrize("kind, L, const, reverse, with_h0, grad", [
    ("real", 7, False, False, True, True),
    ("complex", 1, True, True, False, True),
    ("real-a-complex-b", 5, False, True, True, True),
    ("float16", 6, True, False, True, True),
    ("real", 9, False, True, False, False),  # inference: nothing to differentiate
])
def test_op_passes_opcheck(kind, L, const, reverse, with_h0, grad):
    """The forward op (and through its autograd, the backward op): fake outputs like the
    real ones, autograd registered, and traced by AOTAutograd with static and dynamic shapes."""
    torch.manual_seed(10)
    dtype, a_dtype = WITH_HALF[kind]
    a, b, h0 = linear_scan_inputs(2, L, 3, dtype, a_dtype=a_dtype, const=const, h0=with_h0)
    a = a.reshape(1, 1, -1) if const else a  # the op's a is (B|1, L|1, P)
    args = [None if t is None else t.to(TRITON_DEVICE).requires_grad_(grad) for t in (a, b, h0)]
    torch.library.opcheck(_forward_op, (*args, reverse))


@pytest.mark.parametrize("kind, const", [("real-a-complex-b", True), ("float16", False)])
def test_compiles_to_one_graph_with_eager_values_and_gradients(kind, const):
    """Under torch.compile the scan is the op pair, so a function of it compiles whole
    (fullgraph), and gives eager's output and gradients of a, b and h0, at a second length too."""
    torch.manual_seed(11)
    dtype, a_dtype = WITH_HALF[kind]

    def scan(a, b, h0):
        return linear_scan(a * 0.9, b, h0, reverse=True, backend="triton")

    assert_compiled_like_eager(scan, *(
        [t.to(TRITON_DEVICE) for t in linear_scan_inputs(2, L, 3, dtype, a_dtype=a_dtype, const=const)]
        for L in (9, 14)
    ))
