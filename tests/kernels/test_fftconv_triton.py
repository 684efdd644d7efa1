"""kernels.fftconv backend="triton": FFT convolution by DFT matrix products.

The Triton inputs live on TRITON_DEVICE: on CPU-only machines the kernels run there in the
Triton interpreter (tests/conftest.py), on a CUDA machine compiled on the GPU. The CUDA-only
checks at the end run the compiled kernels against the torch backend.
"""

import importlib

import pytest
import torch
from compiled_like_eager import assert_compiled_like_eager, outputs_and_gradients
from devices import TRITON_DEVICE, requires_cuda
from launch_recording import record_launches
from reference import causal_conv_loop, two_sided_conv_loop
from tolerances import assert_close

from kernels import fftconv
from kernels.fftconv import fftconv_torch

fftconv_pkg = importlib.import_module("kernels.fftconv")  # the package (kernels.fftconv is the op)
pytestmark = pytest.mark.skipif(
    "triton" not in fftconv_pkg._IMPLEMENTATIONS, reason="triton is not installed"
)
if "triton" in fftconv_pkg._IMPLEMENTATIONS:
    from kernels.fftconv import triton as triton_impl
    from kernels.fftconv import triton_op

LENGTHS = [1, 5, 16, 37, 100]


def inputs(B, H, L, dtype=torch.float32, two_sided=False, device=TRITON_DEVICE):
    """Random u, k, D drawn on CPU in float64 (the same numbers on every device), then moved."""
    decay = 1 + torch.arange(L, dtype=torch.float64)
    u = torch.randn(B, H, L, dtype=torch.float64)
    k = torch.randn(H, L, dtype=torch.float64) / decay  # decaying taps
    if two_sided:
        k = torch.stack([k, torch.randn(H, L, dtype=torch.float64) / decay])
    D = torch.randn(H, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (u, k, D))


def oracle(u, k, D):
    """The float64 loop on CPU copies of the inputs."""
    u, k, D = u.cpu(), k.cpu(), None if D is None else D.cpu()
    if k.dim() == 3:
        return two_sided_conv_loop(u, k[0], k[1], D)
    return causal_conv_loop(u, k, D)


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("two_sided", [False, True], ids=["causal", "two-sided"])
@pytest.mark.parametrize("with_D", [False, True], ids=["no-D", "D"])
def test_forward_matches_loop_oracle(L, two_sided, with_D):
    torch.manual_seed(0)
    u, k, D = inputs(2, 3, L, two_sided=two_sided)
    D = D if with_D else None
    y = fftconv(u, k, D, backend="triton")
    assert y.shape == (2, 3, L) and y.dtype == torch.float32
    assert_close(y, oracle(u, k, D), dtype=torch.float32)


def test_unit_impulse_kernel_returns_input_plus_skip():
    torch.manual_seed(1)
    u, _, D = inputs(2, 3, 37)
    k = torch.zeros(3, 37, device=TRITON_DEVICE)
    k[:, 0] = 1.0
    assert_close(fftconv(u, k, D, backend="triton"), u * (1 + D[:, None]))


@pytest.mark.parametrize("L", [1, 16, 37, 100])
@pytest.mark.parametrize("two_sided", [False, True], ids=["causal", "two-sided"])
def test_grads_match_reference_backend(L, two_sided):
    torch.manual_seed(2)
    u0, k0, D0 = inputs(2, 3, L, two_sided=two_sided)
    w = torch.randn(2, 3, L).to(TRITON_DEVICE)
    grads = {}
    for backend, dtype in (("triton", torch.float32), ("reference", torch.float64)):
        u, k, D = (t.detach().to(dtype).clone().requires_grad_(True) for t in (u0, k0, D0))
        (fftconv(u, k, D, backend=backend) * w.to(dtype)).sum().backward()
        grads[backend] = (u.grad, k.grad, D.grad)
    for name, a, b in zip("ukD", grads["triton"], grads["reference"]):
        assert a.dtype == torch.float32
        assert_close(a, b, dtype=torch.float32, msg=f"grad_{name}")


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("L", [200, 600])  # n = 512 = 32 x 16, n = 2048 = 64 x 32: half tiles
def test_several_rows_per_program_and_larger_tiles(monkeypatch, rows, L):
    # 6 rows in programs of 4: the second program's last two rows are masked.
    monkeypatch.setattr(triton_impl, "_rows_per_program", lambda n_rows, n, device: rows)
    torch.manual_seed(12)
    u0, k0, D0 = inputs(2, 3, L, two_sided=True)
    w = torch.randn(2, 3, L).to(TRITON_DEVICE)
    out = {}
    for backend, dtype in (("triton", torch.float32), ("reference", torch.float64)):
        u, k, D = (t.detach().to(dtype).clone().requires_grad_(True) for t in (u0, k0, D0))
        y = fftconv(u, k, D, backend=backend)
        (y * w.to(dtype)).sum().backward()
        out[backend] = (y, u.grad, k.grad, D.grad)
    for name, a, b in zip(("y", "grad_u", "grad_k", "grad_D"), out["triton"], out["reference"]):
        assert_close(a, b, dtype=torch.float32, msg=name)


