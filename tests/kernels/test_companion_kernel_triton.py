"""kernels.companion_kernel, Triton backend (the fused spectral combination): forward and
backward against dense matrix powers in float64 and against the torch path.

On a CPU-only machine the kernels run in the Triton interpreter (conftest sets
TRITON_INTERPRET=1); on a CUDA machine the same tests run compiled on the GPU.
"""

import importlib

import pytest
import torch
from devices import TRITON_DEVICE, requires_cuda
from reference import companion_kernel_by_powers
from tolerances import assert_close_summed

pytest.importorskip("triton")

from kernels import companion_kernel
from kernels.companion_kernel.pytorch import combine_spectra

ktr = importlib.import_module("kernels.companion_kernel.triton")

F64 = torch.float64


def inputs(n, d, dtype=F64, seed=0, singular=False):
    g = torch.Generator().manual_seed(seed)
    a, b, c = torch.randn(3, n, d, generator=g, dtype=F64)
    a = a / a.abs().sum(-1, keepdim=True)
    if singular:  # eigenvalue 1 in the first row: its denominator vanishes at z = 1
        a[0] = 0
        a[0, -1] = 1
    return a.to(dtype), b.to(dtype), c.to(dtype)


def run(a0, b0, c0, L, weight, backend):
    leaves = [t.detach().clone().to(TRITON_DEVICE).requires_grad_(True) for t in (a0, b0, c0)]
    K = companion_kernel(*leaves, L, backend=backend)
    (K * weight.to(device=TRITON_DEVICE, dtype=K.dtype)).sum().backward()
    return [K.detach().cpu()] + [t.grad.cpu() for t in leaves]


def oracle(a0, b0, c0, L, weight):
    leaves = [t.detach().to(F64).requires_grad_(True) for t in (a0, b0, c0)]
    K = companion_kernel_by_powers(*leaves, L)
    (K * weight.to(F64)).sum().backward()
    return [K.detach()] + [t.grad for t in leaves]


@pytest.fixture
def small_block(monkeypatch):
    """Fewer frequencies per program than the spectra have, so rows span several programs."""
    monkeypatch.setattr(ktr, "BLOCK", 4)


SHAPES = [(3, 8, 20), (2, 12, 7), (2, 5, 37), (1, 1, 1), (2, 16, 5)]


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("n, d, L", SHAPES)
def test_forward_and_gradients_match_matrix_powers(n, d, L, dtype, small_block):
    a, b, c = inputs(n, d, dtype)
    weight = torch.randn(n, L, dtype=F64)
    got = run(a, b, c, L, weight, "triton")
    assert got[0].dtype == dtype and got[0].shape == (n, L)
    for g, w in zip(got, oracle(a, b, c, L, weight)):
        assert_close_summed(g, w, dtype=dtype)


def test_singular_rows_take_the_series_path(small_block):
    a, b, c = inputs(4, 6, singular=True, seed=1)
    weight = torch.randn(4, 12, dtype=F64)
    for g, w in zip(run(a, b, c, 12, weight, "triton"), oracle(a, b, c, 12, weight)):
        assert torch.isfinite(g).all()
        assert_close_summed(g, w)


@pytest.mark.parametrize("complex_dtype", [torch.complex128, torch.complex64])
def test_fused_combination_matches_torch_forward_and_backward(complex_dtype, small_block):
    g = torch.Generator().manual_seed(2)
    spectra = torch.randn(4, 3, 11, generator=g, dtype=complex_dtype).to(TRITON_DEVICE)
    weight = torch.randn(3, 11, generator=g, dtype=complex_dtype).to(TRITON_DEVICE)
    results = []
    for fn in (ktr.combine_spectra_triton, combine_spectra):
        s = spectra.clone().requires_grad_(True)
        out = fn(s, 19)
        (out * weight.conj()).real.sum().backward()
        results.append((out.detach().cpu(), s.grad.cpu()))
    (o1, g1), (o2, g2) = results
    assert_close_summed(o1, o2)
    assert_close_summed(g1, g2)


