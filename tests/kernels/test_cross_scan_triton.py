"""kernels.cross_scan / cross_merge backend="triton": tiling, masking of edge tiles,
accumulation precision and second-order gradients.

On CPU-only machines the kernels run in the Triton interpreter (tests/conftest.py) on tiny
shapes, with the tile size shrunk so that small images still span several tiles; the
CUDA-only checks at the end run the compiled kernels against the torch backend. Under
``torch.compile`` the two ops run as custom ops (triton_op.py), each the other's backward:
they pass ``torch.library.opcheck``, and a compiled call gives eager mode's numbers.
"""

import importlib

import pytest
import torch
from compiled_like_eager import assert_compiled_like_eager
from devices import TRITON_DEVICE, requires_cuda
from tolerances import assert_close
from torch.library import opcheck

from kernels import cross_merge, cross_scan
from kernels.cross_scan import triton_op

cs_pkg = importlib.import_module("kernels.cross_scan")
pytestmark = pytest.mark.skipif("triton" not in cs_pkg._SCAN, reason="triton is not installed")
if "triton" in cs_pkg._SCAN:
    from kernels.cross_scan import triton as triton_impl


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of at most 4 × 4 pixels (2 × 8, 1 × 16 on thin images)."""
    monkeypatch.setattr(triton_impl, "TILE", 4)
    monkeypatch.setattr(triton_impl, "MAX_TILE_ELEMENTS", 16)


@pytest.mark.parametrize("H, W", [(1, 1), (1, 7), (9, 1), (2, 50), (4, 4), (3, 5), (7, 11), (13, 6)])
def test_tile_shape_covers_at_most_the_budget(H, W):
    tile_h, tile_w = triton_impl.tile_shape(H, W)
    for t in (tile_h, tile_w):
        assert t >= 1 and t & (t - 1) == 0
    assert tile_h * tile_w <= triton_impl.MAX_TILE_ELEMENTS
    assert tile_h <= max(1, 2 * H - 1) and tile_w <= max(1, 2 * W - 1)  # no tile twice the image


def test_thin_images_get_long_tiles():
    assert triton_impl.tile_shape(1, 5000) == (1, triton_impl.MAX_TILE_ELEMENTS)
    assert triton_impl.tile_shape(5000, 1) == (triton_impl.MAX_TILE_ELEMENTS, 1)
    assert triton_impl.tile_shape(300, 300) == (triton_impl.TILE, triton_impl.TILE)


@pytest.mark.parametrize("H, W", [(1, 37), (37, 1), (5, 9), (7, 11), (8, 8), (13, 6)])
def test_several_tiles_with_masked_edges(small_tiles, H, W):
    torch.manual_seed(0)
    x = torch.randn(2, 3, H, W, device=TRITON_DEVICE)
    assert torch.equal(cross_scan(x, backend="triton"), cross_scan(x, backend="reference"))
    y = torch.randn(2, 4, 3, H * W, dtype=torch.float64, device=TRITON_DEVICE)
    torch.testing.assert_close(
        cross_merge(y, H, W, backend="triton"), cross_merge(y, H, W, backend="reference"), rtol=0, atol=1e-12
    )


def test_scan_writes_every_position(small_tiles):
    # a poisoned output buffer would show through any position the kernel skipped
    x = torch.arange(35, dtype=torch.float32, device=TRITON_DEVICE).view(1, 1, 5, 7)
    out = cross_scan(x, backend="triton")
    assert torch.equal(out[0, :, 0].sort(dim=-1).values, torch.arange(35, device=TRITON_DEVICE).float().expand(4, 35))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_merge_accumulates_in_float32(dtype):
    # big + 1 + 1 is representable in the half type, big + 1 is not (it rounds back to big),
    # so the sum is exact only when accumulated in float32
    big = {torch.float16: 2048.0, torch.bfloat16: 256.0}[dtype]
    y = torch.tensor([big, 1.0, 1.0, 0.0], device=TRITON_DEVICE).view(1, 4, 1, 1).to(dtype)
    out = cross_merge(y, 1, 1, backend="triton")
    assert out.dtype == dtype and out.item() == big + 2


def test_float64_merge_accumulates_in_float64():
    y = torch.tensor([1.0, 1e-10, 0.0, 0.0], dtype=torch.float64, device=TRITON_DEVICE).view(1, 4, 1, 1)
    assert cross_merge(y, 1, 1, backend="triton").item() == 1.0 + 1e-10  # lost in float32


def test_mixed_second_order_gradient_through_the_kernels(small_tiles):
    # d/dx <scan(x), w> = merge(w), built by the Triton merge with a graph; its derivative
    # along v with respect to w is scan(v), by the Triton scan
    torch.manual_seed(1)
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    w = torch.randn(1, 4, 2, 15, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    (gx,) = torch.autograd.grad((cross_scan(x, backend="triton") * w).sum(), x, create_graph=True)
    torch.testing.assert_close(gx, cross_merge(w.detach(), 3, 5, backend="reference"), rtol=0, atol=1e-12)
    v = torch.randn_like(gx)
    (gw,) = torch.autograd.grad((gx * v).sum(), w)
    assert torch.equal(gw, cross_scan(v, backend="reference"))


def test_expanded_gradient_is_made_contiguous():
    x = torch.randn(1, 2, 3, 4, device=TRITON_DEVICE, requires_grad=True)
    g = torch.ones(1, 1, 1, 1, device=TRITON_DEVICE).expand(1, 4, 2, 12)  # stride-0 grad
    (gx,) = torch.autograd.grad(cross_scan(x, backend="triton"), x, g)
    assert torch.equal(gx, torch.full_like(x, 4.0))


@pytest.mark.parametrize("H, W, dtype", [(3, 5, torch.float32), (1, 7, torch.float64), (6, 2, torch.float16)])
def test_ops_pass_opcheck(small_tiles, H, W, dtype):
    """The ops that stand for the Triton path under torch.compile: fake outputs match the real
    ones, and the registered backward (the other op) runs under AOTAutograd with symbolic shapes."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, H, W, generator=g, dtype=dtype).to(TRITON_DEVICE).requires_grad_()
    y = torch.randn(2, 4, 3, H * W, generator=g, dtype=dtype).to(TRITON_DEVICE).requires_grad_()
    opcheck(triton_op._scan_op, (x,))
    opcheck(triton_op._merge_op, (y, H, W))