@pytest.mark.parametrize(
    "budget_rows, chunks", [(2, [2, 2, 1]), (0.5, [1, 1, 1, 1, 1])], ids=["two-rows", "under-one-row"]
)
@pytest.mark.parametrize("two_sided", [False, True], ids=["causal", "two-sided"])
def test_kernel_gradient_in_batch_chunks(monkeypatch, two_sided, budget_rows, chunks):
    # grad_k's cross-spectra are formed a chunk of batch rows at a time: with a budget of two
    # rows (H · n elements each), 5 rows run as chunks of 2, 2 and 1, and the gradients are
    # those of one pass over the batch (to rounding: its sum is split in three). A budget
    # under one row still takes one row per chunk.
    calls = record_launches(monkeypatch, triton_impl, "_cross_spectrum_kernel")

    def launches():  # (elements of the real cross-spectrum buffer, rows launched)
        return [(args[2].numel(), args[10]) for args in calls]

    torch.manual_seed(13)
    B, H, L = 5, 3, 37
    n = triton_impl.fft_size(L)[0]
    u0, k0, D0 = inputs(B, H, L, two_sided=two_sided)
    w = torch.randn(B, H, L).to(TRITON_DEVICE)

    def grads(backend="triton", dtype=torch.float32):
        u, k, D = (t.detach().to(dtype).clone().requires_grad_(True) for t in (u0, k0, D0))
        (fftconv(u, k, D, backend=backend) * w.to(dtype)).sum().backward()
        return u.grad, k.grad, D.grad

    whole = grads()
    assert launches() == [(B * H * n, B * H)]
    calls.clear()
    monkeypatch.setattr(triton_impl, "CROSS_SPECTRUM_ELEMENTS", int(budget_rows * H * n))
    chunked = grads()
    assert [rows for _, rows in launches()] == [c * H for c in chunks]
    assert all(elements <= max(chunks) * H * n for elements, _ in launches())
    reference = grads("reference", torch.float64)
    for name, a, b, want in zip(("grad_u", "grad_k", "grad_D"), chunked, whole, reference):
        torch.testing.assert_close(a, b, msg=name)
        assert_close(a, want, dtype=torch.float32, msg=name)