def test_fused_combination_backward_takes_a_conjugated_gradient():
    # conj() after the combination hands its backward a gradient with the conjugate bit set
    # (a lazy view of the values): the same gradients as the torch combination
    g = torch.Generator().manual_seed(3)
    spectra = torch.randn(4, 2, 7, generator=g, dtype=torch.complex128).to(TRITON_DEVICE)
    weight = torch.randn(2, 7, generator=g, dtype=torch.complex128).to(TRITON_DEVICE)
    grads = []
    for fn in (ktr.combine_spectra_triton, combine_spectra):
        s = spectra.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(fn(s, 13).conj(), s, weight)[0].cpu())
    assert_close_summed(grads[0], grads[1])


def test_fused_combination_gradcheck():
    spectra = torch.randn(4, 1, 3, dtype=torch.complex128, device=TRITON_DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: ktr.combine_spectra_triton(s, 5), (spectra,))


def test_series_method_runs_on_the_triton_backend():
    a, b, c = inputs(2, 6, seed=3)
    K = companion_kernel(a.to(TRITON_DEVICE), b.to(TRITON_DEVICE), c.to(TRITON_DEVICE), 17, backend="triton", method="series")
    assert_close_summed(K.cpu(), companion_kernel_by_powers(a, b, c, 17))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    a, b, c = inputs(3, 8, dtype, seed=4)
    K = companion_kernel(a.to(TRITON_DEVICE), b.to(TRITON_DEVICE), c.to(TRITON_DEVICE), 24, backend="triton")
    assert K.dtype == dtype
    assert_close_summed(K.cpu(), companion_kernel_by_powers(a, b, c, 24), dtype=dtype)


@requires_cuda
@pytest.mark.parametrize("L", [336, 720, 4096])
def test_cuda_default_backend_at_spacetime_sizes(L):
    a, b, c = inputs(128, 64, torch.float32, seed=5)
    weight = torch.randn(128, L, dtype=F64)
    got = run(a, b, c, L, weight, None)
    want = run(a, b, c, L, weight, "torch")
    for g, w in zip(got, want):
        assert_close_summed(g, w, dtype=torch.float32)


def test_large_coefficient_rows_take_the_blocked_path_on_triton():
    """Rows with ||a||_1 beyond the spectral formulas' range (2 in float32) or a spectral
    radius >= 1 are computed by the blocked recurrence on the triton backend too; the rest
    go through the fused kernel."""
    a, b, c = inputs(4, 12, torch.float32, seed=5)
    a = a * torch.tensor([1.0, 1.5, 6.0, 40.0])[:, None]
    weight = torch.randn(4, 9, generator=torch.Generator().manual_seed(2))
    expected = oracle(a, b, c, 9, weight)
    weight = weight / expected[0].abs().amax(-1, keepdim=True)
    for got, want in zip(run(a, b, c, 9, weight, "triton"), oracle(a, b, c, 9, weight)):
        assert_close_summed(got, want, dtype=torch.float32)


def test_compile_op_passes_opcheck_on_the_triton_path():
    """Under torch.compile the Triton path runs as the companion kernel's op pair (the
    backward by torch.func.vjp through the fused combination, which needs the Function's
    setup_context form): fake outputs, registered autograd and AOTAutograd tracing."""
    from torch.library import opcheck

    from kernels.companion_kernel.compiled import _forward_op

    a, b, c = (t.to(TRITON_DEVICE).requires_grad_() for t in inputs(3, 4, seed=9, singular=True))
    opcheck(_forward_op, (a, b, c, 11, "fft", "triton"))


@pytest.mark.parametrize("backend, path", [("triton", "triton"), ("torch", "torch")])
def test_compiled_call_runs_the_path_of_its_backend(backend, path):
    """Compiled, a call keeps its backend: the op is told which path to run (the two agree to
    rounding, so eager-vs-compiled numbers would not show a Triton call run by the torch path)."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    device = TRITON_DEVICE if backend == "triton" else "cpu"
    a, b, c = (t.to(device) for t in inputs(3, 4, seed=10))
    compiled = torch.compile(lambda a, b, c: companion_kernel(a, b, c, 9, backend=backend), backend=record,
                             fullgraph=True)
    assert_close_summed(compiled(a, b, c), companion_kernel(a, b, c, 9, backend=backend), dtype=torch.float64)
    calls = [n for gm in graphs for n in gm.graph.nodes if str(n.target) == "ssm_kernels.companion_kernel.default"]
    assert [n.args[-1] for n in calls] == [path]
