"""kernels.selective_scan_2d, Triton backend: forward and the gradient of every input against
the independent float64 loop of test_selective_scan_2d.py, with several row tiles, partial
tiles, every option, grouped B / C, float64 and half inputs.

On a CPU-only machine the kernels run in the Triton interpreter (conftest sets
TRITON_INTERPRET=1). Its scan calls the combine function once per element; the fixture
``fast_interpreter_scan`` replaces that loop by one call per position along the scanned axis
on whole slices (the same arithmetic in the same order), and ``test_stock_interpreter_scan``
runs one case without it. The fixture ``small_tiles`` caps the rows per tile at 2, so that
tiny images have several row tiles (and a partial last one). Under ``torch.compile`` the path
is a pair of custom ops (triton_op.py): they pass ``torch.library.opcheck``, and a compiled
call gives eager mode's numbers. On a CUDA machine the same tests run compiled, and the
CUDA-only tests at the end check larger shapes against the torch path.
"""

import importlib

import pytest
import torch
from compiled_like_eager import assert_compiled_like_eager
from devices import TRITON_DEVICE, requires_cuda
from interpreter_scan import fast_scan
from launch_recording import record_launches
from test_selective_scan_2d import (
    NAMES,
    assert_grads_close,
    make_inputs,
    oracle_loop,
    outputs_and_grads,
)
from tolerances import assert_close
from torch.library import opcheck

from kernels import selective_scan_2d
from kernels.selective_scan_2d import triton_op
from kernels.selective_scan_2d.triton_op import selective_scan_2d_triton

ss2_pkg = importlib.import_module("kernels.selective_scan_2d")
pytestmark = pytest.mark.skipif("triton" not in ss2_pkg._IMPLEMENTATIONS, reason="triton is not installed")
if "triton" in ss2_pkg._IMPLEMENTATIONS:
    sst = importlib.import_module("kernels.selective_scan_2d.triton")

F64 = torch.float64


@pytest.fixture(autouse=True)
def fast_interpreter_scan(request, monkeypatch):
    if TRITON_DEVICE == "cpu" and request.node.originalname != "test_stock_interpreter_scan":
        fast_scan(monkeypatch)


@pytest.fixture
def small_tiles(monkeypatch):
    """At most 2 rows per tile."""
    monkeypatch.setattr(sst, "MAX_BLOCK_H", 2)


def on_device(x):
    return {k: None if v is None else v.to(TRITON_DEVICE) for k, v in x.items()}


def check(x, softplus=True):
    """Triton on ``x`` against the float64 loop on the same (rounded) inputs: the output and
    every gradient, at the tolerance of the input's dtype."""
    dtype = x["u"].dtype
    out, grads = outputs_and_grads(
        lambda **k: selective_scan_2d(**k, delta_softplus=softplus, backend="triton"), on_device(x)
    )
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=softplus), x)
    assert out.shape == x["u"].shape and out.dtype == dtype
    assert all(grads[k].dtype == x[k].dtype for k in grads)
    assert_close(out.cpu(), want, dtype=dtype, msg="out")
    assert_grads_close({k: g.cpu() for k, g in grads.items()}, want_grads, dtype=dtype)


# (H, W, D, N, G, options, softplus): one row, one column, a single pixel, H != W not powers
# of two (partial last tile and padded columns), every option on and off, G = 1 and 2.
CASES = [
    (1, 1, 3, 3, None, (), False),
    (1, 7, 4, 4, 2, ("D", "z", "delta_bias"), True),
    (7, 1, 3, 4, None, ("z",), True),
    (5, 7, 4, 3, 2, ("D", "z", "delta_bias"), True),
    (7, 5, 4, 4, 1, ("D",), False),
    (8, 8, 3, 3, None, ("delta_bias",), True),
    (5, 8, 4, 3, 2, ("z", "delta_bias"), False),
]


@pytest.mark.parametrize("H, W, Dm, N, G, options, softplus", CASES)
def test_matches_loop(small_tiles, H, W, Dm, N, G, options, softplus):
    x = make_inputs(Bsz=2, Dm=Dm, N=N, H=H, W=W, G=G, dtype=torch.float32, options=options, seed=H * 8 + W)
    if not softplus:
        x["delta"] = x["delta"].abs() + 0.05
    check(x, softplus)


