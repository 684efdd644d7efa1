"""kernels.cross_scan / cross_merge on every backend (Triton under the interpreter on CPU):
exact index maps, exact adjointness, each op's backward being the other, odd sizes, every
float dtype, and the argument checks."""

import importlib

import pytest
import torch
from devices import TRITON_DEVICE
from tolerances import assert_close

from kernels import cross_merge, cross_scan

cs_pkg = importlib.import_module("kernels.cross_scan")  # the package (kernels.cross_scan is the op)
BACKENDS = ["reference", "torch"] + (["triton"] if "triton" in cs_pkg._SCAN else [])
SIZES = [(1, 1), (1, 6), (5, 1), (3, 5), (7, 4), (8, 8)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def by_definition(x):
    """The four orders written out pixel by pixel: (B, C, H, W) -> (B, 4, C, H·W)."""
    B, C, H, W = x.shape
    rows = [x[:, :, i, j] for i in range(H) for j in range(W)]
    cols = [x[:, :, i, j] for j in range(W) for i in range(H)]
    seqs = [rows, cols, rows[::-1], cols[::-1]]
    return torch.stack([torch.stack(s, dim=-1) for s in seqs], dim=1)


def merge_by_definition(y, H, W):
    """Each pixel the sum of its four entries, by the index maps of `by_definition`."""
    index = by_definition(torch.arange(H * W, device=y.device).view(1, 1, H, W))[0, :, 0]
    out = torch.zeros(y.shape[0], y.shape[2], H * W, dtype=y.dtype, device=y.device)
    for k in range(4):
        out.index_add_(2, index[k], y[:, k])
    return out.view(y.shape[0], y.shape[2], H, W)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_of_a_2x3_image_by_hand(backend):
    x = torch.arange(6, dtype=torch.float32, device=TRITON_DEVICE).view(1, 1, 2, 3)
    expected = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]])
    assert torch.equal(cross_scan(x, backend=backend)[0, :, 0].cpu(), expected.float())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_scan_is_exactly_the_four_orders(backend, H, W, dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 3, H, W, device=TRITON_DEVICE).to(dtype)
    out = cross_scan(x, backend=backend)
    assert out.shape == (2, 4, 3, H * W) and out.dtype == dtype
    assert torch.equal(out, by_definition(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", SIZES)
def test_merge_is_the_adjoint_in_float64(backend, H, W):
    torch.manual_seed(1)
    x = torch.randn(2, 3, H, W, dtype=torch.float64, device=TRITON_DEVICE)
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=TRITON_DEVICE)
    lhs = (cross_scan(x, backend=backend) * y).sum()
    rhs = (x * cross_merge(y, H, W, backend=backend)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", SIZES)
def test_merge_sums_the_four_entries_of_each_pixel(backend, H, W):
    torch.manual_seed(2)
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=TRITON_DEVICE)
    out = cross_merge(y, H, W, backend=backend)
    assert out.shape == (2, 3, H, W) and out.dtype == torch.float64
    torch.testing.assert_close(out, merge_by_definition(y, H, W), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_of_scan_is_four_times_the_image(backend):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, device=TRITON_DEVICE)
    assert torch.equal(cross_merge(cross_scan(x, backend=backend), 5, 7, backend=backend), 4 * x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_merge_low_precision_keeps_dtype_and_matches_float64(backend, dtype):
    torch.manual_seed(4)
    y = torch.randn(2, 4, 3, 35, device=TRITON_DEVICE).to(dtype)
    out = cross_merge(y, 5, 7, backend=backend)
    assert out.dtype == dtype
    assert_close(out, merge_by_definition(y.double(), 5, 7))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", [(3, 5), (1, 4), (4, 1)])
def test_backward_of_scan_is_merge_and_of_merge_is_scan(backend, H, W):
    torch.manual_seed(5)
    x = torch.randn(2, 3, H, W, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    g = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=TRITON_DEVICE)
    (gx,) = torch.autograd.grad(cross_scan(x, backend=backend), x, g)
    torch.testing.assert_close(gx, merge_by_definition(g, H, W), rtol=0, atol=1e-12)
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    gm = torch.randn(2, 3, H, W, dtype=torch.float64, device=TRITON_DEVICE)
    (gy,) = torch.autograd.grad(cross_merge(y, H, W, backend=backend), y, gm)
    assert torch.equal(gy, by_definition(gm))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend):
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    y = torch.randn(1, 4, 2, 6, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    scan = lambda t: cross_scan(t, backend=backend)  # noqa: E731
    merge = lambda t: cross_merge(t, 2, 3, backend=backend)  # noqa: E731
    for fn, arg in ((scan, x), (merge, y)):
        assert torch.autograd.gradcheck(fn, (arg,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (arg,), fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    torch.manual_seed(6)
    x = torch.randn(2, 5, 3, 4, device=TRITON_DEVICE).transpose(2, 3)  # (2, 5, 4, 3), strided
    assert not x.is_contiguous()
    assert torch.equal(cross_scan(x, backend=backend), by_definition(x))
    y = torch.randn(2, 3, 4, 12, dtype=torch.float64, device=TRITON_DEVICE).transpose(1, 2)  # (2, 4, 3, 12)
    assert not y.is_contiguous()
    torch.testing.assert_close(cross_merge(y, 4, 3, backend=backend), merge_by_definition(y, 4, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    x = torch.randn(0, 3, 2, 5, device=TRITON_DEVICE)
    assert cross_scan(x, backend=backend).shape == (0, 4, 3, 10)
    assert cross_merge(torch.randn(2, 4, 0, 10, device=TRITON_DEVICE), 2, 5, backend=backend).shape == (2, 0, 2, 5)


def test_default_backend_on_cpu_is_torch(monkeypatch):
    called = []
    monkeypatch.setitem(cs_pkg._SCAN, "torch", lambda x: called.append("scan") or by_definition(x))
    monkeypatch.setitem(cs_pkg._MERGE, "torch", lambda y, H, W: called.append("merge") or merge_by_definition(y, H, W))
    x = torch.randn(1, 2, 3, 4)
    cross_merge(cross_scan(x), 3, 4)
    assert called == ["scan", "merge"]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"expected x of shape \(B, C, Hgt, Wdt\), got \(3, 4, 5\)"):
        cross_scan(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="expected x of shape"):
        cross_scan([[1.0]])
    with pytest.raises(TypeError, match="must be one of"):
        cross_scan(torch.ones(1, 1, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="must be one of"):
        cross_scan(torch.ones(1, 1, 2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="Hgt·Wdt = 12"):
        cross_merge(torch.randn(1, 4, 2, 10), 3, 4)
    with pytest.raises(ValueError, match="Hgt must be a positive integer"):
        cross_merge(torch.randn(1, 4, 2, 10), 0, 4)
    with pytest.raises(ValueError, match="Wdt must be a positive integer"):
        cross_merge(torch.randn(1, 4, 2, 10), 5, 2.5)
    with pytest.raises(ValueError, match="expected y of shape"):
        cross_merge(torch.randn(1, 3, 2, 12), 3, 4)
    with pytest.raises(ValueError, match="expected y of shape"):
        cross_merge(torch.randn(4, 2, 12), 3, 4)
    with pytest.raises(TypeError, match="must be one of"):
        cross_merge(torch.ones(1, 4, 2, 12, dtype=torch.int32), 3, 4)
    with pytest.raises(ValueError, match="unknown backend"):
        cross_scan(torch.randn(1, 1, 2, 2), backend="cuda")
