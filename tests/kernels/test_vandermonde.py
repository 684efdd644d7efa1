"""kernels.vandermonde: K[h, l] = 2 Re sum_n v[h, n] exp(x[h, n] l)."""

import importlib

import pytest
import torch
from reference import kernel_by_powers
from tolerances import assert_close

from kernels import vandermonde

vpt = importlib.import_module("kernels.vandermonde.pytorch")
vandermonde_pkg = importlib.import_module("kernels.vandermonde")

BACKENDS = ["torch", "reference"]
LENGTHS = [1, 2, 7, 33, 100]


def modes(H, N, dtype=torch.complex128):
    """Random coefficients v and stable log-eigenvalues x (Re x < 0, some oscillating)."""
    v = torch.randn(H, N, dtype=dtype)
    x = torch.complex(-0.5 * torch.rand(H, N) - 0.01, 2.0 * torch.randn(H, N)).to(dtype)
    return v, x


def oracle(v, x, L):
    # 2 Re sum_n v z^l with z = exp(x): the power form of the definition.
    return kernel_by_powers(torch.exp(x.to(torch.complex128)), torch.ones_like(v), v, L)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("N", [1, 5])
@pytest.mark.parametrize("L", LENGTHS)
def test_forward_matches_oracle_float64(backend, N, L):
    torch.manual_seed(0)
    v, x = modes(3, N)
    K = vandermonde(v, x, L, backend=backend)
    assert K.shape == (3, L) and K.dtype == torch.float64
    assert_close(K, oracle(v, x, L))