@pytest.mark.parametrize("block_h", [1, 2, 4, 8])
def test_rows_per_tile_do_not_change_the_result(block_h):
    # 7 rows in tiles of 1, 2, 4 (partial last tile) and 8 (one tile, one padded row).
    x = make_inputs(Bsz=2, Dm=4, N=3, H=7, W=5, G=2, dtype=torch.float32, seed=block_h)
    out, grads = outputs_and_grads(
        lambda **k: selective_scan_2d_triton(**k, delta_softplus=True, block_h=block_h), on_device(x)
    )
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=True), x)
    assert_close(out.cpu(), want)
    assert_grads_close({k: g.cpu() for k, g in grads.items()}, want_grads, dtype=torch.float32)


def test_float64_at_float64_tolerance(small_tiles):
    # float64 inputs are computed in float64: checks the formulas to rounding.
    check(make_inputs(Bsz=2, Dm=4, N=3, H=5, W=7, G=2, seed=11))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision(small_tiles, dtype):
    # Half activations, B and C; float32 A, D, delta_bias (as in a Mamba2D layer).
    x = make_inputs(Bsz=2, Dm=4, N=4, H=5, W=6, G=2, dtype=dtype, seed=12)
    for k in ("A", "D", "delta_bias"):
        x[k] = x[k].float()
    check(x)


def test_default_tiles_and_strided_inputs():
    # The launch heuristics as on a GPU; u and B arrive as strided views.
    x = make_inputs(Bsz=2, Dm=3, N=4, H=6, W=5, dtype=torch.float32, seed=13)
    x["u"] = x["u"].transpose(2, 3).contiguous().transpose(2, 3)
    x["B"] = x["B"].transpose(1, 3).contiguous().transpose(1, 3)
    assert not x["u"].is_contiguous() and not x["B"].is_contiguous()
    check(x)


def test_gradient_of_some_inputs_only(small_tiles):
    x = make_inputs(Bsz=2, Dm=4, N=3, H=5, W=4, G=2, dtype=torch.float32, seed=14)
    ref = {k: v.double() for k, v in x.items()}
    x = on_device(x)
    for name in ("u", "B"):
        leaf = x[name].clone().requires_grad_()
        out = selective_scan_2d(**{**x, name: leaf}, delta_softplus=True, backend="triton")
        (grad,) = torch.autograd.grad(out.sum(), leaf)
        ref_leaf = ref[name].clone().requires_grad_()
        (want,) = torch.autograd.grad(oracle_loop(**{**ref, name: ref_leaf}, softplus=True).sum(), ref_leaf)
        assert_close(grad.cpu(), want, dtype=torch.float32, msg=name)


def test_no_grad_matches_grad_path():
    # Without gradients the forward takes taller tiles and saves no carries.
    x = on_device(make_inputs(Bsz=2, Dm=4, N=3, H=9, W=5, G=2, dtype=torch.float32, seed=15))
    with torch.no_grad():
        out = selective_scan_2d(**x, delta_softplus=True, backend="triton")
    leaf = x["u"].clone().requires_grad_()
    out2 = selective_scan_2d(**{**x, "u": leaf}, delta_softplus=True, backend="triton")
    assert_close(out, out2)


@pytest.fixture
def band_carries(monkeypatch):
    """The band-carry buffers of the forward launches so far (the kernel's 10th argument)."""
    launches = record_launches(monkeypatch, sst, "_fwd_kernel")
    return lambda: [args[9] for args in launches]


@pytest.mark.parametrize("block_h, block_w, n_bands", [(1, 8, 7), (2, 2, 4), (2, 8, 4), (4, 4, 2), (8, 8, 1)])
def test_no_grad_forward_keeps_two_band_carries(band_carries, block_h, block_w, n_bands):
    # Without a backward the forward needs only the band above: two slots by band parity instead
    # of one per band, with the same result to the bit (same tiles, same arithmetic); 7 x 5
    # images in 7, 4, 2 and 1 bands, one or several width tiles.
    Bsz, Dm, N, H, W = 2, 3, 3, 7, 5
    x = on_device(make_inputs(Bsz=Bsz, Dm=Dm, N=N, H=H, W=W, G=1, dtype=torch.float32, seed=40 + block_h * block_w))

    def run(**k):
        return selective_scan_2d_triton(**k, delta_softplus=True, block_h=block_h, block_w=block_w)

    with torch.no_grad():
        out = run(**x)
    leaf = x["u"].clone().requires_grad_()
    out_grad = run(**{**x, "u": leaf})
    assert out_grad.requires_grad
    assert torch.equal(out, out_grad.detach())
    no_grad_carries, grad_carries = band_carries()
    assert grad_carries.shape == (Bsz, Dm, n_bands, N, W)  # every band's, for the backward
    assert no_grad_carries.shape == (Bsz, Dm, min(n_bands, 2), N, W)
    assert_close(out.cpu(), oracle_loop(**{k: v.cpu() for k, v in x.items()}, softplus=True))