def test_grads_without_D_and_partial_requires_grad():
    torch.manual_seed(3)
    u0, k0, _ = inputs(2, 3, 37)
    w = torch.randn(2, 3, 37).to(TRITON_DEVICE)
    k = k0.clone().requires_grad_(True)
    (fftconv(u0, k, None, backend="triton") * w).sum().backward()
    k_ref = k0.double().requires_grad_(True)
    (fftconv(u0.double(), k_ref, None, backend="reference") * w.double()).sum().backward()
    assert_close(k.grad, k_ref.grad, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("two_sided", [False, True], ids=["causal", "two-sided"])
def test_half_precision_returns_input_dtype(dtype, two_sided):
    torch.manual_seed(4)
    u, k, D = inputs(2, 3, 100, dtype=dtype, two_sided=two_sided)
    y = fftconv(u, k, D, backend="triton")
    assert y.dtype == dtype and y.shape == (2, 3, 100)
    assert_close(y, oracle(u, k, D), dtype=dtype)


def test_wider_D_keeps_u_dtype():
    torch.manual_seed(5)
    u, k, D = inputs(2, 3, 16)
    y = fftconv(u, k, D.double(), backend="triton")
    assert y.dtype == torch.float32
    assert_close(y, oracle(u, k, D), dtype=torch.float32)


def test_non_contiguous_input():
    torch.manual_seed(6)
    u, k, D = inputs(2, 3, 37)
    u_t = u.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not u_t.is_contiguous()
    assert_close(fftconv(u_t, k, D, backend="triton"), oracle(u, k, D), dtype=torch.float32)


@pytest.mark.parametrize("L", [1, 100, 128, 129, 2048, 4096, 4097, 8192])
def test_fft_size_factorization(L):
    n, N1, N2 = triton_impl.fft_size(L)
    assert n == N1 * N2 and n >= 2 * L and n >= 256 and n & (n - 1) == 0
    # N1 = 2^ceil(p/2): a square tile or twice as tall as wide (128 x 64 at n = 8192; 64 x 128
    # would need a 128 x 128 F_N2, beyond the shared memory the one-kernel limit was sized for)
    assert N1 in (N2, 2 * N2)
    assert all(16 <= N <= 128 and N & (N - 1) == 0 for N in (N1, N2)) or L > triton_op.MAX_L
    assert n < 4 * L or n == 256


def _forbid_kernels(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the Triton kernel ran")

    monkeypatch.setattr(triton_impl, "_conv", fail)


def test_long_sequences_go_to_torch(monkeypatch):
    torch.manual_seed(7)
    L = triton_op.MAX_L + 1
    u, k, D = inputs(1, 1, L)
    _forbid_kernels(monkeypatch)
    assert torch.equal(fftconv(u, k, D, backend="triton"), fftconv_torch(u, k, D))


def test_float64_goes_to_torch(monkeypatch):
    torch.manual_seed(8)
    u, k, D = inputs(2, 3, 37, dtype=torch.float64)
    _forbid_kernels(monkeypatch)
    y = fftconv(u, k, D, backend="triton")
    assert y.dtype == torch.float64
    assert torch.equal(y, fftconv_torch(u, k, D))


def test_longest_fused_length_matches_torch(monkeypatch):
    # n = MAX_N = 8192 = 128 x 64: the largest single-kernel FFT, run by the Triton kernel.
    torch.manual_seed(9)
    L = triton_op.MAX_L
    u, k, D = inputs(1, 1, L)

    def fail(*args, **kwargs):
        raise AssertionError("L = MAX_L was sent to fftconv_torch")

    monkeypatch.setattr(triton_op, "fftconv_torch", fail)
    y = fftconv(u, k, D, backend="triton")
    assert_close(y, fftconv_torch(u.double(), k.double(), D.double()), dtype=torch.float32)


def test_out_of_resources_falls_back_to_torch(monkeypatch):
    import triton

    torch.manual_seed(10)
    monkeypatch.setattr(triton_impl, "_TOO_LARGE", set())
    u0, k0, D0 = inputs(2, 3, 16)

    def no_room(*args, **kwargs):
        raise triton.OutOfResources(300_000, 232_448, "shared memory")

    # Backward: the forward ran in Triton, the grads come from torch.fft's autograd.
    monkeypatch.setattr(triton_impl, "_kernel_grad", no_room)
    u, k, D = (t.clone().requires_grad_(True) for t in (u0, k0, D0))
    fftconv(u, k, D, backend="triton").sum().backward()
    u_ref, k_ref, D_ref = (t.double().requires_grad_(True) for t in (u0, k0, D0))
    fftconv(u_ref, k_ref, D_ref, backend="reference").sum().backward()
    for a, b in ((u.grad, u_ref.grad), (k.grad, k_ref.grad), (D.grad, D_ref.grad)):
        assert_close(a, b, dtype=torch.float32)
    assert triton_impl._TOO_LARGE == {(256, str(u0.device))}

    # Forward: that FFT length now goes straight to torch.
    _forbid_kernels(monkeypatch)
    assert torch.equal(fftconv(u0, k0, D0, backend="triton"), fftconv_torch(u0, k0, D0))


def test_default_backend_on_cpu_stays_torch():
    torch.manual_seed(11)
    u, k, D = inputs(2, 3, 16, device="cpu")
    assert torch.equal(fftconv(u, k, D), fftconv_torch(u, k, D))


def test_a_plan_built_in_inference_mode_serves_a_differentiated_call():
    """The cached DFT plans are built outside inference mode: a first call under
    torch.inference_mode() (an evaluation before training) used to cache inference tensors."""
    triton_impl._PLANS.clear()
    u, k, D = inputs(1, 2, 23)
    with torch.inference_mode():
        fftconv(u, k, D, backend="triton")
    u.requires_grad_(True)
    y = fftconv(u, k, D, backend="triton")
    y.sum().backward()
    assert not any(t.is_inference() for plan in triton_impl._PLANS.values() for t in plan)
    assert_close(u.grad, torch.autograd.grad(fftconv_torch(u, k, D).sum(), u)[0])


# ----------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("B, H, L, two_sided, with_D, save", [
    (2, 3, 5, False, True, True),
    (1, 2, 1, True, False, True),
    (3, 1, 7, True, True, True),
    (2, 3, 9, False, True, False),  # inference: no spectrum saved
])
def test_op_passes_opcheck(B, H, L, two_sided, with_D, save):
    """The forward op (and through its autograd, the backward op): fake outputs like the real
    ones (the saved spectrum's tile sizes are the launcher's, new sizes to the compiler),
    autograd registered, and traced by AOTAutograd with static and dynamic shapes."""
    torch.manual_seed(14)
    u, k, D = (t.requires_grad_(save) for t in inputs(B, H, L, two_sided=two_sided))
    torch.library.opcheck(triton_op._forward_op, (u, k, D if with_D else None, save))


