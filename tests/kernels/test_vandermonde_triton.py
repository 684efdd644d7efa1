"""kernels.vandermonde, Triton backend: forward and backward against the float64 oracles.

On a CPU-only machine the kernels run in the Triton interpreter (conftest sets
TRITON_INTERPRET=1); on a CUDA machine the same tests run compiled on the GPU.
"""

import importlib

import pytest
import torch
from compiled_like_eager import assert_compiled_like_eager
from devices import TRITON_DEVICE, requires_cuda
from reference import kernel_by_powers
from tolerances import assert_close

pytest.importorskip("triton")

from kernels import select_backend, vandermonde
from kernels.vandermonde import _IMPLEMENTATIONS
from kernels.vandermonde.triton_op import _forward_op

vtr = importlib.import_module("kernels.vandermonde.triton")


def modes(H, N, C=None, dtype=torch.complex128):
    """Random coefficients v ((H, N) or (C, H, N)) and stable log-eigenvalues x (H, N)."""
    v = torch.randn(*(() if C is None else (C,)), H, N, dtype=torch.complex128)
    x = torch.complex(-0.5 * torch.rand(H, N) - 0.01, 2.0 * torch.randn(H, N))
    return v.to(dtype), x.to(torch.complex128).to(dtype)


def oracle(v, x, L):
    """Float64 K from the power form, for v (H, N) or (C, H, N)."""
    z = torch.exp(x.cpu().to(torch.complex128))
    if v.dim() == 2:
        return kernel_by_powers(z, torch.ones_like(z), v.cpu(), L)
    return torch.stack([kernel_by_powers(z, torch.ones_like(z), vc.cpu(), L) for vc in v])


def triton_k(v, x, L):
    return vandermonde(v.to(TRITON_DEVICE), x.to(TRITON_DEVICE), L, backend="triton")