@pytest.mark.parametrize("block_h, block_w", [(1, 1), (2, 2), (4, 2), (2, 4), (8, 8)])
def test_width_tiles_do_not_change_the_result(block_h, block_w):
    # 5 x 7 in tiles of every shape: row carries between width tiles, partial last tiles both ways.
    x = make_inputs(Bsz=1, Dm=2, N=3, H=5, W=7, G=2, dtype=torch.float32, options=("D", "z", "delta_bias"),
                    seed=30 + block_h * block_w)
    out, grads = outputs_and_grads(
        lambda **k: selective_scan_2d_triton(**k, delta_softplus=True, block_h=block_h, block_w=block_w),
        on_device(x),
    )
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=True), x)
    assert_close(out.cpu(), want)
    assert_grads_close({k: g.cpu() for k, g in grads.items()}, want_grads, dtype=torch.float32)


def test_wide_rows_are_tiled_along_the_width(monkeypatch):
    # A row of next_pow2(N) * next_pow2(W) = 4 * 16 elements over a MAX_ROW of 8: tiles of 2 columns.
    monkeypatch.setattr(sst, "MAX_ROW", 8)
    assert sst._blocks(3, 3, 11, tile=64)[2] == 2
    check(make_inputs(Bsz=2, Dm=2, N=3, H=3, W=11, G=2, dtype=torch.float32, seed=16))
    with torch.no_grad():
        x = on_device(make_inputs(Bsz=2, Dm=2, N=3, H=3, W=11, dtype=torch.float32, seed=16))
        assert_close(selective_scan_2d(**x, backend="triton"), selective_scan_2d(**x, backend="torch"))


def test_stock_interpreter_scan(small_tiles):
    # The interpreter's own per-element scan (on a GPU: an ordinary run).
    check(make_inputs(Bsz=1, Dm=2, N=2, H=3, W=4, dtype=torch.float32, seed=17))


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = make_inputs(Bsz=1, Dm=2, N=2, H=2, W=2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        selective_scan_2d(**x, backend="triton")


def op_tensors(x, grad):
    """make_inputs' tensors on TRITON_DEVICE as the ops take them: B, C (Bsz, G, N, H, W),
    every tensor a leaf that requires a gradient when ``grad``."""
    x = {k: v.unsqueeze(1) if k in ("B", "C") and v.dim() == 4 else v for k, v in on_device(x).items()}
    return [None if x[k] is None else x[k].requires_grad_(grad) for k in NAMES]


# (H, W, G, options, softplus, grad, block_h, block_w, dtype): several bands and width tiles
# with partial last ones; the launcher's own tiles; inference (no carries saved); float64;
# float16, whose carries (and their empty placeholders) are in the float32 compute dtype.
OPCHECK_CASES = [
    (3, 5, 2, ("D", "z", "delta_bias"), True, True, 2, 2, torch.float32),
    (5, 3, None, (), False, True, None, None, torch.float32),
    (4, 3, 1, ("z",), True, False, 2, None, torch.float32),
    (3, 4, 2, ("D", "delta_bias"), False, True, 1, 2, F64),
    (3, 5, 2, ("D",), True, True, 2, 2, torch.float16),
    (4, 3, None, (), False, False, None, None, torch.float16),
]


@pytest.mark.parametrize("H, W, G, options, softplus, grad, block_h, block_w, dtype", OPCHECK_CASES)
def test_forward_op_passes_opcheck(H, W, G, options, softplus, grad, block_h, block_w, dtype):
    """The op that stands for the path under torch.compile: fake outputs (the carries' band and
    width-tile counts as sizes of their own) match the real ones, and its registered backward
    runs under AOTAutograd with symbolic shapes."""
    x = make_inputs(Bsz=1, Dm=2, N=3, H=H, W=W, G=G, dtype=dtype, options=options, seed=50 + H * W)
    opcheck(triton_op._forward_op, (*op_tensors(x, grad), softplus, grad, block_h, block_w))


def test_backward_op_passes_opcheck_for_some_gradients():
    # unneeded gradients come back as empty placeholders, in the fake outputs too
    x = make_inputs(Bsz=1, Dm=2, N=3, H=3, W=5, G=2, dtype=torch.float32, seed=60)
    tensors = op_tensors(x, grad=False)
    out, carries, row_carries = triton_op._forward_op(*tensors, True, True, 2, 2)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(61)).to(out.device)
    needs = [True, False, True, True, False, False, True, False]
    opcheck(triton_op._backward_op, (dout, *tensors, carries, row_carries, True, 2, 2, needs))


