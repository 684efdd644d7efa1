"""kernels.selective_state_update: the torch and Triton paths against the channel-by-channel
reference (float64 oracle), every option, grouped B/C, odd D and N, gradients, and L steps of
it against kernels.selective_scan over the same L steps.

The Triton backend's inputs live on ``TRITON_DEVICE`` (the GPU when there is one); the float64
oracles stay on CPU. On a CPU-only machine the Triton kernel runs in the interpreter (conftest
sets TRITON_INTERPRET=1): shapes stay small.
"""

import importlib
import itertools

import pytest
import torch
from devices import backend_device, on_backend_device, requires_cuda
from tolerances import assert_close, assert_close_summed

import kernels
from kernels import selective_scan, selective_state_update

F64 = torch.float64
op_pkg = importlib.import_module("kernels.selective_state_update")
HAS_TRITON = "triton" in op_pkg._IMPLEMENTATIONS
requires_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=requires_triton)]

# (batch, D, N, G): odd D and N, N padded in the kernel (17 -> 32), several channel blocks
# (D = 33 in blocks of 16, D = 40 in blocks of 32), and groups that straddle a block of
# channels (D/G = 2 and 10).
SHAPES = [(2, 7, 5, 1), (3, 6, 3, 3), (1, 33, 17, 1), (2, 40, 4, 4)]
OPTIONS = list(itertools.product([False, True], repeat=4))  # (D, z, dt_bias, dt_softplus)


def option_id(opts):
    names = ("D", "z", "bias", "softplus")
    return "+".join(n for n, on in zip(names, opts) if on) or "plain"


def make_inputs(Bsz, Dm, N, G, dtype, opts=(True, True, True, True), grouped_2d=False, seed=0):
    """Inputs in the Mamba block's dtypes: A, D, dt_bias float32 (float64 for float64 runs),
    everything else ``dtype``. B, C are (B, N) when G == 1 and not ``grouped_2d``."""
    gen = torch.Generator().manual_seed(seed)
    param = F64 if dtype == F64 else torch.float32
    has_D, has_z, has_bias, softplus = opts

    def randn(*shape, dt=dtype, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=F64)).to(dt)

    bc_shape = (Bsz, N) if G == 1 and not grouped_2d else (Bsz, G, N)
    dt_raw = randn(Bsz, Dm, scale=0.5) if softplus else (0.5 * torch.rand(Bsz, Dm, generator=gen, dtype=F64)).to(dtype)
    return dict(
        state=randn(Bsz, Dm, N),
        x=randn(Bsz, Dm),
        dt=dt_raw,
        A=(-torch.rand(Dm, N, generator=gen, dtype=F64) * 2).to(param),
        B=randn(*bc_shape),
        C=randn(*bc_shape),
        D=randn(Dm, dt=param) if has_D else None,
        z=randn(Bsz, Dm) if has_z else None,
        dt_bias=(0.5 * torch.rand(Dm, generator=gen, dtype=F64)).to(param) if has_bias else None,
        dt_softplus=softplus,
    )


def widen(inputs):
    return {k: v.to("cpu", F64) if torch.is_tensor(v) else v for k, v in inputs.items()}


def oracle(inputs):
    """The reference step on CPU in float64, whatever device ``inputs`` are on."""
    return selective_state_update(**widen(inputs), backend="reference")


def check_against_oracle(inputs, backend, dtype):
    args = on_backend_device(inputs, backend)
    state_before = args["state"].clone()
    y, h = selective_state_update(**args, backend=backend)
    y_ref, h_ref = oracle(inputs)
    assert y.dtype == inputs["x"].dtype and y.shape == inputs["x"].shape
    assert h.dtype == inputs["state"].dtype and h.shape == inputs["state"].shape
    assert_close(y, y_ref, dtype=dtype, msg="y")
    assert_close(h, h_ref, dtype=dtype, msg="new state")
    assert torch.equal(args["state"], state_before), "the input state was modified"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", OPTIONS, ids=option_id)