def grads(v0, x0, L, w, backend, device="cpu"):
    """(K, grad v, grad x) of sum(K * w); an input that does not reach K gets zeros."""
    v = v0.detach().clone().to(device).requires_grad_(True)
    x = x0.detach().clone().to(device).requires_grad_(True)
    K = vandermonde(v, x, L, backend=backend)
    (K * w.to(device=device, dtype=K.dtype)).sum().backward()
    out = tuple(torch.zeros_like(t) if t.grad is None else t.grad for t in (v, x))
    return (K.detach().cpu(),) + tuple(g.cpu() for g in out)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks smaller than the shapes, so the N loop takes several chunks and L has tails."""
    monkeypatch.setattr(vtr, "BLOCK_L", 16)
    monkeypatch.setattr(vtr, "BLOCK_N", 2)


SHAPES = [(3, 5, 1), (5, 7, 70), (1, 1, 33), (4, 3, 65), (2, 7, 64)]


@pytest.mark.parametrize("H, N, L", SHAPES)
def test_forward_matches_oracle_float64(H, N, L):
    torch.manual_seed(0)
    v, x = modes(H, N)
    K = triton_k(v, x, L)
    assert K.shape == (H, L) and K.dtype == torch.float64
    assert_close(K.cpu(), oracle(v, x, L))


@pytest.mark.parametrize("H, N, L", SHAPES)
def test_forward_float32_matches_oracle(H, N, L):
    torch.manual_seed(1)
    v, x = modes(H, N, dtype=torch.complex64)
    K = triton_k(v, x, L)
    assert K.dtype == torch.float32
    assert_close(K.cpu(), oracle(v, x, L), dtype=torch.float32)


@pytest.mark.parametrize("C", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_stacked_coefficients_share_modes(C, dtype):
    torch.manual_seed(2)
    v, x = modes(5, 7, C=C, dtype=dtype)
    K = triton_k(v, x, 70)
    assert K.shape == (C, 5, 70)
    assert_close(K.cpu(), oracle(v, x, 70), dtype=K.dtype)


def test_forward_with_small_blocks(small_blocks):
    torch.manual_seed(3)
    v, x = modes(3, 7, C=2)
    assert_close(triton_k(v, x, 37).cpu(), oracle(v, x, 37))


def test_growing_modes_match_exp_form():
    # Re x > 0: the definition exp(x l) itself, no stability assumption.
    torch.manual_seed(4)
    v, x = modes(3, 5)
    x = torch.complex(x.real.abs() * 0.05, x.imag)
    L = 33
    expected = torch.stack([2 * (v * torch.exp(x * float(i))).sum(-1).real for i in range(L)], -1)
    assert_close(triton_k(v, x, L).cpu(), expected)


def test_zero_length_and_gradients():
    torch.manual_seed(5)
    v, x = modes(3, 5, C=2)
    v = v.to(TRITON_DEVICE).requires_grad_(True)
    x = x.to(TRITON_DEVICE).requires_grad_(True)
    K = vandermonde(v, x, 0, backend="triton")
    assert K.shape == (2, 3, 0)
    K.sum().backward()
    assert torch.all(v.grad == 0) and torch.all(x.grad == 0)


def test_non_contiguous_and_conjugated_inputs():
    torch.manual_seed(6)
    v, x = modes(7, 5)
    # The views are made on the kernel's device: a copy to another device drops the conj bit.
    vd, xd = v.to(TRITON_DEVICE), x.to(TRITON_DEVICE)
    v_view, x_view = vd.t().contiguous().t().conj(), xd.t().contiguous().t()  # strided, conj bit
    assert not x_view.is_contiguous() and v_view.is_conj()
    assert_close(vandermonde(v_view, x_view, 19, backend="triton").cpu(), oracle(v.conj(), x, 19))


@pytest.mark.parametrize("C", [None, 1, 2])
@pytest.mark.parametrize("L", [1, 7, 70])
@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_grad_matches_reference_backend(C, L, dtype):
    torch.manual_seed(7)
    v0, x0 = modes(5, 7, C=C, dtype=dtype)
    w = torch.randn(*v0.shape[:-1], L, dtype=torch.float64)
    got = grads(v0, x0, L, w, "triton", TRITON_DEVICE)
    # The oracle sees exactly the (possibly rounded) inputs, in float64.
    want = grads(v0.to(torch.complex128), x0.to(torch.complex128), L, w, "reference")
    tol = torch.float32 if dtype == torch.complex64 else torch.float64
    assert got[0].dtype == v0.real.dtype and got[1].dtype == got[2].dtype == dtype
    for a, b in zip(got, want):
        assert_close(a, b, dtype=tol)


def test_grad_with_small_blocks(small_blocks):
    torch.manual_seed(8)
    v0, x0 = modes(3, 7, C=2)
    w = torch.randn(2, 3, 37, dtype=torch.float64)
    for a, b in zip(grads(v0, x0, 37, w, "triton", TRITON_DEVICE), grads(v0, x0, 37, w, "reference")):
        assert_close(a, b)


@pytest.mark.parametrize("C", [None, 2])
def test_gradcheck(C):
    torch.manual_seed(9)
    v, x = modes(2, 3, C=C)
    v = v.to(TRITON_DEVICE).requires_grad_(True)
    x = x.to(TRITON_DEVICE).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, x: vandermonde(v, x, 6, backend="triton"), (v, x), fast_mode=True
    )


def test_grad_only_for_inputs_that_require_it():
    torch.manual_seed(10)
    v, x = modes(3, 5)
    x = x.to(TRITON_DEVICE).requires_grad_(True)
    vandermonde(v.to(TRITON_DEVICE), x, 7, backend="triton").sum().backward()
    assert x.grad is not None and torch.isfinite(torch.view_as_real(x.grad)).all()


def test_grad_of_the_plain_sum_reads_an_expanded_upstream_gradient():
    """K.sum() hands the backward a stride-0 (expanded) gradient of ones. With g = 1 the mode
    sums have closed forms: S0 = sum_l z^l = (1 - z^L) / (1 - z) with z = exp(x), and
    S1 = sum_l l z^l (a float64 sum), so grad_v = 2 conj(S0), grad_x = 2 conj(sum_c v S1)."""
    torch.manual_seed(14)
    v0, x0 = modes(3, 5, C=2)
    L = 37
    v = v0.to(TRITON_DEVICE).requires_grad_(True)
    x = x0.to(TRITON_DEVICE).requires_grad_(True)
    K = vandermonde(v, x, L, backend="triton")
    grad_v, grad_x = torch.autograd.grad(K.sum(), (v, x))
    z = torch.exp(x0)
    s0 = (1 - z**L) / (1 - z)
    ls = torch.arange(L, dtype=torch.float64)
    s1 = (ls * torch.exp(x0[..., None] * ls)).sum(-1)
    assert_close(grad_v.cpu(), (2 * s0.conj()).expand(2, 3, 5))
    assert_close(grad_x.cpu(), 2 * (v0 * s1).sum(0).conj())


class _FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports itself as CUDA, to test the routing rule without a GPU."""

    @property
    def is_cuda(self):
        return True