def test_forward_matches_exp_form_with_growing_modes():
    # Definition exp(x l) directly, including modes with Re x > 0 (no stability assumption).
    torch.manual_seed(1)
    v, x = modes(3, 5)
    x = torch.complex(x.real.abs() * 0.05, x.imag)
    L = 33
    l = torch.arange(L, dtype=torch.float64)
    expected = torch.stack(
        [2 * (v * torch.exp(x * float(i))).sum(-1).real for i in l.tolist()], dim=-1
    )
    assert_close(vandermonde(v, x, L, backend="torch"), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L", LENGTHS)
def test_float32_agrees_with_float64(backend, L):
    torch.manual_seed(2)
    v, x = modes(3, 5)
    K32 = vandermonde(v.to(torch.complex64), x.to(torch.complex64), L, backend=backend)
    assert K32.dtype == torch.float32
    assert_close(K32, oracle(v.to(torch.complex64), x.to(torch.complex64), L), dtype=torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length_gives_empty_kernel(backend):
    torch.manual_seed(3)
    v, x = modes(3, 5)
    v, x = v.requires_grad_(True), x.requires_grad_(True)
    K = vandermonde(v, x, 0, backend=backend)
    assert K.shape == (3, 0)
    gv, gx = torch.autograd.grad(K.sum(), (v, x))  # in the graph, with zero gradients
    assert torch.all(gv == 0) and torch.all(gx == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_length_one_gives_x_a_zero_gradient(backend):
    """K_0 = 2 Re Σ v does not depend on x: its gradient is zero, not missing."""
    torch.manual_seed(5)
    v, x = (t.requires_grad_(True) for t in modes(3, 5))
    K = vandermonde(v, x, 1, backend=backend)
    assert_close(K[:, 0], 2 * v.detach().sum(-1).real)
    gv, gx = torch.autograd.grad(K.sum(), (v, x))
    assert torch.all(gx == 0) and torch.all(gv == 2)  # torch's convention for 2 Re(v): dK/dRe v + i dK/dIm v


def test_default_backend_on_cpu_is_torch():
    torch.manual_seed(4)
    v, x = modes(3, 5)
    assert torch.equal(vandermonde(v, x, 33), vandermonde(v, x, 33, backend="torch"))


@pytest.mark.parametrize("L", [1, 6])
def test_gradcheck_torch_backend(L):
    torch.manual_seed(5)
    v, x = modes(2, 3)
    v.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, x: vandermonde(v, x, L, backend="torch"), (v, x))


def test_gradcheck_torch_backend_chunked(monkeypatch):
    torch.manual_seed(6)
    v, x = modes(2, 3)
    monkeypatch.setattr(vpt, "_CHUNK_ELEMENTS", 2 * 3 * 2)  # two positions per chunk
    v.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, x: vandermonde(v, x, 7, backend="torch"), (v, x))


@pytest.mark.parametrize("L", [1, 7, 33])
def test_grad_matches_reference_odd_length(L):
    torch.manual_seed(7)
    v0, x0 = modes(3, 5)
    w = torch.randn(3, L, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        v, x = v0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        (vandermonde(v, x, L, backend=backend) * w).sum().backward()
        # An input that does not reach the output (x when L = 1) may get grad None: zero.
        grads[backend] = tuple(
            torch.zeros_like(t) if t.grad is None else t.grad for t in (v, x)
        )
    for a, b in zip(grads["torch"], grads["reference"]):
        assert_close(a, b)


def test_grad_only_for_inputs_that_require_it():
    torch.manual_seed(8)
    v, x = modes(3, 5)
    x.requires_grad_(True)
    vandermonde(v, x, 7, backend="torch").sum().backward()
    assert x.grad is not None and torch.isfinite(torch.view_as_real(x.grad)).all()
    assert v.grad is None


@pytest.mark.parametrize("chunk_elements", [1, 3 * 5 * 8, 3 * 5 * 14])
def test_chunked_matches_unchunked_forward_and_backward(monkeypatch, chunk_elements):
    torch.manual_seed(9)
    L = 100
    v0, x0 = modes(3, 5)
    w = torch.randn(3, L, dtype=torch.float64)

    def run():
        v, x = v0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        K = vandermonde(v, x, L, backend="torch")
        (K * w).sum().backward()
        return K.detach(), v.grad, x.grad

    full = run()
    factor_sizes = []
    factors = vpt._factors

    def spy(x, start, length):
        outer, inner, block = factors(x, start, length)
        factor_sizes.append(outer.numel() + inner.numel())
        return outer, inner, block

    monkeypatch.setattr(vpt, "_CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(vpt, "_factors", spy)
    chunked = run()
    # Several chunks were used and no temporary factor outgrew the budget (one row of slack
    # per factor for the rounding of sqrt).
    assert len(factor_sizes) > 2
    assert max(factor_sizes) <= max(chunk_elements, 2 * 3 * 5) + 2 * 3 * 5
    for a, b in zip(chunked, full):
        assert_close(a, b)


@pytest.mark.parametrize(
    "v, x, L, exc, pattern",
    [
        (torch.randn(3, 5), torch.randn(3, 5), 4, TypeError, "complex"),
        (torch.randn(3, 5, dtype=torch.complex64).to(torch.complex32),
         torch.randn(3, 5, dtype=torch.complex64).to(torch.complex32), 4, TypeError,
         r"complex64 or complex128, got torch\.complex32"),
        (
            torch.randn(3, 5, dtype=torch.complex64),
            torch.randn(3, 5, dtype=torch.complex128),
            4,
            TypeError,
            "dtype",
        ),
        (
            torch.randn(3, 5, dtype=torch.complex64),
            torch.randn(3, 4, dtype=torch.complex64),
            4,
            ValueError,
            r"\(H, N\)",
        ),
        (
            torch.randn(15, dtype=torch.complex64),
            torch.randn(15, dtype=torch.complex64),
            4,
            ValueError,
            r"\(H, N\)",
        ),
        (
            torch.randn(3, 5, dtype=torch.complex64),
            torch.randn(3, 5, dtype=torch.complex64),
            -1,
            ValueError,
            "non-negative",
        ),
        (
            torch.randn(3, 5, dtype=torch.complex64),
            torch.randn(3, 5, dtype=torch.complex64),
            2.5,
            ValueError,
            "integer",
        ),
        (
            torch.randn(3, 5, dtype=torch.complex64),
            torch.randn(3, 5, dtype=torch.complex64),
            True,
            ValueError,
            "integer",
        ),
    ],
    ids=["real-inputs", "complex32", "dtype-mismatch", "shape-mismatch", "rank-1", "negative-L", "fractional-L", "bool-L"],
)
def test_bad_inputs_raise_clear_errors(v, x, L, exc, pattern):
    with pytest.raises(exc, match=pattern):
        vandermonde(v, x, L)


def test_triton_backend_registered_when_triton_is_installed():
    pytest.importorskip("triton")
    assert "triton" in vandermonde_pkg._IMPLEMENTATIONS


def test_triton_backend_unavailable_names_available_backends(monkeypatch):
    # As on a machine without triton: the op keeps only its PyTorch backends.
    torch.manual_seed(10)
    v, x = modes(3, 5)
    monkeypatch.delitem(vandermonde_pkg._IMPLEMENTATIONS, "triton", raising=False)
    with pytest.raises(ValueError, match="triton") as info:
        vandermonde(v, x, 4, backend="triton")
    assert "torch" in str(info.value) and "reference" in str(info.value)


def test_unknown_backend_raises_value_error():
    torch.manual_seed(11)
    v, x = modes(3, 5)
    with pytest.raises(ValueError, match="backend"):
        vandermonde(v, x, 4, backend="numpy")


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_stacked_coefficients_share_modes(backend):
    torch.manual_seed(21)
    v = torch.randn(2, 3, 5, dtype=torch.complex128, requires_grad=True)
    x = torch.complex(-torch.rand(3, 5), torch.randn(3, 5)).to(torch.complex128).requires_grad_()
    stacked = vandermonde(v, x, 19, backend=backend)
    separate = torch.stack([vandermonde(v[i], x, 19, backend="reference") for i in range(2)])
    assert stacked.shape == (2, 3, 19)
    assert_close(stacked, separate)
    assert torch.autograd.gradcheck(lambda v, x: vandermonde(v, x, 7, backend=backend), (v, x))


def test_float32_long_memory_modes_keep_their_phase_at_long_length():
    """Re x ≈ 0 and Im x up to π at L = 8192: exponents formed in complex64 carry a phase
    error ~|Im x|·l·eps (about 3e-4 of the output); the torch path forms them in complex128,
    so float32 stays at rounding level against float64 on the same (rounded) inputs."""
    g = torch.Generator().manual_seed(70)
    H, N, L = 4, 16, 8192
    v = torch.randn(H, N, dtype=torch.complex64, generator=g)
    x = torch.complex(torch.full((H, N), -1e-5), torch.rand(H, N, generator=g) * 3.14159).requires_grad_(True)
    v.requires_grad_(True)
    w = torch.randn(H, L, generator=g)
    out = vandermonde(v, x, L, backend="torch")
    (out * w).sum().backward()
    v64, x64 = (t.detach().to(torch.complex128).requires_grad_(True) for t in (v, x))
    powers = torch.exp(x64.unsqueeze(-1) * torch.arange(L, dtype=torch.float64))  # (H, N, L) in complex128
    ref = 2 * (v64.unsqueeze(-1) * powers).sum(-2).real
    (ref * w.double()).sum().backward()

    def rel(a, b):
        return ((a.to(b.dtype) - b).abs().max() / b.abs().max()).item()

    assert rel(out.detach(), ref.detach()) < 2e-6
    assert rel(v.grad, v64.grad) < 2e-6 and rel(x.grad, x64.grad) < 2e-6