def test_compiled_call_is_one_graph_with_eager_numbers(small_tiles):
    """torch.compile(fullgraph=True) on the Triton backend: the scan runs as its custom ops
    (the same launches as eager mode), so output and every input gradient match eager; the
    second image size retraces with symbolic sizes."""

    def scan(*tensors):
        return selective_scan_2d(**dict(zip(NAMES, tensors)), delta_softplus=True, backend="triton")

    assert_compiled_like_eager(scan, *(
        [on_device(make_inputs(Bsz=1, Dm=2, N=3, H=H, W=W, G=2, dtype=torch.float32, seed=70 + H))[k] for k in NAMES]
        for H, W in ((5, 7), (6, 4))
    ))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("H, W, G", [(32, 32, None), (56, 57, 4), (14, 200, 1), (3, 300, 2), (40, 700, 1)])
def test_cuda_larger_images_match_torch_path(dtype, H, W, G):
    # (3, 300) and (40, 700): wider than one tile at N = 16 (256 columns), so tiled along the width.
    x = make_inputs(Bsz=2, Dm=64, N=16, H=H, W=W, G=G, dtype=dtype, seed=18)
    for k in ("A", "D", "delta_bias"):
        x[k] = x[k].float()
    x = on_device(x)
    out, grads = outputs_and_grads(lambda **k: selective_scan_2d(**k, delta_softplus=True, backend="triton"), x)
    wide = {k: v.double() for k, v in x.items()}
    want, want_grads = outputs_and_grads(lambda **k: selective_scan_2d(**k, delta_softplus=True, backend="torch"),
                                         wide)
    assert_close(out, want, dtype=dtype)
    for name, g in grads.items():
        # sums over long adjoint recurrences and many pixels: relative to the largest entry
        scale = want_grads[name].abs().max().item()
        rtol, atol = (1e-4, 1e-5) if dtype == torch.float32 else (3e-2, 5e-2)
        torch.testing.assert_close(g.double(), want_grads[name], rtol=rtol, atol=max(atol, rtol * scale), msg=name)


def test_softplus_slope_is_one_above_its_threshold_float64():
    """As in the 1D scan: softplus is the identity above 20, so its slope there is exactly 1."""
    import kernels

    g = torch.Generator().manual_seed(3)
    u = torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64)
    B, C = torch.randn(2, 1, 3, 3, 4, generator=g, dtype=torch.float64)
    A = -torch.rand(2, 3, generator=g, dtype=torch.float64)
    grads = []
    u, A, B, C = (t.to(TRITON_DEVICE) for t in (u, A, B, C))
    for backend in ("triton", "reference"):
        d = torch.full((1, 2, 3, 4), 20.5, dtype=torch.float64, device=TRITON_DEVICE, requires_grad=True)
        out = kernels.selective_scan_2d(u, d, A, B, C, delta_softplus=True, backend=backend)
        grads.append(torch.autograd.grad(out.sum(), d)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=1e-13)


@requires_cuda
@pytest.mark.parametrize("H, W", [(64, 64), (96, 40)])
def test_cuda_no_grad_forward_with_two_carry_slots_matches_the_grad_forward(H, W):
    """On a GPU the two alternating band-carry slots of the no-grad forward are read and
    written by all warps of a program: a slot written while it is read would race, which the
    interpreter (one thread) cannot show. Many bands, compared with the one-slot-per-band path
    at the same tiles."""
    x = on_device(make_inputs(Bsz=2, Dm=8, N=16, H=H, W=W, G=1, dtype=torch.float32, seed=21))
    with torch.no_grad():
        fast = selective_scan_2d(**x, delta_softplus=True, backend="triton")
    leaf = x["u"].clone().requires_grad_()
    with_grad = selective_scan_2d(**{**x, "u": leaf}, delta_softplus=True, backend="triton")
    torch.testing.assert_close(fast, with_grad.detach(), rtol=1e-5, atol=1e-5)
