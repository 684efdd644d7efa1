"""kernels.selective_scan, Triton backend: forward and every gradient against the float64
reference loop.

On a CPU-only machine the kernels run in the Triton interpreter (conftest sets
TRITON_INTERPRET=1). Its scan calls the combine function once per element; the fixture
``fast_interpreter_scan`` replaces that loop by one call per position along the scanned axis on
whole slices (the same arithmetic in the same order), which turns seconds per test into a
fraction of a second; ``test_stock_interpreter_scan`` runs one case without it. Small tiles (fixture
``small_blocks``) give several tiles along L and several channel blocks at tiny shapes. On a
CUDA machine the same tests run compiled, and the CUDA-only tests at the end check larger
shapes.
"""

import importlib

import pytest
import torch
from compiled_like_eager import assert_compiled_like_eager
from devices import TRITON_DEVICE, requires_cuda
from interpreter_scan import fast_scan
from tolerances import assert_close, assert_close_summed

from kernels import selective_scan

ss_pkg = importlib.import_module("kernels.selective_scan")
pytestmark = pytest.mark.skipif("triton" not in ss_pkg._IMPLEMENTATIONS, reason="triton is not installed")
if "triton" in ss_pkg._IMPLEMENTATIONS:
    sst = importlib.import_module("kernels.selective_scan.triton")

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0")
# Gradients of tensors shared over batch, time or channels sum many terms of either sign: they
# are compared relative to their largest entry.
SUMMED = {"A", "B", "C", "D", "delta_bias"}
# At long L the per-step gradients also sum large terms (over N states and a long adjoint).
SUMMED_LONG = SUMMED | {"u", "delta", "h0"}


@pytest.fixture(autouse=True)
def fast_interpreter_scan(request, monkeypatch):
    if TRITON_DEVICE == "cpu" and request.node.originalname != "test_stock_interpreter_scan":
        fast_scan(monkeypatch)


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiles of 16 steps and at most 2 channels per program."""
    monkeypatch.setattr(sst, "BLOCK_L", 16)
    monkeypatch.setattr(sst, "MIN_BLOCK_L", 16)
    monkeypatch.setattr(sst, "MAX_BLOCK_D", 2)


def make_inputs(Bsz, Dm, N, L, B_kind, C_kind, D=True, z=True, bias=True, softplus=True, h0=True,
                dtype=torch.float32, param_dtype=None, seed=0):
    """Random inputs; B / C kinds: "const" (D, N), "var" (B, N, L), "group" (B, 2, N, L)."""
    g = torch.Generator().manual_seed(seed)
    param_dtype = dtype if param_dtype is None else param_dtype

    def randn(*shape, dt=dtype, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dt)

    def bc(kind):
        shape = {"const": (Dm, N), "var": (Bsz, N, L), "group": (Bsz, 2, N, L)}[kind]
        return randn(*shape)

    if softplus:
        delta = randn(Bsz, Dm, L, scale=0.5, shift=-1.0)
    else:
        delta = (torch.rand(Bsz, Dm, L, generator=g, dtype=torch.float64) * 0.3 + 0.02).to(dtype)
    A = (-(0.5 + torch.rand(Dm, N, generator=g, dtype=torch.float64) * N)).to(param_dtype)
    inputs = {
        "u": randn(Bsz, Dm, L),
        "delta": delta,
        "A": A,
        "B": bc(B_kind),
        "C": bc(C_kind),
        "D": randn(Dm, dt=param_dtype) if D else None,
        "z": randn(Bsz, Dm, L) if z else None,
        "delta_bias": randn(Dm, dt=param_dtype, scale=0.3) if bias else None,
        "h0": randn(Bsz, Dm, N, dt=param_dtype) if h0 else None,
    }
    return inputs, bool(softplus)


def results(inputs, softplus, w_out, w_last, backend, device=TRITON_DEVICE, return_last=True):
    """(out, last, {name: grad}) of Σ out·w_out + Σ last·w_last (without last: Σ out·w_out)."""
    leaves = {k: None if v is None else v.detach().to(device).requires_grad_(True) for k, v in inputs.items()}
    res = selective_scan(
        *(leaves[k] for k in ("u", "delta", "A", "B", "C")),
        D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=softplus,
        return_last_state=return_last, h0=leaves["h0"], backend=backend,
    )  # fmt: skip
    out, last = res if return_last else (res, None)
    loss = (out.double() * w_out.to(device)).sum()
    if return_last:
        loss = loss + (last.double() * w_last.to(device)).sum()
    loss.backward()
    grads = {k: v.grad.cpu() for k, v in leaves.items() if v is not None}
    return out.detach().cpu(), None if last is None else last.detach().cpu(), grads


def check(inputs, softplus, return_last=True, device=TRITON_DEVICE, seed=1, summed=SUMMED):
    """Triton vs the float64 reference on the same (rounded) inputs, every output and gradient at
    the tolerance of its own dtype. The cotangents are representable in the outputs' dtypes."""
    g = torch.Generator().manual_seed(seed)
    Bsz, Dm, L = inputs["u"].shape
    N = inputs["A"].shape[1]
    last_dtype = torch.float64 if inputs["u"].dtype == torch.float64 else torch.float32
    w_out = torch.randn(Bsz, Dm, L, generator=g, dtype=torch.float64).to(inputs["u"].dtype).double()
    w_last = torch.randn(Bsz, Dm, N, generator=g, dtype=torch.float64).to(last_dtype).double()
    got = results(inputs, softplus, w_out, w_last, "triton", device, return_last)
    wide = {k: None if v is None else v.double() for k, v in inputs.items()}
    want = results(wide, softplus, w_out, w_last, "reference", "cpu", return_last)
    out, last, grads = got
    assert out.shape == inputs["u"].shape and out.dtype == inputs["u"].dtype
    assert_close(out, want[0], dtype=out.dtype, msg="out")
    if return_last:
        assert last.shape == (Bsz, Dm, N) and last.dtype == last_dtype
        assert_close(last, want[1], dtype=last_dtype, msg="last_state")
    for name in NAMES:
        if inputs[name] is None:
            continue
        leaf = inputs[name]
        x, y = grads[name], want[2][name]
        assert x.shape == leaf.shape and x.dtype == leaf.dtype, name
        compare = assert_close_summed if name in summed else assert_close
        compare(x, y, dtype=leaf.dtype, msg=f"grad {name}")