def test_every_option_matches_reference_float32(backend, opts):
    check_against_oracle(make_inputs(2, 7, 5, 1, torch.float32, opts), backend, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-D{}-N{}-G{}".format(*s))
def test_matches_reference_per_dtype_and_shape(backend, dtype, shape):
    check_against_oracle(make_inputs(*shape, dtype, seed=1), backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_options_and_B_C_given_as_one_group(backend):
    """(B, 1, N) is the same as (B, N); without any option y = C h'."""
    inputs = make_inputs(2, 5, 3, 1, torch.float32, (False,) * 4, grouped_2d=True, seed=2)
    args = on_backend_device(inputs, backend)
    y, h = selective_state_update(**args, backend=backend)
    flat = dict(args, B=args["B"][:, 0], C=args["C"][:, 0])
    y2, h2 = selective_state_update(**flat, backend=backend)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(h, h2)
    dt = inputs["dt"][:, :, None]
    h_hand = torch.exp(dt * inputs["A"]) * inputs["state"] + dt * inputs["x"][:, :, None] * inputs["B"]
    assert_close(h, h_hand)
    assert_close(y, (h_hand * inputs["C"]).sum(-1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_input_dtypes_and_non_contiguous_inputs(backend):
    """fp16 x with a bf16 state and fp32 params; x, z, B, C as strided slices (as in a block
    that splits one projection). The whole tensors are moved to the backend's device before
    they are sliced, so the slices keep their strides there."""
    gen = torch.Generator().manual_seed(3)
    device = backend_device(backend)
    Bsz, Dm, N = 3, 9, 6
    xz = torch.randn(Bsz, 2 * Dm, generator=gen).half().to(device)
    x, z = xz.chunk(2, dim=-1)
    dbc = torch.randn(Bsz, 4 + 2 * N, generator=gen).half().to(device)
    dt, Bm, Cm = dbc[:, :1].expand(Bsz, Dm), dbc[:, 4 : 4 + N], dbc[:, 4 + N :]
    state = torch.randn(Bsz, N, Dm, generator=gen).to(torch.bfloat16).to(device).transpose(1, 2)
    A = -torch.rand(N, Dm, generator=gen).to(device).T
    inputs = dict(state=state, x=x, dt=dt, A=A, B=Bm, C=Cm, D=torch.randn(Dm, generator=gen).to(device), z=z,
                  dt_bias=torch.randn(Dm, generator=gen).to(device), dt_softplus=True)
    y, h = selective_state_update(**inputs, backend=backend)
    assert y.dtype == torch.float16 and h.dtype == torch.bfloat16
    y_ref, h_ref = oracle(inputs)
    assert_close(y, y_ref, dtype=torch.float16)
    assert_close(h, h_ref, dtype=torch.bfloat16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_z_D_and_dt_bias_in_their_own_strides(backend):
    """z laid out (D, B) (a transposed view, unlike x), D and dt_bias every other entry of a
    longer vector: each is read through its own strides. Checked against the step written
    out with the same values made contiguous."""
    inputs = make_inputs(3, 5, 4, 1, F64, seed=14)
    gen = torch.Generator().manual_seed(15)
    device = backend_device(backend)
    args = on_backend_device(inputs, backend)
    args["z"] = torch.randn(5, 3, generator=gen, dtype=F64).to(device).T
    args["D"] = torch.randn(10, generator=gen, dtype=F64).to(device)[::2]
    args["dt_bias"] = (0.5 * torch.rand(10, generator=gen, dtype=F64)).to(device)[1::2]
    assert not args["z"].is_contiguous() and args["D"].stride(0) == args["dt_bias"].stride(0) == 2
    y, h = selective_state_update(**args, backend=backend)
    z, D, bias = (args[k].cpu().contiguous() for k in ("z", "D", "dt_bias"))
    delta = torch.nn.functional.softplus(inputs["dt"] + bias)[:, :, None]
    h_hand = torch.exp(delta * inputs["A"]) * inputs["state"] + delta * inputs["x"][:, :, None] * inputs["B"][:, None]
    y_hand = ((h_hand * inputs["C"][:, None]).sum(-1) + D * inputs["x"]) * torch.nn.functional.silu(z)
    assert_close(h, h_hand, dtype=F64, msg="new state")
    assert_close(y, y_hand, dtype=F64, msg="y")


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_state_with_float32_inputs_steps_in_float64(backend):
    """Guards the compute dtype: a float64 state (not representable in float32) with float32 x, dt,
    A, B, C is stepped in float64, so the new state keeps float64 accuracy."""
    inputs = make_inputs(2, 6, 4, 2, torch.float32, grouped_2d=True, seed=10)
    gen = torch.Generator().manual_seed(11)
    inputs["state"] = torch.randn(2, 6, 4, generator=gen, dtype=F64)
    inputs = on_backend_device(inputs, backend)
    state_before = inputs["state"].clone()
    y, h = selective_state_update(**inputs, backend=backend)
    assert h.dtype == F64 and y.dtype == torch.float32
    y_ref, h_ref = oracle(inputs)  # every input widened to float64
    assert_close(h, h_ref, dtype=F64, msg="new state")
    assert_close(y, y_ref, dtype=torch.float32, msg="y")
    assert torch.equal(inputs["state"], state_before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_inputs_with_a_float32_state_step_in_float64(backend):
    """The mirror of the test above: float64 x, dt, B, C, z with a float32 state, A, D and
    dt_bias are stepped in float64, so y (float64, read from the new state before it is
    rounded) keeps float64 accuracy; only the new state is rounded to float32."""
    inputs = make_inputs(2, 6, 4, 2, F64, grouped_2d=True, seed=12)
    for name in ("state", "A", "D", "dt_bias"):
        inputs[name] = inputs[name].float()
    inputs = on_backend_device(inputs, backend)
    y, h = selective_state_update(**inputs, backend=backend)
    assert y.dtype == F64 and h.dtype == torch.float32
    y_ref, h_ref = oracle(inputs)  # every input widened to float64
    assert_close(y, y_ref, dtype=F64, msg="y")
    assert_close(h, h_ref, dtype=torch.float32, msg="new state")


def test_dt_softplus_is_off_by_default():
    """As in mamba_ssm, Δ = dt + dt_bias unless dt_softplus=True: checked against the step
    written out with the raw (positive) step size."""
    inputs = make_inputs(2, 5, 3, 1, F64, seed=13)
    del inputs["dt_softplus"]
    inputs["dt"] = inputs["dt"].abs()
    y, h = selective_state_update(**inputs)
    delta = (inputs["dt"] + inputs["dt_bias"])[:, :, None]
    h_hand = torch.exp(delta * inputs["A"]) * inputs["state"] + delta * inputs["x"][:, :, None] * inputs["B"][:, None]
    y_hand = (h_hand * inputs["C"][:, None]).sum(-1) + inputs["D"] * inputs["x"]
    y_hand = y_hand * torch.nn.functional.silu(inputs["z"])
    assert_close(h, h_hand)
    assert_close(y, y_hand)


def test_softplus_is_accurate_for_very_negative_and_large_dt():
    """Δ = softplus(dt) at dt = -30 (Δ ~ 1e-13, where log(1 + e^dt) would round to 0) and
    at dt = 40 (the linear branch)."""
    inputs = make_inputs(1, 4, 2, 1, F64, (False, False, False, True), seed=4)
    inputs["dt"] = torch.tensor([[-30.0, -8.0, 5.0, 40.0]], dtype=F64)
    inputs["state"] = torch.zeros(1, 4, 2, dtype=F64)
    backends = ["torch"] + (["triton"] if HAS_TRITON else [])
    delta = torch.nn.functional.softplus(inputs["dt"])
    for backend in backends:
        _, h = selective_state_update(**on_backend_device(inputs, backend), backend=backend)
        # from a zero state h' = Δ x B: recover Δ
        got = h.cpu()[:, :, 0] / (inputs["x"] * inputs["B"][:, None, 0])
        torch.testing.assert_close(got, delta, rtol=1e-12, atol=0, msg=backend)


@pytest.mark.parametrize("G", [1, 2])
def test_torch_path_gradients_match_reference(G):
    inputs = make_inputs(2, 6, 5, G, F64, seed=5, grouped_2d=G > 1)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items() if torch.is_tensor(v)}
    gen = torch.Generator().manual_seed(6)
    gy = torch.randn(2, 6, generator=gen, dtype=F64)
    gh = torch.randn(2, 6, 5, generator=gen, dtype=F64)
    grads = {}
    for backend in ("torch", "reference"):
        args = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
        y, h = selective_state_update(**args, dt_softplus=True, backend=backend)
        ((y * gy).sum() + (h * gh).sum()).backward()
        grads[backend] = {k: v.grad for k, v in args.items()}
    for name in leaves:
        assert grads["torch"][name] is not None, name
        assert_close_summed(grads["torch"][name], grads["reference"][name], msg=name)


@requires_triton
def test_triton_is_forward_only_and_gradients_take_the_torch_path(monkeypatch):
    calls = []
    triton_fn = op_pkg._IMPLEMENTATIONS["triton"]

    def spy(*args):
        calls.append(1)
        return triton_fn(*args)

    monkeypatch.setitem(op_pkg._IMPLEMENTATIONS, "triton", spy)
    inputs = on_backend_device(make_inputs(2, 5, 4, 1, torch.float32, seed=7), "triton")
    x = inputs["x"].clone().requires_grad_(True)
    y, h = selective_state_update(**dict(inputs, x=x), backend="triton")
    assert not calls and y.requires_grad and h.requires_grad
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.no_grad():
        y2, h2 = selective_state_update(**dict(inputs, x=x), backend="triton")
    assert calls == [1] and not y2.requires_grad
    assert_close(y2, y)
    assert_close(h2, h)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("G", [1, 3])
@pytest.mark.parametrize("L", [1, 6])
def test_L_steps_equal_the_selective_scan(backend, G, L):
    """Stepping from h0 reproduces selective_scan(..., h0, return_last_state) output by output."""
    gen = torch.Generator().manual_seed(8)
    Bsz, Dm, N = 2, 9, 5
    u, delta, z = (torch.randn(Bsz, Dm, L, generator=gen, dtype=F64) for _ in range(3))
    A = -torch.rand(Dm, N, generator=gen, dtype=F64) * 2
    B, C = (torch.randn(Bsz, G, N, L, generator=gen, dtype=F64) for _ in range(2))
    D, bias = torch.randn(Dm, generator=gen, dtype=F64), torch.rand(Dm, generator=gen, dtype=F64)
    h0 = torch.randn(Bsz, Dm, N, generator=gen, dtype=F64)
    out, last = selective_scan(u, delta, A, B, C, D, z, bias, True, return_last_state=True, h0=h0, backend="reference")
    device = backend_device(backend)
    u, delta, A, B, C, D, z, bias, h0 = (t.to(device) for t in (u, delta, A, B, C, D, z, bias, h0))
    h, ys = h0, []
    for t in range(L):
        y, h = selective_state_update(
            h, u[..., t], delta[..., t], A, B[..., t], C[..., t], D, z[..., t], bias, True, backend=backend
        )
        ys.append(y)
    assert_close(torch.stack(ys, dim=-1), out)
    assert_close(h, last)


def test_backend_is_chosen_by_device_and_by_use_backend(monkeypatch):
    seen = []
    for name in ("torch", "reference"):
        fn = op_pkg._IMPLEMENTATIONS[name]
        monkeypatch.setitem(op_pkg._IMPLEMENTATIONS, name, lambda *a, _n=name, _f=fn: seen.append(_n) or _f(*a))
    inputs = make_inputs(1, 2, 2, 1, torch.float32)
    selective_state_update(**inputs)
    with kernels.use_backend("reference"):
        selective_state_update(**inputs)
    assert seen == ["torch", "reference"]


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(state=torch.zeros(2, 7)), r"state of shape \(B, D, N\)"),
        (dict(x=torch.zeros(2, 6)), r"x of shape \(B, D\) = \(2, 7\)"),
        (dict(dt=torch.zeros(7)), r"dt of shape \(B, D\)"),
        (dict(A=torch.zeros(7, 4)), r"A of shape \(D, N\) = \(7, 5\)"),
        (dict(B=torch.zeros(2, 4)), r"B of shape \(B, N\) = \(2, 5\) or \(B, G, N\).*got \(2, 4\)$"),
        (dict(C=torch.zeros(2, 2, 5)), r"C of shape .* G dividing D = 7"),
        (dict(D=torch.zeros(6)), r"D of shape \(D,\) = \(7,\)"),
        (dict(z=torch.zeros(2, 7, 1)), r"z of shape \(B, D\)"),
        (dict(dt_bias=torch.zeros(2, 7)), r"dt_bias of shape \(D,\)"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_bad_shapes_are_rejected_with_the_expected_shape(change, match):
    inputs = make_inputs(2, 7, 5, 1, torch.float32)
    with pytest.raises(ValueError, match=match):
        selective_state_update(**dict(inputs, **change))


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("sizes", [(0, 3, 4), (2, 0, 4), (2, 3, 0)], ids=["B=0", "D=0", "N=0"])
def test_empty_sizes_give_every_input_a_gradient(backend, sizes):
    """With no batch, channels or state, an input the update never reads still gets a zero
    gradient (none made backward() raise when no output depended on any input)."""
    x = make_inputs(*sizes, G=1, dtype=F64)
    softplus = x.pop("dt_softplus")
    x = {k: v.requires_grad_(True) for k, v in x.items()}
    y, h = selective_state_update(**x, dt_softplus=softplus, backend=backend)
    grads = torch.autograd.grad(y.sum() + h.sum(), list(x.values()), retain_graph=True)
    assert all(g.shape == t.shape for g, t in zip(grads, x.values()))
    if sizes[0] * sizes[1] == 0:
        assert not any(g.any() for g in grads)
    alone = torch.autograd.grad(h.sum(), list(x.values()))  # the state alone (empty when N = 0)
    assert all(g.shape == t.shape and not g.any() for g, t in zip(alone, x.values()))


def test_bad_types_and_backends_are_rejected():
    inputs = make_inputs(2, 3, 2, 1, torch.float32)
    with pytest.raises(TypeError, match="x must be one of"):
        selective_state_update(**dict(inputs, x=inputs["x"].long()))
    with pytest.raises(TypeError, match="A must be one of"):
        selective_state_update(**dict(inputs, A=inputs["A"].to(torch.complex64)))
    with pytest.raises(TypeError, match="state must be a tensor"):
        selective_state_update(**dict(inputs, state=None))
    with pytest.raises(ValueError, match="unknown backend"):
        selective_state_update(**inputs, backend="cuda")


@requires_cuda
@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(4, 1536, 16, 1), (3, 257, 33, 1), (2, 512, 16, 4)])
def test_compiled_kernel_on_cuda_matches_reference(dtype, shape):
    inputs = make_inputs(*shape, dtype, seed=9)
    cuda = {k: v.cuda() if torch.is_tensor(v) else v for k, v in inputs.items()}
    with torch.no_grad():
        y, h = selective_state_update(**cuda)
    y_ref, h_ref = oracle(inputs)
    assert_close(y.cpu(), y_ref, dtype=dtype)
    assert_close(h.cpu(), h_ref, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize("G_B, G_C", [(1, 2), (2, 1), (2, 3), (6, 1)])
def test_B_and_C_with_different_group_counts(backend, G_B, G_C):
    """B and C grouped independently: y read C with B's group count (silently wrong, or an
    out-of-bounds read on Triton). Checked against the step written out channel by channel."""
    inputs = make_inputs(2, 6, 3, G_B, F64, grouped_2d=True, seed=4)
    inputs["C"] = make_inputs(2, 6, 3, G_C, F64, grouped_2d=True, seed=5)["C"]
    y, h = selective_state_update(**on_backend_device(inputs, backend), backend=backend)
    dt = torch.nn.functional.softplus(inputs["dt"] + inputs["dt_bias"])
    for d in range(6):
        Bd, Cd = inputs["B"][:, d * G_B // 6], inputs["C"][:, d * G_C // 6]  # (batch, N)
        h_d = torch.exp(dt[:, d, None] * inputs["A"][d]) * inputs["state"][:, d] + dt[:, d, None] * inputs["x"][:, d, None] * Bd
        y_d = ((h_d * Cd).sum(-1) + inputs["D"][d] * inputs["x"][:, d]) * torch.nn.functional.silu(inputs["z"][:, d])
        assert_close(h[:, d], h_d, msg=f"state of channel {d}")
        assert_close(y[:, d], y_d, msg=f"y of channel {d}")


# ---------------------------------------------------------------- Mamba-2's multi-head state (B, H, P, N)

def multi_head_step_by_hand(state, x, dt, A, B, C, D, z, dt_bias):
    """The step per (batch, head, head channel), head h reading group h // (H / G), float64."""
    Bsz, H, P, N = state.shape
    G = B.shape[1]
    y, new = torch.zeros(Bsz, H, P, dtype=F64), torch.zeros(Bsz, H, P, N, dtype=F64)
    for b, h, p in itertools.product(range(Bsz), range(H), range(P)):
        g = h // (H // G)
        delta = torch.nn.functional.softplus(dt[b, h, p] + dt_bias[h, p])
        new[b, h, p] = torch.exp(delta * A[h, p]) * state[b, h, p] + delta * x[b, h, p] * B[b, g]
        out = (C[b, g] * new[b, h, p]).sum() + D[h, p] * x[b, h, p]
        y[b, h, p] = out * z[b, h, p] * torch.sigmoid(z[b, h, p])
    return y, new


@pytest.mark.parametrize("backend", BACKENDS + ["reference"])
@pytest.mark.parametrize("G", [1, 2, 4])
def test_multi_head_state_is_the_step_per_head_channel(backend, G):
    """A (B, H, P, N) state with grouped B/C over heads (Mamba-2's decoding layout), against
    the step written per (batch, head, channel); A broadcast over P as Mamba-2 passes it."""
    gen = torch.Generator().manual_seed(40)
    Bsz, H, P, N = 2, 4, 3, 5
    args = dict(
        state=torch.randn(Bsz, H, P, N, generator=gen, dtype=F64),
        x=torch.randn(Bsz, H, P, generator=gen, dtype=F64),
        dt=torch.randn(Bsz, H, P, generator=gen, dtype=F64),
        A=(-torch.rand(H, 1, 1, generator=gen, dtype=F64)).expand(H, P, N),
        B=torch.randn(Bsz, G, N, generator=gen, dtype=F64),
        C=torch.randn(Bsz, G, N, generator=gen, dtype=F64),
        D=torch.randn(H, P, generator=gen, dtype=F64),
        z=torch.randn(Bsz, H, P, generator=gen, dtype=F64),
        dt_bias=torch.rand(H, P, generator=gen, dtype=F64),
    )
    on_device = on_backend_device(args, backend)
    on_device["A"] = args["A"][:, :1, :1].to(backend_device(backend)).expand(H, P, N)  # still broadcast over P, N
    y, new_state = selective_state_update(**on_device, dt_softplus=True, backend=backend)
    y_hand, state_hand = multi_head_step_by_hand(**args)
    assert y.shape == (Bsz, H, P) and new_state.shape == (Bsz, H, P, N)
    assert_close(y, y_hand, dtype=F64)
    assert_close(new_state, state_hand, dtype=F64)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(A=torch.zeros(12, 5)), r"A of shape \(H, P, N\) = \(4, 3, 5\)"),
        (dict(x=torch.zeros(2, 12)), r"x of shape \(B, H, P\) = \(2, 4, 3\)"),
        (dict(D=torch.zeros(12)), r"D of shape \(H, P\) = \(4, 3\)"),
        (dict(B=torch.zeros(2, 3, 5)), r"G dividing H = 4"),  # 3 divides H·P = 12, not H
    ],
    ids=["A-flat", "x-flat", "D-flat", "G-not-dividing-heads"],
)
def test_multi_head_state_rejects_flat_shapes_and_groups_across_heads(change, match):
    args = dict(state=torch.zeros(2, 4, 3, 5), x=torch.zeros(2, 4, 3), dt=torch.zeros(2, 4, 3),
                A=torch.zeros(4, 3, 5), B=torch.zeros(2, 2, 5), C=torch.zeros(2, 2, 5), D=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=match):
        selective_state_update(**dict(args, **change))


@requires_triton
@pytest.mark.parametrize("opts, state_dtype", [
    ((False, False, False, False), torch.float32),
    ((True, True, True, True), torch.float32),
    ((True, True, True, True), F64),  # y in x's float32, the new state in the state's float64
], ids=["plain", "D+z+bias+softplus", "float64-state"])
def test_triton_compile_op_passes_opcheck(opts, state_dtype):
    """The op that stands for the kernel under torch.compile: fake outputs match the real
    ones, and it survives AOTAutograd tracing (it has no autograd: gradients take the
    PyTorch path before it)."""
    from torch.library import opcheck

    from kernels.selective_state_update.triton_op import _step_op

    inputs = make_inputs(2, 5, 3, 1, torch.float32, opts, grouped_2d=True, seed=30)
    inputs["state"] = inputs["state"].to(state_dtype)
    inputs = on_backend_device(inputs, "triton")
    opcheck(_step_op, tuple(inputs.values()), test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static",
                                                          "test_aot_dispatch_dynamic"))


@requires_triton
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw-dt"])
def test_compiled_triton_decoding_steps_are_one_graph_with_the_eager_numbers(softplus):
    """A decoding loop compiled with fullgraph=True on the Triton backend: the kernel runs as
    one op in the graph (no break), with eager mode's numbers at every step, with and
    without the softplus of dt."""
    torch._dynamo.reset()

    def step(state, x, dt, A, B, C, D, z, dt_bias):
        return selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus=softplus, backend="triton")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = on_backend_device(make_inputs(2, 5, 3, 1, torch.float32, (True, True, True, softplus), seed=31), "triton")
    args.pop("dt_softplus")
    state_eager = state_compiled = args.pop("state")
    with torch.no_grad():
        for _ in range(3):
            y, state_eager = step(state_eager, **args)
            yc, state_compiled = compiled(state_compiled, **args)
            assert torch.equal(y, yc) and torch.equal(state_eager, state_compiled)
            args["x"] = torch.tanh(y)
    torch._dynamo.reset()
