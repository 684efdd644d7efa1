"""kernels.cross_scan / cross_merge: exact index maps, adjointness, and each op's backward
being the other, on every backend (Triton under the interpreter on CPU)."""

import importlib

import pytest
import torch

from kernels import cross_merge, cross_scan

cs_pkg = importlib.import_module("kernels.cross_scan")
BACKENDS = ["reference", "torch"] + (["triton"] if "triton" in cs_pkg._SCAN else [])
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = [(1, 1), (1, 6), (5, 1), (3, 5), (7, 4), (8, 8)]


def _by_definition(x):
    """The four orders written out with explicit loops."""
    B, C, H, W = x.shape
    rows = [x[:, :, i, j] for i in range(H) for j in range(W)]
    cols = [x[:, :, i, j] for j in range(W) for i in range(H)]
    seqs = [rows, cols, rows[::-1], cols[::-1]]
    return torch.stack([torch.stack(s, dim=-1) for s in seqs], dim=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_scan_is_exactly_the_four_orders(backend, H, W, dtype):
    x = torch.randn(2, 3, H, W, device=DEVICE).to(dtype)
    out = cross_scan(x, backend=backend)
    assert out.shape == (2, 4, 3, H * W) and out.dtype == dtype
    assert torch.equal(out, _by_definition(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", SIZES)
def test_merge_is_the_adjoint(backend, H, W):
    x = torch.randn(2, 3, H, W, dtype=torch.float64, device=DEVICE)
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=DEVICE)
    lhs = (cross_scan(x, backend=backend) * y).sum()
    rhs = (x * cross_merge(y, H, W, backend=backend)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    # and the merge sums exactly the four entries of each pixel
    expected = torch.zeros(2, 3, H * W, dtype=torch.float64, device=DEVICE)
    index = _by_definition(torch.arange(H * W, device=DEVICE).view(1, 1, H, W).double()).long()[0, :, 0]
    for k in range(4):
        expected.index_add_(2, index[k], y[:, k])
    torch.testing.assert_close(cross_merge(y, H, W, backend=backend), expected.view(2, 3, H, W), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_low_precision_matches_float64(backend, dtype):
    y = torch.randn(2, 4, 3, 35, device=DEVICE).to(dtype)
    out = cross_merge(y, 5, 7, backend=backend)
    assert out.dtype == dtype
    expected = cross_merge(y.double(), 5, 7, backend="reference")
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol * 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", [(3, 5), (1, 4)])
def test_backward_of_each_is_the_other(backend, H, W):
    x = torch.randn(2, 3, H, W, dtype=torch.float64, device=DEVICE, requires_grad=True)
    g = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=DEVICE)
    (gx,) = torch.autograd.grad(cross_scan(x, backend=backend), x, g)
    torch.testing.assert_close(gx, cross_merge(g, H, W, backend="reference"), rtol=1e-12, atol=1e-12)
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=DEVICE, requires_grad=True)
    gm = torch.randn(2, 3, H, W, dtype=torch.float64, device=DEVICE)
    (gy,) = torch.autograd.grad(cross_merge(y, H, W, backend=backend), y, gm)
    assert torch.equal(gy, cross_scan(gm, backend="reference"))


def test_gradcheck_torch_path():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 2, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: cross_scan(t, backend="torch"), (x,))
    assert torch.autograd.gradcheck(lambda t: cross_merge(t, 3, 4, backend="torch"), (y,))


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected x of shape"):
        cross_scan(torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match="must be one of"):
        cross_scan(torch.ones(1, 1, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="Hgt·Wdt = 12"):
        cross_merge(torch.randn(1, 4, 2, 10), 3, 4)
    with pytest.raises(ValueError, match="Hgt must be a positive integer"):
        cross_merge(torch.randn(1, 4, 2, 10), 0, 4)
    with pytest.raises(ValueError, match="expected y of shape"):
        cross_merge(torch.randn(1, 3, 2, 12), 3, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_large_image_matches_torch():
    x = torch.randn(4, 96, 56, 57, device="cuda")
    assert torch.equal(cross_scan(x, backend="triton"), cross_scan(x, backend="torch"))
    y = torch.randn(4, 4, 96, 56 * 57, device="cuda")
    torch.testing.assert_close(cross_merge(y, 56, 57, backend="triton"), cross_merge(y, 56, 57, backend="torch"))