# (L, D, N, B kind, C kind, D, z, delta_bias, softplus, h0): every option on and off, odd N,
# one tile, a partial tile, several tiles; two channel blocks per group with "var".
CASES = [
    (1, 3, 3, "const", "const", False, False, False, False, False),
    (7, 4, 8, "var", "var", True, True, True, True, True),
    (40, 4, 5, "group", "group", True, False, True, True, False),
    (70, 4, 8, "group", "const", False, True, False, False, True),
    (70, 5, 3, "const", "var", True, True, True, False, True),
    (40, 3, 7, "var", "const", True, True, False, True, False),
]


@pytest.mark.parametrize("L, Dm, N, Bk, Ck, D, z, bias, softplus, h0", CASES)
def test_matches_reference(small_blocks, L, Dm, N, Bk, Ck, D, z, bias, softplus, h0):
    inputs, sp = make_inputs(2, Dm, N, L, Bk, Ck, D, z, bias, softplus, h0, seed=L + N)
    check(inputs, sp)


def test_float64_at_float64_tolerance(small_blocks):
    # float64 inputs are computed in float64: checks the formulas to rounding.
    inputs, sp = make_inputs(2, 4, 5, 40, "group", "var", dtype=torch.float64, seed=3)
    check(inputs, sp)


@pytest.mark.parametrize("Bk, Ck", [("group", "var"), ("var", "group")], ids=["B-grouped", "C-grouped"])
def test_channel_blocks_stay_inside_a_group(small_blocks, Bk, Ck):
    """Guards _block_d's divisor rule: D = 6 in two groups of 3 channels (blocks of at most 2
    would straddle the groups and read the wrong B or C). The rule must hold for C's groups
    as well as B's, with the other one ungrouped."""
    inputs, sp = make_inputs(2, 6, 3, 20, Bk, Ck, seed=11)
    check(inputs, sp)


def test_softplus_up_to_its_linear_branch_float64(small_blocks):
    """Guards the kernel's softplus (and its slope) for delta + delta_bias up to 20, where it turns
    linear; float64, so an early cut (off by e^-x) shows."""
    inputs, sp = make_inputs(2, 3, 4, 24, "var", "const", dtype=torch.float64, seed=12)
    n = inputs["delta"].numel()
    pre = torch.linspace(-4.0, 19.5, n, dtype=torch.float64)[torch.randperm(n, generator=torch.Generator().manual_seed(13))]
    inputs["delta"] = pre.view(inputs["delta"].shape) - inputs["delta_bias"][:, None]
    assert sp
    check(inputs, sp)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision(small_blocks, dtype):
    # Half activations, B and C; float32 A, D, delta_bias, h0 (as in a Mamba layer).
    inputs, sp = make_inputs(2, 4, 8, 70, "group", "var", dtype=dtype, param_dtype=torch.float32, seed=4)
    check(inputs, sp)


