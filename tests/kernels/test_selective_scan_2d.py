"""kernels.selective_scan_2d (2DMamba's row-then-column scan): the "reference" and "torch"
backends against an independent float64 loop, forward and the gradient of every input, every
option, odd sizes; the closed form, the 1D scan when Hgt = 1 or Wdt = 1, and not the all-paths
2D recurrence. The forward checks run the Triton backend too, on inputs on TRITON_DEVICE
(compiled on a GPU, under the interpreter on CPU), against the oracle on CPU; its gradients are
in test_selective_scan_2d_triton.py."""

import functools
import importlib
import math

import pytest
import torch
from devices import on_backend_device, requires_cuda
from tolerances import assert_close, assert_close_summed, assert_rounded_once

import kernels
from kernels import selective_scan, selective_scan_2d

ss2_pkg = importlib.import_module("kernels.selective_scan_2d")  # the package (the attribute is the op)
ss2_torch = importlib.import_module("kernels.selective_scan_2d.pytorch")
HAS_TRITON = "triton" in ss2_pkg._IMPLEMENTATIONS
BACKENDS = ["reference", "torch"] + (["triton"] if HAS_TRITON else [])
F64 = torch.float64
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# gradients that add up terms over batch and pixels (or the channels of a group): compared
# relative to their largest entry, see tolerances.assert_close_summed
SUMMED = {"A", "B", "C", "D", "delta_bias"}


def oracle_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False):
    """The definition, one (batch row, channel) and one pixel at a time, in float64:

        Δ = softplus(delta + delta_bias),   a = exp(Δ A[d]),   b = Δ u B[group of d]
        g[i, j] = a g[i, j-1] + b   (g[i, -1] = 0),   h[i, j] = a h[i-1, j] + g[i, j]   (h[-1, j] = 0)
        out = (C · h + D u) silu(z)

    B, C: (Bsz, N, H, W) or (Bsz, G, N, H, W), each with its own G. Differentiable (built from
    lists, no in-place writes).
    """
    u, delta, A, B, C = (t.to(F64) for t in (u, delta, A, B, C))
    if B.dim() == 4:
        B = B.unsqueeze(1)
    if C.dim() == 4:
        C = C.unsqueeze(1)
    dt = delta if delta_bias is None else delta + delta_bias.to(F64)[:, None, None]
    if softplus:
        dt = torch.log1p(torch.exp(dt))
    Bsz, Dm, H, W = u.shape
    channels = []
    for n in range(Bsz):
        per_d = []
        for d in range(Dm):
            grp_b, grp_c = d * B.shape[1] // Dm, d * C.shape[1] // Dm
            rows, h_above = [], [torch.zeros(A.shape[1], dtype=F64)] * W
            for i in range(H):
                g, row = torch.zeros(A.shape[1], dtype=F64), []
                for j in range(W):
                    a = torch.exp(dt[n, d, i, j] * A[d])
                    g = a * g + dt[n, d, i, j] * u[n, d, i, j] * B[n, grp_b, :, i, j]
                    h_above[j] = a * h_above[j] + g
                    row.append((C[n, grp_c, :, i, j] * h_above[j]).sum())
                rows.append(torch.stack(row) if W else torch.zeros(0, dtype=F64))
            per_d.append(torch.stack(rows) if H else torch.zeros(0, W, dtype=F64))
        channels.append(torch.stack(per_d))
    y = torch.stack(channels)
    if D is not None:
        y = y + D.to(F64)[:, None, None] * u
    if z is not None:
        y = y * z.to(F64) * torch.sigmoid(z.to(F64))
    return y


