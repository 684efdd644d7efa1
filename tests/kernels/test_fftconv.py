"""kernels.fftconv: y[b,h,t] = sum_{s<=t} k[h,s] u[b,h,t-s] + D[h] u[b,h,t] (and two-sided)."""

import pytest
import torch
from reference import causal_conv_loop, two_sided_conv_loop
from tolerances import assert_close

from kernels import fftconv

BACKENDS = ["torch", "reference"]
LENGTHS = [1, 2, 7, 33, 100]


def inputs(B, H, L, dtype=torch.float64):
    u = torch.randn(B, H, L, dtype=dtype)
    k = torch.randn(H, L, dtype=dtype) / (1 + torch.arange(L, dtype=dtype))  # decaying taps
    D = torch.randn(H, dtype=dtype)
    return u, k, D


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L", LENGTHS)
def test_causal_matches_loop_oracle_float64(backend, L):
    torch.manual_seed(0)
    u, k, D = inputs(2, 3, L)
    y = fftconv(u, k, D, backend=backend)
    assert y.shape == (2, 3, L) and y.dtype == torch.float64
    assert_close(y, causal_conv_loop(u, k, D))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L", [1, 7, 100])
def test_without_D_is_pure_convolution(backend, L):
    torch.manual_seed(1)
    u, k, _ = inputs(2, 3, L)
    assert_close(fftconv(u, k, None, backend=backend), causal_conv_loop(u, k, None))
    assert_close(fftconv(u, k, backend=backend), causal_conv_loop(u, k, None))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unit_impulse_kernel_returns_input_plus_skip(backend):
    torch.manual_seed(2)
    u, _, D = inputs(2, 3, 33)
    k = torch.zeros(3, 33, dtype=torch.float64)
    k[:, 0] = 1.0
    assert_close(fftconv(u, k, D, backend=backend), u * (1 + D[:, None]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_is_causal(backend):
    # Changing u at time s must not change y before s.
    torch.manual_seed(3)
    u, k, D = inputs(2, 3, 33)
    v = u.clone()
    v[..., 20:] = torch.randn(2, 3, 13, dtype=torch.float64)
    y, z = fftconv(u, k, D, backend=backend), fftconv(v, k, D, backend=backend)
    assert_close(y[..., :20], z[..., :20])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L", LENGTHS)
def test_two_sided_matches_loop_oracle(backend, L):
    torch.manual_seed(4)
    u, k0, D = inputs(2, 3, L)
    k1 = torch.randn(3, L, dtype=torch.float64) / (1 + torch.arange(L))
    y = fftconv(u, torch.stack([k0, k1]), D, backend=backend)
    assert y.shape == (2, 3, L)
    assert_close(y, two_sided_conv_loop(u, k0, k1, D))


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_sided_with_zero_backward_kernel_equals_causal(backend):
    torch.manual_seed(5)
    u, k, D = inputs(2, 3, 33)
    two = torch.stack([k, torch.zeros_like(k)])
    assert_close(fftconv(u, two, D, backend=backend), causal_conv_loop(u, k, D))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("L", [7, 100])
def test_float32_agrees_with_float64(backend, L):
    torch.manual_seed(6)
    u, k, D = inputs(2, 3, L)
    y32 = fftconv(u.float(), k.float(), D.float(), backend=backend)
    assert y32.dtype == torch.float32
    assert_close(y32, causal_conv_loop(u.float(), k.float(), D.float()), dtype=torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("two_sided", [False, True])
def test_half_precision_returns_input_dtype_and_matches_oracle(backend, dtype, two_sided):
    torch.manual_seed(7)
    L = 100
    u, k, D = (t.to(dtype) for t in inputs(2, 3, L, dtype=torch.float32))
    if two_sided:
        k1 = (torch.randn(3, L) / (1 + torch.arange(L))).to(dtype)
        y = fftconv(u, torch.stack([k, k1]), D, backend=backend)
        expected = two_sided_conv_loop(u, k, k1, D)
    else:
        y = fftconv(u, k, D, backend=backend)
        expected = causal_conv_loop(u, k, D)
    assert y.dtype == dtype and y.shape == (2, 3, L)
    assert_close(y, expected, dtype=dtype)


@pytest.mark.parametrize(
    "backend",
    ["torch", "reference"],
)
@pytest.mark.parametrize(
    "u_dtype, D_dtype",
    [(torch.float16, torch.float32), (torch.float32, torch.float64)],
    ids=["half-u-float-D", "float-u-double-D"],
)
def test_output_dtype_is_u_dtype_when_D_is_wider(backend, u_dtype, D_dtype):
    torch.manual_seed(8)
    u, k, D = inputs(2, 3, 7, dtype=torch.float32)
    u, k, D = u.to(u_dtype), k.to(u_dtype), D.to(D_dtype)
    y = fftconv(u, k, D, backend=backend)
    assert y.dtype == u_dtype
    assert_close(y, causal_conv_loop(u, k, D), dtype=u_dtype)


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("L", [1, 5])
def test_gradcheck_torch_backend(two_sided, L):
    torch.manual_seed(9)
    u, k, D = inputs(1, 2, L)
    if two_sided:
        k = torch.stack([k, torch.randn(2, L, dtype=torch.float64)])
    for t in (u, k, D):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda u, k, D: fftconv(u, k, D, backend="torch"), (u, k, D), fast_mode=True
    )


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("L", [1, 7, 33])
def test_grad_matches_reference_odd_length(two_sided, L):
    torch.manual_seed(10)
    u0, k0, D0 = inputs(2, 3, L)
    if two_sided:
        k0 = torch.stack([k0, torch.randn(3, L, dtype=torch.float64)])
    w = torch.randn(2, 3, L, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        u, k, D = (t.clone().requires_grad_(True) for t in (u0, k0, D0))
        (fftconv(u, k, D, backend=backend) * w).sum().backward()
        grads[backend] = (u.grad, k.grad, D.grad)
    for a, b in zip(grads["torch"], grads["reference"]):
        assert_close(a, b)


def test_default_backend_on_cpu_is_torch():
    torch.manual_seed(11)
    u, k, D = inputs(2, 3, 33)
    assert torch.equal(fftconv(u, k, D), fftconv(u, k, D, backend="torch"))


@pytest.mark.parametrize(
    "u_shape, k_shape, D_shape, pattern",
    [
        ((3, 7), (3, 7), None, r"\(B, H, L\)"),
        ((2, 3, 7), (3, 6), None, r"\(3, 7\)"),
        ((2, 3, 7), (4, 7), None, r"\(3, 7\)"),
        ((2, 3, 7), (3, 2, 7), None, r"\(2, 3, 7\)"),
        ((2, 3, 7), (3, 7), (2,), r"\(3,\)"),
    ],
    ids=["u-rank-2", "k-short", "k-channels", "k-bad-two-sided", "D-shape"],
)
def test_shape_errors_name_expected_shape(u_shape, k_shape, D_shape, pattern):
    torch.manual_seed(12)
    u, k = torch.randn(*u_shape), torch.randn(*k_shape)
    D = None if D_shape is None else torch.randn(*D_shape)
    with pytest.raises(ValueError, match=pattern):
        fftconv(u, k, D)


def test_complex_inputs_raise_type_error():
    torch.manual_seed(13)
    u = torch.randn(2, 3, 7, dtype=torch.complex64)
    with pytest.raises(TypeError, match="real"):
        fftconv(u, torch.randn(3, 7, dtype=torch.complex64))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64])
def test_a_complex_or_integer_skip_raises_type_error(dtype):
    D = torch.ones(3, dtype=dtype)
    with pytest.raises(TypeError, match="D must be a real floating-point"):
        fftconv(torch.randn(2, 3, 7), torch.randn(3, 7), D)


def test_dtype_mismatch_raises_type_error():
    torch.manual_seed(14)
    with pytest.raises(TypeError, match="dtype"):
        fftconv(torch.randn(2, 3, 7), torch.randn(3, 7, dtype=torch.float64))


def test_integer_inputs_raise_type_error():
    torch.manual_seed(15)
    u = torch.randint(-3, 4, (2, 3, 7))
    k = torch.randint(-3, 4, (3, 7))
    with pytest.raises(TypeError):
        fftconv(u, k)


def test_triton_backend_on_cpu_needs_the_interpreter(monkeypatch):
    # Without triton installed the backend is unavailable and the error names the others.
    torch.manual_seed(16)
    u, k, D = inputs(2, 3, 7)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises((RuntimeError, ValueError), match="triton") as info:
        fftconv(u, k, D, backend="triton")
    if info.type is RuntimeError:
        assert "TRITON_INTERPRET=1" in str(info.value)
    else:
        assert "torch" in str(info.value) and "reference" in str(info.value)


def test_unknown_backend_raises_value_error():
    torch.manual_seed(17)
    u, k, D = inputs(2, 3, 7)
    with pytest.raises(ValueError, match="backend"):
        fftconv(u, k, D, backend="cufft")


@pytest.mark.parametrize("shape, two_sided", [((0, 3, 5), False), ((2, 3, 0), False), ((0, 3, 4), True)])
def test_an_empty_input_gives_zero_gradients_not_none(shape, two_sided):
    u = torch.randn(shape, requires_grad=True)
    k = torch.randn(*((2,) if two_sided else ()), 3, shape[-1], requires_grad=True)
    D = torch.randn(3, requires_grad=True)
    y = fftconv(u, k, D)
    assert y.shape == u.shape
    y.sum().backward()
    for t in (u, k, D):
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.any()