@pytest.mark.parametrize("dtype, two_sided, with_D", [
    (torch.float32, True, True),
    (torch.float16, False, False),
], ids=["float32-two-sided-D", "float16-causal"])
def test_compiles_to_one_graph_with_eager_values_and_gradients(dtype, two_sided, with_D):
    """Under torch.compile the convolution is the op pair, so a function of it compiles whole
    (fullgraph), and gives eager's output and gradients of u, k and D, at a second length too."""
    torch.manual_seed(15)

    def conv(u, k, D):
        return fftconv(u, 1.5 * k, D, backend="triton")

    assert_compiled_like_eager(conv, *(
        [u, k, D if with_D else None] for u, k, D in (inputs(2, 3, L, dtype, two_sided) for L in (10, 37))
    ))


def test_compiled_ops_fall_back_to_torch_when_out_of_resources(monkeypatch):
    """Compiled, the ops fall back as eager calls do: the backward op to torch.fft's gradients
    where its kernels raise OutOfResources (by torch.func.vjp: autograd does not record
    inside an op), the forward op to fftconv_torch's output where the convolution kernel does."""
    import triton

    def no_room(*args, **kwargs):
        raise triton.OutOfResources(300_000, 232_448, "shared memory")

    torch.manual_seed(16)
    monkeypatch.setattr(triton_impl, "_TOO_LARGE", set())
    u, k, D = inputs(2, 3, 16)
    want = outputs_and_gradients(lambda *t: fftconv(*t, backend="reference"), [t.double() for t in (u, k, D)])
    torch._dynamo.reset()
    compiled = torch.compile(lambda *t: fftconv(*t, backend="triton"), fullgraph=True, backend="aot_eager")
    monkeypatch.setattr(triton_impl, "_kernel_grad", no_room)
    backward_fell_back = outputs_and_gradients(compiled, (u, k, D))
    assert triton_impl._TOO_LARGE == {(256, str(u.device))}
    triton_impl._TOO_LARGE.clear()  # so that the forward op runs into it too
    monkeypatch.setattr(triton_impl, "_conv", no_room)
    both_fell_back = outputs_and_gradients(compiled, (u, k, D))
    assert triton_impl._TOO_LARGE == {(256, str(u.device))}
    torch._dynamo.reset()
    for got in (backward_fell_back, both_fell_back):
        for name, a, b in zip(("y", "grad_u", "grad_k", "grad_D"), got, want):
            assert_close(a, b, dtype=torch.float32, msg=name)


# ----------------------------------------------------------------------------- CUDA only


@requires_cuda
@pytest.mark.parametrize("L", [1, 100, 1000, 2048, 4096])
@pytest.mark.parametrize("two_sided", [False, True], ids=["causal", "two-sided"])
def test_cuda_forward_and_grads_match_float64_torch(L, two_sided):
    torch.manual_seed(12)
    u0, k0, D0 = inputs(2, 4, L, two_sided=two_sided, device="cuda")
    w = torch.randn(2, 4, L, device="cuda")
    results = {}
    for backend, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        u, k, D = (t.detach().to(dtype).clone().requires_grad_(True) for t in (u0, k0, D0))
        y = fftconv(u, k, D, backend=backend)
        (y * w.to(dtype)).sum().backward()
        results[backend] = (y, u.grad, k.grad, D.grad)
    for name, a, b in zip(("y", "grad_u", "grad_k", "grad_D"), results["triton"], results["torch"]):
        assert_close(a, b, dtype=torch.float32, msg=name)
    assert not triton_impl._TOO_LARGE  # every length ran in Triton, none fell back to torch


@requires_cuda
def test_cuda_default_backend_is_triton_and_half_precision():
    torch.manual_seed(13)
    u, k, D = inputs(2, 4, 512, dtype=torch.float16, device="cuda")
    y = fftconv(u, k, D)
    assert torch.equal(y, fftconv(u, k, D, backend="triton"))
    assert y.dtype == torch.float16
    assert_close(y, oracle(u.cpu(), k.cpu(), D.cpu()), dtype=torch.float16)