def make_inputs(Bsz=2, Dm=4, N=3, H=5, W=7, G=None, dtype=F64, options=("D", "z", "delta_bias"), seed=0):
    """Inputs of the public function; B, C are (Bsz, N, H, W), or (Bsz, G, N, H, W) for a G."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)

    bc_shape = (Bsz, N, H, W) if G is None else (Bsz, G, N, H, W)
    return {
        "u": randn(Bsz, Dm, H, W),
        "delta": randn(Bsz, Dm, H, W, scale=0.5),
        "A": (-0.5 - torch.rand(Dm, N, generator=gen, dtype=F64)).to(dtype),
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(Dm) if "D" in options else None,
        "z": randn(Bsz, Dm, H, W) if "z" in options else None,
        "delta_bias": randn(Dm, scale=0.5) if "delta_bias" in options else None,
    }


def outputs_and_grads(fn, x, seed=1):
    """fn(**leaves) and the gradient of every given input for a random cotangent (representable
    in u's dtype, so that a low-precision result and the float64 oracle get the same one; drawn
    on CPU, then put on the output's device, so that both get it on any device)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    out = fn(**{**x, **leaves})
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    cot = cot.to(x["u"].dtype).to(out.dtype).to(out.device)
    grads = torch.autograd.grad(out, list(leaves.values()), cot)
    return out.detach(), dict(zip(leaves, grads))


def assert_grads_close(grads, expected, dtype=F64):
    assert set(grads) == set(expected)
    for name, g in grads.items():
        assert g.shape == expected[name].shape, name
        compare = assert_close_summed if name in SUMMED else assert_close
        compare(g, expected[name], dtype=dtype, msg=f"grad {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", [(1, 1), (1, 6), (5, 1), (5, 7), (8, 3), (4, 4)])
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw"])
def test_forward_matches_loop_odd_sizes(backend, H, W, softplus):
    x = make_inputs(H=H, W=W, G=2 if W % 2 else None, seed=H * 10 + W)
    if not softplus:
        x["delta"] = x["delta"].abs()
    out = selective_scan_2d(**on_backend_device(x, backend), delta_softplus=softplus, backend=backend)
    assert out.shape == x["u"].shape and out.dtype == F64
    assert_close(out, oracle_loop(**x, softplus=softplus))


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("options", [(), ("D",), ("z",), ("delta_bias",), ("D", "z", "delta_bias")],
                         ids=["bare", "D", "z", "bias", "all"])
@pytest.mark.parametrize("G", [None, 1, 2], ids=["BC4d", "G1", "G2"])
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw"])
def test_grad_matches_loop_every_option(backend, options, G, softplus):
    x = make_inputs(H=5, W=3, G=G, options=options, seed=len(options) + 7 * (G or 0))
    if not softplus:
        x["delta"] = x["delta"].abs() + 0.05
    out, grads = outputs_and_grads(lambda **k: selective_scan_2d(**k, delta_softplus=softplus, backend=backend), x)
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=softplus), x)
    assert_close(out, want)
    assert_grads_close(grads, want_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("G_B, G_C", [(None, 2), (2, None), (2, 3), (6, 1)])
def test_B_and_C_with_different_group_counts(backend, G_B, G_C):
    """B and C are grouped independently (as in the 1D op). The kernels read C with B's
    group count: silently wrong, an IndexError, or out-of-bounds memory in the Triton
    backward; the op now spreads both to a common grouping."""
    x = make_inputs(Dm=6, N=3, H=4, W=5, G=G_B, seed=11)
    x["C"] = make_inputs(Dm=6, N=3, H=4, W=5, G=G_C, seed=12)["C"]
    fn = functools.partial(selective_scan_2d, delta_softplus=True, backend=backend)
    if backend == "triton":
        x = {k: v.float() if torch.is_tensor(v) else v for k, v in x.items()}
    out, grads = outputs_and_grads(fn, on_backend_device(x, backend))
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=True), x)
    assert_close(out, want, dtype=x["u"].dtype)
    assert_grads_close(grads, want_grads, dtype=x["u"].dtype)



def test_torch_dA_of_fast_decaying_states_is_accurate_per_entry():
    """dA[d, n] of a state with a = e^{ΔA} << 1 (Δ ≈ 3, A = -(1..N)): the backward used to
    form a·h[i-1] as h - g and a·g[:, j-1] as g - b, which cancel to rounding there, so those
    entries (small next to dA[:, 0], hence invisible to a max-normalized check) were off by
    up to 100%. Float32 against the float64 loop on the same rounded inputs, entry by entry."""
    torch.manual_seed(5)
    Dm, N, H, W = 2, 8, 6, 7
    x = make_inputs(Bsz=1, Dm=Dm, N=N, H=H, W=W, dtype=torch.float32, options=("D", "z"))
    x["delta"] = 0.1 * x["delta"]
    x["delta_bias"] = torch.full((Dm,), math.log(math.expm1(3.0)))  # Δ ≈ 3 after softplus
    x["A"] = -torch.arange(1, N + 1, dtype=torch.float32).repeat(Dm, 1)
    _, grads = outputs_and_grads(functools.partial(selective_scan_2d, delta_softplus=True, backend="torch"), x)
    x64 = {k: (v.to(F64) if v is not None else None) for k, v in x.items()}
    _, expected = outputs_and_grads(functools.partial(oracle_loop, softplus=True), x64)
    relative = ((grads["A"].to(F64) - expected["A"]).abs() / expected["A"].abs()).max().item()
    assert relative < 1e-3, relative

@pytest.mark.parametrize("H, W", [(1, 5), (6, 1), (3, 4)])
def test_torch_gradcheck(H, W):
    x = make_inputs(Bsz=1, Dm=2, N=2, H=H, W=W, G=2)
    leaves = tuple(v.detach().clone().requires_grad_() for v in x.values())

    def f(*args):
        return selective_scan_2d(**dict(zip(x, args)), delta_softplus=True, backend="torch")

    assert torch.autograd.gradcheck(f, leaves)