def test_ops_gradients_are_each_other_to_any_order(small_tiles):
    # as test_mixed_second_order_gradient_through_the_kernels, on the ops themselves
    torch.manual_seed(5)
    x = torch.randn(1, 2, 3, 5, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    w = torch.randn(1, 4, 2, 15, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
    (gx,) = torch.autograd.grad((triton_op._scan_op(x) * w).sum(), x, create_graph=True)
    torch.testing.assert_close(gx, cross_merge(w.detach(), 3, 5, backend="reference"), rtol=0, atol=1e-12)
    v = torch.randn_like(gx)
    (gw,) = torch.autograd.grad((gx * v).sum(), w)
    assert torch.equal(gw, cross_scan(v, backend="reference"))


def test_compiled_calls_are_one_graph_with_eager_numbers(small_tiles):
    """torch.compile(fullgraph=True) on the Triton backend: scan and merge run as their custom
    ops (the same launches as eager mode), so the output and the input gradient match eager; the
    second image size retraces with symbolic sizes."""

    def scan_then_merge(x):
        _, _, H, W = x.shape
        return cross_merge(cross_scan(x, backend="triton").sin(), H, W, backend="triton")

    images = ([torch.randn(2, 3, H, W, device=TRITON_DEVICE)] for H, W in ((3, 5), (6, 7)))
    assert_compiled_like_eager(scan_then_merge, *images)


# ----------------------------------------------------------------------------- CUDA only


@requires_cuda
@pytest.mark.parametrize("H, W", [(56, 57), (1, 10000), (10000, 1), (64, 64), (7, 129)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cuda_matches_torch(H, W, dtype):
    torch.manual_seed(2)
    x = torch.randn(2, 24, H, W, device="cuda").to(dtype)
    assert torch.equal(cross_scan(x, backend="triton"), cross_scan(x, backend="torch"))
    y = torch.randn(2, 4, 24, H * W, device="cuda").to(dtype)
    out = cross_merge(y, H, W, backend="triton")
    assert out.dtype == dtype
    assert_close(out, cross_merge(y.double(), H, W, backend="torch"))


@requires_cuda
def test_cuda_default_backend_is_triton_with_grads(monkeypatch):
    torch.manual_seed(3)
    ran = []
    for table in (cs_pkg._SCAN, cs_pkg._MERGE):
        impl = table["triton"]
        monkeypatch.setitem(table, "triton", lambda *a, impl=impl: ran.append(impl.__name__) or impl(*a))
    x = torch.randn(4, 96, 56, 56, device="cuda", requires_grad=True)
    xs = cross_scan(x)
    assert torch.equal(xs, cross_scan(x.detach(), backend="torch"))
    (gx,) = torch.autograd.grad(cross_merge(xs, 56, 56).sum(), x)
    assert torch.equal(gx, torch.full_like(x, 16.0))
    assert ran == ["cross_scan_triton", "cross_merge_triton"]


@requires_cuda
def test_cuda_many_images_in_the_first_grid_dim():
    # B·C = 70000 programs along grid axis 0 (axes 1 and 2 would be capped at 65535)
    x = torch.randn(70000, 1, 3, 5, device="cuda")
    assert torch.equal(cross_scan(x, backend="triton"), cross_scan(x, backend="torch"))