def test_default_tiles_and_strided_inputs():
    # The launch heuristics as on a GPU (two tiles of 64 at L = 70); u and B arrive as strided views.
    inputs, sp = make_inputs(2, 4, 6, 70, "var", "const", seed=5)
    inputs["u"] = inputs["u"].transpose(1, 2).contiguous().transpose(1, 2)
    inputs["B"] = inputs["B"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not inputs["u"].is_contiguous()
    check(inputs, sp)


def test_out_only(small_blocks):
    # return_last_state=False: no cotangent reaches last_state.
    inputs, sp = make_inputs(2, 4, 4, 20, "var", "var", seed=6)
    check(inputs, sp, return_last=False)


def test_non_contiguous_cotangents(small_blocks):
    """The cotangents of out and of the last state arrive as transposed views (a loss that
    reads them through .transpose): the backward reads them in their own layout, every
    gradient as the float64 reference's. D != N, so a read in the wrong layout permutes
    the values."""
    inputs, sp = make_inputs(2, 3, 5, 20, "var", "const", seed=14)
    g = torch.Generator().manual_seed(15)
    w_out = torch.randn(2, 20, 3, generator=g, dtype=torch.float64)  # (Bsz, L, D)
    w_last = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)  # (Bsz, N, D)
    grads = []
    for backend, device, dtype in (("triton", TRITON_DEVICE, torch.float32), ("reference", "cpu", torch.float64)):
        leaves = {k: v.detach().to(device, dtype).requires_grad_(True) for k, v in inputs.items() if v is not None}
        out, last = selective_scan(
            *(leaves[k] for k in ("u", "delta", "A", "B", "C")), D=leaves["D"], z=leaves["z"],
            delta_bias=leaves["delta_bias"], delta_softplus=sp, return_last_state=True, h0=leaves["h0"],
            backend=backend,
        )  # fmt: skip
        loss = (out.transpose(1, 2) * w_out.to(device, dtype)).sum()
        (loss + (last.transpose(1, 2) * w_last.to(device, dtype)).sum()).backward()
        grads.append({k: v.grad.cpu() for k, v in leaves.items()})
    for name, want in grads[1].items():
        compare = assert_close_summed if name in SUMMED else assert_close
        compare(grads[0][name], want, dtype=torch.float32, msg=f"grad {name}")


def test_stock_interpreter_scan(small_blocks):
    # The interpreter's own per-element scan (on a GPU: an ordinary run).
    inputs, sp = make_inputs(1, 2, 3, 20, "var", "const", seed=7)
    check(inputs, sp)


def test_no_grad_matches_grad_path(small_blocks):
    inputs, sp = make_inputs(2, 4, 4, 20, "group", "var", seed=8)
    args = {k: None if v is None else v.to(TRITON_DEVICE) for k, v in inputs.items()}
    kw = {"D": args["D"], "z": args["z"], "delta_bias": args["delta_bias"], "delta_softplus": sp, "h0": args["h0"]}
    bcd = [args[k] for k in ("u", "delta", "A", "B", "C")]
    with torch.no_grad():
        out, last = selective_scan(*bcd, **kw, return_last_state=True, backend="triton")
    leaf = args["u"].clone().requires_grad_(True)
    out2, last2 = selective_scan(leaf, *bcd[1:], **kw, return_last_state=True, backend="triton")
    assert torch.equal(out, out2.detach()) and torch.equal(last, last2.detach())


def test_complex_A_runs_the_chunked_pytorch_path():
    """Complex A is not in the Triton kernel: "triton" (the default on CUDA) runs the chunked
    PyTorch path, values and gradients, which agree with the sequential loop."""
    g = torch.Generator().manual_seed(9)
    u, delta, z = torch.randn(2, 3, 37, generator=g), torch.rand(2, 3, 37, generator=g), torch.randn(2, 3, 37, generator=g)
    A = torch.complex(-torch.rand(3, 2, generator=g), torch.randn(3, 2, generator=g))
    B = torch.randn(2, 2, 37, generator=g, dtype=torch.complex64)
    C = torch.randn(3, 2, generator=g, dtype=torch.complex64)
    D = torch.randn(3, generator=g)
    leaves = [t.to(TRITON_DEVICE).requires_grad_() for t in (u, delta, A, B, C, D, z)]
    results = {}
    for backend in ("triton", "torch", "reference"):
        out, last = selective_scan(*leaves[:6], z=leaves[6], return_last_state=True, backend=backend)
        grads = torch.autograd.grad((out.square().sum() + last.abs().square().sum()), leaves)
        results[backend] = (out, last, *grads)
    assert all(torch.equal(a, b) for a, b in zip(results["triton"], results["torch"]))
    for ours, loop in zip(results["triton"], results["reference"]):
        torch.testing.assert_close(ours, loop, rtol=1e-4, atol=1e-4)