def test_torch_blocks_over_batch_channels_and_groups(monkeypatch):
    # Blocks of 2 channels, then of 1 channel and 1 batch row: the block loops, group offsets
    # and per-block gradient accumulation, on shapes the default blocks cover at once.
    x = make_inputs(Bsz=3, Dm=8, N=3, H=4, W=5, G=2, seed=3)
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=True), x)
    for block in (2 * 4 * 5 * 3, 4 * 5 * 3):
        monkeypatch.setattr(ss2_torch, "BLOCK_ELEMENTS", block)
        out, grads = outputs_and_grads(lambda **k: selective_scan_2d(**k, delta_softplus=True, backend="torch"), x)
        assert_close(out, want)
        assert_grads_close(grads, want_grads)


@pytest.mark.parametrize("H, W", [(1, 1), (3, 4), (4, 3)])
def test_closed_form_single_path(H, W):
    # h[i, j] = Σ_{i' <= i, j' <= j} (Π_{k=i'+1..i} a[k, j]) (Π_{l=j'+1..j} a[i', l]) b[i', j']:
    # every pixel of the upper-left quadrant along one path, right along its row, then down.
    x = make_inputs(Bsz=1, Dm=1, N=2, H=H, W=W, options=())
    x["delta"] = x["delta"].abs()
    dt, A = x["delta"][0, 0], x["A"][0]
    a = torch.exp(dt[..., None] * A)  # (H, W, N)
    b = (dt * x["u"][0, 0])[..., None] * x["B"][0].permute(1, 2, 0)
    want = torch.zeros(H, W, dtype=F64)
    for i in range(H):
        for j in range(W):
            h = sum(
                a[i2 + 1 : i + 1, j].prod(0) * a[i2, j2 + 1 : j + 1].prod(0) * b[i2, j2]
                for i2 in range(i + 1)
                for j2 in range(j + 1)
            )
            want[i, j] = (h * x["C"][0, :, i, j]).sum()
    for backend in BACKENDS:
        assert_close(selective_scan_2d(**on_backend_device(x, backend), backend=backend)[0, 0], want, msg=backend)


def test_is_not_the_all_paths_recurrence():
    # h = a h[i, j-1] + a h[i-1, j] + b sums over every monotone path (a different operator);
    # the two agree on a single row or column and differ once both passes mix.
    x = make_inputs(Bsz=1, Dm=1, N=1, H=4, W=4, options=())
    x["delta"] = x["delta"].abs()
    a = torch.exp(x["delta"][0, 0] * x["A"][0, 0])
    b = x["delta"][0, 0] * x["u"][0, 0] * x["B"][0, 0]
    h = torch.zeros(4, 4, dtype=F64)
    for i in range(4):
        for j in range(4):
            h[i, j] = (a[i, j] * h[i, j - 1] if j else 0) + (a[i, j] * h[i - 1, j] if i else 0) + b[i, j]
    all_paths = h * x["C"][0, 0]
    for backend in ("reference", "torch"):
        ours = selective_scan_2d(**x, backend=backend)[0, 0]
        assert_close(ours[0], all_paths[0])
        assert_close(ours[:, 0], all_paths[:, 0])
        assert (ours - all_paths).abs().max() > 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", ["row", "column"])
def test_one_row_or_column_is_the_1d_scan(backend, axis):
    # Hgt = 1: the column pass is the identity, the row pass is the 1D scan over Wdt;
    # Wdt = 1: the row pass is g = b, the column pass is the 1D scan over Hgt.
    H, W = (1, 9) if axis == "row" else (9, 1)
    x = make_inputs(H=H, W=W, G=2)
    spatial = 2 if axis == "row" else 3  # the singleton dim of u

    def line(t):
        return None if t is None else t.squeeze(t.dim() - 4 + spatial)

    y2 = selective_scan_2d(**on_backend_device(x, backend), delta_softplus=True, backend=backend)
    y1 = selective_scan(line(x["u"]), line(x["delta"]), x["A"], line(x["B"]), line(x["C"]), x["D"], line(x["z"]),
                        x["delta_bias"], delta_softplus=True, backend="reference")
    assert_close(line(y2), y1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_inputs_forward(backend, dtype):
    # Half activations and B / C, float32 A, D, delta_bias (as in a Mamba2D layer); computed
    # in float32 and returned in u's dtype.
    x = make_inputs(H=4, W=5, G=2, dtype=dtype)
    for k in ("A", "D", "delta_bias"):
        x[k] = x[k].float()
    out = selective_scan_2d(**on_backend_device(x, backend), delta_softplus=True, backend=backend)
    assert out.dtype == dtype
    assert_close(out, oracle_loop(**x, softplus=True), dtype=dtype)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_inputs_gradients(backend, dtype):
    x = make_inputs(H=3, W=4, G=2, dtype=dtype)
    out, grads = outputs_and_grads(lambda **k: selective_scan_2d(**k, delta_softplus=True, backend=backend), x)
    want, want_grads = outputs_and_grads(lambda **k: oracle_loop(**k, softplus=True), x)
    assert out.dtype == dtype and all(grads[k].dtype == dtype for k in grads)
    assert_close(out, want, dtype=dtype)
    assert_grads_close(grads, want_grads, dtype=dtype)



@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_inputs_are_computed_in_float32_and_rounded_once(backend, dtype):
    """Half inputs are computed in float32 and only the output is rounded to u's dtype: within
    one spacing of the dtype of the float64 loop on the same rounded inputs."""
    x = make_inputs(Bsz=2, Dm=4, N=4, H=6, W=12, G=2, dtype=dtype, seed=1)
    for k in ("A", "D", "delta_bias"):
        x[k] = x[k].float()
    out = selective_scan_2d(**x, delta_softplus=True, backend=backend)
    assert out.dtype == dtype
    assert_rounded_once(out, oracle_loop(**x, softplus=True), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 4, 3, 5), (2, 4, 0, 5), (2, 4, 3, 0)])
