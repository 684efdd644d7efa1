"""kernels.selective_scan_2d: every backend (Triton under the interpreter on CPU) against an
independent float64 loop and the closed form, forward and every gradient, every option, odd
sizes; it is the 1D scan when Hgt = 1, and not the all-paths 2D recurrence."""

import importlib

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close

from kernels import selective_scan, selective_scan_2d

ss2_pkg = importlib.import_module("kernels.selective_scan_2d")
HAS_TRITON = "triton" in ss2_pkg._IMPLEMENTATIONS
BACKENDS = ["reference", "torch"] + (["triton"] if HAS_TRITON else [])
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False):
    """Row pass then column pass, one state vector at a time, in float64."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if B.dim() == 4:
        B, C = B[:, None], C[:, None]
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None, None]
    if softplus:
        delta = F.softplus(delta)
    Bsz, Dm, H, W = u.shape
    G = B.shape[1]
    out = torch.zeros(Bsz, Dm, H, W, dtype=torch.float64)
    for b in range(Bsz):
        for d in range(Dm):
            grp = d // (Dm // G)
            g = torch.zeros(H, W, A.shape[1], dtype=torch.float64)
            h = torch.zeros_like(g)
            for i in range(H):
                for j in range(W):
                    a = torch.exp(delta[b, d, i, j] * A[d])
                    g[i, j] = (a * g[i, j - 1] if j else 0) + delta[b, d, i, j] * u[b, d, i, j] * B[b, grp, :, i, j]
            for i in range(H):
                for j in range(W):
                    a = torch.exp(delta[b, d, i, j] * A[d])
                    h[i, j] = (a * h[i - 1, j] if i else 0) + g[i, j]
                    out[b, d, i, j] = (h[i, j] * C[b, grp, :, i, j]).sum()
    if D is not None:
        out = out + D.double()[:, None, None] * u
    if z is not None:
        out = out * F.silu(z.double())
    return out


def _inputs(Bsz=2, Dm=4, N=3, H=5, W=7, G=None, dtype=torch.float64, options=("D", "z", "delta_bias"), seed=0):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(DEVICE)

    bc_shape = (Bsz, N, H, W) if G is None else (Bsz, G, N, H, W)
    x = {
        "u": r(Bsz, Dm, H, W), "delta": r(Bsz, Dm, H, W, scale=0.5),
        "A": (-0.5 - torch.rand(Dm, N, generator=gen, dtype=torch.float64)).to(dtype).to(DEVICE),
        "B": r(*bc_shape), "C": r(*bc_shape),
        "D": r(Dm) if "D" in options else None, "z": r(Bsz, Dm, H, W) if "z" in options else None,
        "delta_bias": r(Dm, scale=0.5) if "delta_bias" in options else None,
    }
    return x


def _call(x, backend, softplus=True, **kw):
    return selective_scan_2d(**x, delta_softplus=softplus, backend=backend, **kw)


def _grads(x, backend, softplus=True, seed=1):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    out = _call({**x, **leaves}, backend, softplus)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, list(leaves.values()), g)
    return out, dict(zip(leaves, grads))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H, W", [(1, 1), (1, 6), (5, 1), (5, 7), (4, 4)])
@pytest.mark.parametrize("softplus", [True, False])
def test_forward_matches_loop(backend, H, W, softplus):
    x = _inputs(H=H, W=W, G=2 if W % 2 else None)
    if not softplus:
        x["delta"] = x["delta"].abs()
    assert_close(_call(x, backend, softplus), _loop(**{k: v.cpu() if v is not None else None for k, v in x.items()},
                                                   softplus=softplus))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [(), ("D",), ("z",), ("delta_bias",), ("D", "z", "delta_bias")])
@pytest.mark.parametrize("G", [None, 1, 2])
def test_gradients_match_reference(backend, options, G):
    x = _inputs(H=5, W=3, G=G, options=options)
    out_ref, g_ref = _grads(x, "reference")
    out, g = _grads(x, backend)
    assert_close(out, out_ref)
    assert set(g) == set(g_ref)
    for name in g:
        assert_close(g[name], g_ref[name], msg=name)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_gradcheck(backend):
    x = _inputs(Bsz=1, Dm=2, N=2, H=3, W=2)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    names = list(leaves)

    def f(*args):
        return selective_scan_2d(**dict(zip(names, args)), delta_softplus=True, backend=backend)

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


def test_closed_form_single_path():
    x = _inputs(Bsz=1, Dm=1, N=2, H=4, W=3, options=())
    x["delta"] = x["delta"].abs()
    u, dt, A, B, C = x["u"][0, 0].cpu(), x["delta"][0, 0].cpu(), x["A"][0].cpu(), x["B"][0].cpu(), x["C"][0].cpu()
    a = torch.exp(dt[..., None] * A)  # (H, W, N)
    H, W = u.shape
    expected = torch.zeros(H, W, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            h = torch.zeros(2, dtype=torch.float64)
            for i2 in range(i + 1):
                for j2 in range(j + 1):
                    down = torch.prod(a[i2 + 1 : i + 1, j], dim=0) if i > i2 else torch.ones(2, dtype=torch.float64)
                    right = torch.prod(a[i2, j2 + 1 : j + 1], dim=0) if j > j2 else torch.ones(2, dtype=torch.float64)
                    h += down * right * dt[i2, j2] * u[i2, j2] * B[:, i2, j2]
            expected[i, j] = (h * C[:, i, j]).sum()
    for backend in BACKENDS:
        assert_close(_call(x, backend, softplus=False)[0, 0].cpu(), expected)


def test_is_not_the_all_paths_recurrence():
    x = _inputs(Bsz=1, Dm=1, N=1, H=4, W=4, options=())
    x["delta"] = x["delta"].abs()
    a = torch.exp(x["delta"][0, 0] * x["A"][0, 0]).cpu()
    b = (x["delta"][0, 0] * x["u"][0, 0] * x["B"][0, 0]).cpu()
    h = torch.zeros(4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            h[i, j] = (a[i, j] * h[i, j - 1] if j else 0) + (a[i, j] * h[i - 1, j] if i else 0) + b[i, j]
    all_paths = h * x["C"][0, 0].cpu()
    ours = _call(x, "reference", softplus=False)[0, 0].cpu()
    assert (ours - all_paths).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_row_is_the_1d_scan(backend):
    x = _inputs(H=1, W=9, G=2)
    y2 = _call(x, backend)
    y1 = selective_scan(x["u"][:, :, 0], x["delta"][:, :, 0], x["A"], x["B"][..., 0, :], x["C"][..., 0, :], x["D"],
                        x["z"][:, :, 0], x["delta_bias"], delta_softplus=True)
    assert_close(y2[:, :, 0], y1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs(backend, dtype):
    x = _inputs(H=4, W=5, dtype=dtype)
    x["A"], x["D"], x["delta_bias"] = x["A"].float(), x["D"].float(), x["delta_bias"].float()
    out = _call(x, backend)
    assert out.dtype == dtype
    wide = {k: v.double() if v is not None else None for k, v in x.items()}
    assert_close(out, _call(wide, "reference"), dtype=dtype)


def test_triton_several_row_tiles():
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    from kernels.selective_scan_2d.triton import selective_scan_2d_triton

    x = _inputs(H=7, W=5, G=2)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    for block_h in (1, 2, 4):
        out = selective_scan_2d_triton(**leaves, delta_softplus=True, block_h=block_h)
        grads = torch.autograd.grad(out.sum(), list(leaves.values()))
        ref = _call(x, "reference")
        assert_close(out, ref)
        ref_leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
        ref_grads = torch.autograd.grad(_call(ref_leaves, "reference").sum(), list(ref_leaves.values()))
        for name, a, b in zip(leaves, grads, ref_grads):
            assert_close(a, b, msg=f"{name} block_h={block_h}")


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(u=torch.randn(2, 4, 5)), ValueError, "expected u of shape"),
        (dict(delta=torch.randn(2, 4, 5, 6)), ValueError, "expected delta of shape"),
        (dict(A=torch.randn(3, 3, dtype=torch.float64)), ValueError, "expected A of shape"),
        (dict(A=torch.randn(4, 3, dtype=torch.complex128)), TypeError, "must be real"),
        (dict(B=torch.randn(2, 3, 3, 5, 7, dtype=torch.float64)), ValueError, "G dividing D"),
        (dict(C=torch.randn(2, 2, 5, 7, dtype=torch.float64)), ValueError, "expected C of shape"),
        (dict(D=torch.randn(3, dtype=torch.float64)), ValueError, "expected D of shape"),
        (dict(u=torch.ones(2, 4, 5, 7, dtype=torch.int64)), TypeError, "u must be one of"),
    ],
)
def test_bad_inputs(change, error, match):
    x = _inputs()
    x.update({k: v.to(DEVICE) for k, v in change.items()})
    with pytest.raises(error, match=match):
        _call(x, "torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("H, W", [(32, 32), (56, 57), (14, 200)])
def test_cuda_larger_images_match_torch(H, W):
    x = _inputs(Bsz=2, Dm=64, N=16, H=H, W=W, G=4, dtype=torch.float32)
    out, g = _grads(x, "triton")
    out_ref, g_ref = _grads(x, "torch")
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
    for name in g:
        scale = g_ref[name].abs().max().clamp(min=1)
        torch.testing.assert_close(g[name] / scale, g_ref[name] / scale, rtol=1e-4, atol=1e-4, msg=name)