def test_zero_length():
    u = torch.zeros(2, 3, 0, device=TRITON_DEVICE)
    A = -torch.ones(3, 4, device=TRITON_DEVICE)
    h0 = torch.randn(2, 3, 4, device=TRITON_DEVICE)
    out, last = selective_scan(u, u, A, A, A, h0=h0, return_last_state=True, backend="triton")
    assert out.shape == (2, 3, 0) and torch.equal(last, h0)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inputs, _ = make_inputs(1, 2, 2, 3, "const", "const")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        selective_scan(*(inputs[k] for k in ("u", "delta", "A", "B", "C")), backend="triton")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("Bk, Ck", [("var", "var"), ("group", "const")])
def test_cuda_large_shapes(dtype, Bk, Ck):
    inputs, sp = make_inputs(2, 64, 16, 2048, Bk, Ck, dtype=dtype, param_dtype=torch.float32, seed=10)
    check(inputs, sp, device="cuda", summed=SUMMED_LONG)


@requires_cuda
def test_cuda_default_backend_is_triton():
    inputs, _ = make_inputs(2, 32, 16, 300, "var", "var", seed=11)
    args = [inputs[k].cuda() for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan(*args, delta_softplus=True)
    assert out.is_cuda and torch.equal(out, selective_scan(*args, delta_softplus=True, backend="triton"))


def test_softplus_slope_is_one_above_its_threshold_float64():
    """Above 20 softplus(x) is x itself (forward and reference): its slope is 1 there, not
    sigmoid(x) = 1 - 2e-9, a mismatch visible in float64 delta gradients."""
    g = torch.Generator().manual_seed(3)
    u, B, C = torch.randn(1, 2, 9, generator=g, dtype=torch.float64), *torch.randn(2, 1, 3, 9, generator=g,
                                                                                    dtype=torch.float64)
    A = -torch.rand(2, 3, generator=g, dtype=torch.float64)
    delta = torch.full((1, 2, 9), 20.5, dtype=torch.float64)
    grads = []
    for backend in ("triton", "reference"):
        u, A, B, C, delta = (t.to(TRITON_DEVICE) for t in (u, A, B, C, delta))
        d = delta.clone().requires_grad_(True)
        out = selective_scan(u, d, A, B, C, delta_softplus=True, backend=backend)
        grads.append(torch.autograd.grad(out.sum(), d)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=1e-13)


# Under torch.compile the launches run as torch.library ops (kernels.selective_scan.triton_op).


def canonical(inputs):
    """The op's arguments: B and C as the dispatcher passes them ((D, N) or (Bsz, G, N, L))."""
    args = {k: None if v is None else v.to(TRITON_DEVICE) for k, v in inputs.items()}
    for k in ("B", "C"):
        if args[k].dim() == 3:
            args[k] = args[k].unsqueeze(1)
    return [args[k] for k in NAMES]


@pytest.mark.parametrize("L, Bk, Ck, options, grad, dtype", [
    (1, "const", "const", False, True, torch.float32),
    (40, "group", "var", True, True, torch.float32),  # several tiles (small_blocks), every option
    (20, "var", "const", True, False, torch.float32),  # inference: no tile states saved
    (20, "var", "var", True, True, torch.float16),  # half u: out in float16, the states in float32
])
def test_compile_op_passes_opcheck(small_blocks, L, Bk, Ck, options, grad, dtype):
    """Fake outputs match the real ones (the tile states' count is a size of its own; with half
    u, the last state and tile states in the float32 compute dtype), the registered autograd
    gives gradients, and the op survives AOTAutograd tracing with static and dynamic shapes."""
    from torch.library import opcheck

    from kernels.selective_scan.triton_op import _forward_op

    inputs, sp = make_inputs(2, 4, 3, L, Bk, Ck, D=options, z=options, bias=options, softplus=options,
                             h0=options, dtype=dtype, param_dtype=torch.float32, seed=20)
    args = [None if t is None else t.requires_grad_(grad) for t in canonical(inputs)]
    opcheck(_forward_op, (*args, sp, grad))


@pytest.mark.parametrize("return_last, lengths", [(True, (20, 37)), (False, (20,))])
def test_compiled_with_fullgraph_gives_the_eager_numbers(small_blocks, return_last, lengths):
    """torch.compile(fullgraph=True) over the Triton op (no graph break): the same launches as
    eager mode, so the same outputs and gradients; a second length is traced with L
    symbolic and reuses the op."""

    def scan(u, delta, A, B, C, D, z, delta_bias, h0):
        res = selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
                             return_last_state=return_last, h0=h0, backend="triton")
        return torch.cat([res[0].flatten(), res[1].flatten()]) if return_last else res

    assert_compiled_like_eager(scan, *(
        canonical(make_inputs(2, 4, 3, L, "group", "var", seed=21 + L)[0]) for L in lengths
    ))