def test_empty_inputs(backend, shape):
    Bsz, Dm, H, W = shape
    x = on_backend_device(make_inputs(Bsz=Bsz, Dm=Dm, H=H, W=W), backend)
    out = selective_scan_2d(**x, backend=backend)
    assert out.shape == shape
    x = {k: v.requires_grad_(True) for k, v in x.items()}  # every input in the graph, with zero gradients
    grads = torch.autograd.grad(selective_scan_2d(**x, backend=backend).sum(), list(x.values()))
    assert all(g.shape == t.shape and not g.any() for g, t in zip(grads, x.values()))


def test_backend_choice_on_cpu():
    x = make_inputs(H=3, W=3)
    want = selective_scan_2d(**x, backend="torch")
    assert torch.equal(selective_scan_2d(**x), want)  # CPU tensors: the torch path
    with kernels.use_backend("reference"):
        assert_close(selective_scan_2d(**x), want)
    with pytest.raises(ValueError, match="unknown backend"):
        selective_scan_2d(**x, backend="cuda")


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"u": torch.randn(2, 4, 5)}, ValueError, r"expected u of shape \(B, D, Hgt, Wdt\)"),
        ({"u": torch.ones(2, 4, 5, 7, dtype=torch.int64)}, TypeError, "u must be one of"),
        ({"u": [[1.0]]}, TypeError, "u must be a tensor"),
        ({"delta": torch.randn(2, 4, 5, 6, dtype=F64)}, ValueError, "expected delta of shape"),
        ({"delta": torch.ones(2, 4, 5, 7, dtype=torch.int32)}, TypeError, "delta must be real floating"),
        ({"A": torch.randn(3, 3, dtype=F64)}, ValueError, r"expected A of shape \(D, N\) with D = 4"),
        ({"A": torch.randn(4, 3, dtype=torch.complex128)}, TypeError, "A must be real"),
        ({"B": torch.randn(2, 3, 3, 5, 7, dtype=F64)}, ValueError, "G dividing D"),
        ({"B": torch.randn(2, 0, 3, 5, 7, dtype=F64)}, ValueError, "expected B of shape"),
        ({"B": torch.randn(2, 3, 5, 7, dtype=torch.complex128)}, TypeError, "B must be real"),
        ({"C": torch.randn(2, 2, 5, 7, dtype=F64)}, ValueError, r"expected C of shape \(B, N, Hgt, Wdt\).*got \(2, 2, 5, 7\)$"),
        ({"C": torch.randn(2, 3, 35, dtype=F64)}, ValueError, "expected C of shape"),
        ({"D": torch.randn(3, dtype=F64)}, ValueError, r"expected D of shape \(D,\)"),
        ({"D": 1.0}, TypeError, "D must be a tensor"),
        ({"z": torch.randn(2, 4, 7, 5, dtype=F64)}, ValueError, "expected z of shape"),
        ({"delta_bias": torch.randn(4, 1, dtype=F64)}, ValueError, "expected delta_bias of shape"),
        ({"A": torch.randn(4, 3, dtype=F64, device="meta")}, ValueError, "one device"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, error, match):
    x = make_inputs()
    x.update(change)
    with pytest.raises(error, match=match):
        selective_scan_2d(**x, backend="torch")


@requires_cuda
def test_cuda_default_backend_is_triton():
    x = {k: v.float().cuda() for k, v in make_inputs(H=16, W=24).items()}
    out = selective_scan_2d(**x, delta_softplus=True)
    assert out.is_cuda and torch.equal(out, selective_scan_2d(**x, delta_softplus=True, backend="triton"))