def test_dispatch_routes_cuda_tensors_to_triton():
    t = torch.zeros(3, 5, dtype=torch.complex64).as_subclass(_FakeCudaTensor)
    assert t.is_cuda
    chosen = select_backend("vandermonde", _IMPLEMENTATIONS, None, t, t)
    assert chosen is _IMPLEMENTATIONS["triton"]
    cpu = torch.zeros(3, 5, dtype=torch.complex64)
    chosen = select_backend("vandermonde", _IMPLEMENTATIONS, None, cpu, cpu)
    assert chosen is _IMPLEMENTATIONS["torch"]


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    v, x = modes(3, 5)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        vandermonde(v, x, 4, backend="triton")


def test_float32_phase_stays_accurate_over_long_kernels():
    """exp(i Im(x) l) at l in the thousands: float32 Im(x)·l loses the phase unless the kernel
    reduces it in two parts (REDUCE_PHASE): 3e-7 of max|K| with it, 2e-4 without."""
    torch.manual_seed(12)
    v, _ = modes(2, 8, dtype=torch.complex64)
    x = torch.complex(-1e-3 * torch.rand(2, 8) - 1e-4, 10.0 * torch.randn(2, 8))  # slow decay, fast phase
    L = 4096
    K = triton_k(v, x, L).cpu().double()
    want = oracle(v.to(torch.complex128), x.to(torch.complex128), L)  # the same float32 inputs, in float64
    assert (K - want).abs().max() / want.abs().max() < 5e-6


def triton_float32_and_torch_float64(v, x, L, w):
    """(K, grad v, grad x) of sum(K · w) on the Triton backend in complex64 (on TRITON_DEVICE)
    and on the torch backend in complex128 (on the CPU) from the same (float32) inputs,
    returned on the CPU."""
    results = []
    for backend, dtype, device in (("triton", torch.complex64, TRITON_DEVICE), ("torch", torch.complex128, "cpu")):
        vv, xx = v.to(device, dtype).requires_grad_(), x.to(device, dtype).requires_grad_()
        K = vandermonde(vv, xx, L, backend=backend)
        grads = torch.autograd.grad((K * w.to(device, K.dtype)).sum(), [vv, xx])
        results.append(tuple(t.cpu() for t in (K.detach().double(), *grads)))
    return results


@pytest.mark.parametrize("L, omega", [(16384, 100.0), (40000, 10.0), (4096, 1000.0)])
def test_float32_phase_of_undamped_modes_at_long_lengths(L, omega):
    """Long-memory modes (Re x ~ 0, the ones training drives towards) at l beyond 2**15 or with
    |Im x| l beyond 4e5: the all-float32 reduction was off by 6e-2 to 1e-1 of max|K| (and the
    gradients by 2e-2 to 4e-2); each block's start phase is now reduced in float64."""
    torch.manual_seed(13)
    v = torch.randn(2, 3, dtype=torch.complex64)
    x = torch.complex(-1e-5 * torch.rand(2, 3), omega * (0.5 + torch.rand(2, 3)))
    w = torch.randn(2, L)
    for got, want in zip(*triton_float32_and_torch_float64(v, x, L, w)):
        assert ((got.to(want.dtype) - want).abs().max() / want.abs().max()).item() < 5e-6


def test_growing_modes_near_float32_overflow_with_a_partial_last_block():
    """Re x = 0.25 up to l = 349 reaches e^87 (finite in float32); the last block's tail
    positions (up to 383) must be evaluated at l = 0, or their e^96 = inf times the zero
    gradient there turns the mode sums into NaN."""
    L = 350
    x = torch.complex(torch.full((1, 2), 0.25), torch.tensor([[0.3, 1.1]]))
    v = torch.tensor([[1.0 + 0.5j, -0.7 + 0.2j]], dtype=torch.complex64)
    w = torch.linspace(-1, 1, L)[None] * torch.exp(-0.25 * torch.arange(L))[None]
    for got, want in zip(*triton_float32_and_torch_float64(v, x, L, w)):
        assert torch.isfinite(got).all()
        assert ((got.to(want.dtype) - want).abs().max() / want.abs().max()).item() < 1e-5


# ----------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("C, H, N, L, dtype, grad", [
    (1, 3, 4, 1, torch.complex128, True),
    (2, 2, 5, 7, torch.complex64, True),
    (3, 3, 1, 0, torch.complex128, True),
    (2, 3, 4, 6, torch.complex64, False),  # inference: nothing to differentiate
])
def test_op_passes_opcheck(C, H, N, L, dtype, grad):
    """The forward op (and through its autograd, the backward op) on complex v and x: fake
    outputs like the real ones, autograd registered, and traced by AOTAutograd with static
    and dynamic shapes."""
    torch.manual_seed(15)
    v, x = (t.to(TRITON_DEVICE).requires_grad_(grad) for t in modes(H, N, C=C, dtype=dtype))
    torch.library.opcheck(_forward_op, (v, x, L))


@pytest.mark.parametrize("differentiable", ["v", "x"])
def test_op_passes_opcheck_with_one_input_differentiable(differentiable):
    """The backward op computes only the needed gradient and hands it to its own input."""
    torch.manual_seed(17)
    v, x = (t.to(TRITON_DEVICE) for t in modes(3, 4, C=2))
    dict(v=v, x=x)[differentiable].requires_grad_()
    torch.library.opcheck(_forward_op, (v, x, 9))


@pytest.mark.parametrize("C", [None, 2])
def test_compiles_to_one_graph_with_eager_values_and_gradients(C):
    """Under torch.compile the kernel is the op pair, so a function of it compiles whole
    (fullgraph), and gives eager's output and gradients of v and x, at a second length too."""
    torch.manual_seed(16)
    v, x = (t.to(TRITON_DEVICE) for t in modes(3, 5, C=C, dtype=torch.complex64))

    def kernel(v, x, L):
        return vandermonde(v, 0.5 * x, L, backend="triton")

    assert_compiled_like_eager(kernel, (v, x, 7), (v, x, 20))


@requires_cuda
def test_cuda_default_backend_is_triton_and_matches_torch():
    torch.manual_seed(11)
    v, x = modes(32, 32, C=2, dtype=torch.complex64)
    L = 512
    K = vandermonde(v.cuda(), x.cuda(), L)
    assert K.is_cuda and torch.equal(K, vandermonde(v.cuda(), x.cuda(), L, backend="triton"))
    w = torch.randn(2, 32, L, dtype=torch.float64)
    got = grads(v, x, L, w, None, "cuda")
    want = grads(v.to(torch.complex128), x.to(torch.complex128), L, w, "torch")
    for a, b in zip(got, want):
        assert_close(a, b, dtype=torch.float32)
