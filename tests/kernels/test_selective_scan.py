"""kernels.selective_scan (Mamba's S6): h_t = exp(Δ_t A) h_{t-1} + Δ_t u_t B_t, y_t = C_t · h_t,
out = (y + D u) · silu(z); the "torch" and "reference" backends against a float64 loop oracle."""

import importlib
import os

import pytest
import torch
from devices import backend_device
from tolerances import assert_close, assert_close_summed

import kernels
from kernels import selective_scan

spt = importlib.import_module("kernels.selective_scan.pytorch")
scan_pkg = importlib.import_module("kernels.selective_scan")  # the package (kernels.selective_scan is the op)

F64, C128 = torch.float64, torch.complex128
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"]
# gradients that add up terms over batch and time (or over the channels of a group): compared
# relative to their largest entry, see tolerances.assert_close_summed
SUMMED = {"A", "D", "delta_bias"}


def oracle_loop(u, delta, A, B, C, D, z, delta_bias, h0, softplus):
    """The selective scan from its definition, one step per time index, in float64 / complex128.

    B, C: (D, N) or (B, G, N, L), complex when A is. Pass float64 / complex128 tensors (see
    :func:`widened`) for an exact oracle. Returns (out, last).
    """
    cplx = A.is_complex()
    Bsz, Dm, L = u.shape
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    if softplus:
        dt = torch.log1p(torch.exp(dt))
    state = torch.zeros(Bsz, Dm, A.shape[1], dtype=A.dtype) if h0 is None else h0

    def at(M, t):  # the (B|1, D, N) value of B or C at step t, channel d reading group d // (D / G)
        if M.dim() == 2:
            return M[None]
        if M.dim() == 3:
            M = M.unsqueeze(1)
        group_of = torch.arange(Dm) * M.shape[1] // Dm
        return M[:, group_of, :, t]

    ys = []
    for t in range(L):
        step = dt[:, :, t, None]
        state = torch.exp(step * A) * state + step * u[:, :, t, None] * at(B, t)
        y = (at(C, t) * state).sum(-1)
        ys.append(2 * y.real if cplx else y)
    y = torch.stack(ys, -1) if L else torch.zeros(Bsz, Dm, 0, dtype=F64)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * z * torch.sigmoid(z)
    return y, state


def make_inputs(Bsz=2, Dm=4, N=3, L=33, *, cplx=False, B_kind="var", C_kind="var", G=1, dtype=F64,
                with_D=True, with_z=True, with_bias=True, with_h0=True):
    """Inputs of the public function: B_kind / C_kind in "const" (D, N), "var" (B, N, L) and
    "grouped" (B, G, N, L); complex B, C and h0 when ``cplx``. Δ stays O(1) after softplus."""
    ctype = C128 if dtype == F64 else torch.complex64
    u = torch.randn(Bsz, Dm, L, dtype=F64).to(dtype)
    delta = (0.5 * torch.randn(Bsz, Dm, L, dtype=F64)).to(dtype)
    A = -(0.5 + 1.5 * torch.rand(Dm, N, dtype=F64))
    if cplx:
        A = torch.complex(A, 3 * torch.randn(Dm, N, dtype=F64))

    def BC(kind):
        shape = {"const": (Dm, N), "var": (Bsz, N, L), "grouped": (Bsz, G, N, L)}[kind]
        M = torch.randn(shape, dtype=C128 if cplx else F64)
        return M.to(ctype if cplx else dtype)

    B, C = BC(B_kind), BC(C_kind)
    D = torch.randn(Dm, dtype=F64).to(dtype) if with_D else None
    z = torch.randn(Bsz, Dm, L, dtype=F64).to(dtype) if with_z else None
    bias = (0.5 * torch.randn(Dm, dtype=F64)).to(dtype) if with_bias else None
    h0 = torch.randn(Bsz, Dm, N, dtype=C128 if cplx else F64).to(ctype if cplx else dtype) if with_h0 else None
    return [u, delta, A.to(ctype if cplx else dtype), B, C, D, z, bias, h0]


def cotangents(args):
    """Random weights for out (B, D, L) and for the last state (B, D, N), complex with A."""
    u, A = args[0], args[2]
    w_out = torch.randn(u.shape, dtype=F64)
    w_last = torch.randn(u.shape[0], u.shape[1], A.shape[1], dtype=C128 if A.is_complex() else F64)
    return w_out, w_last


def loss_of(out, last, w_out, w_last):
    return (out * w_out.to(out.dtype)).sum() + (last * w_last.to(last.dtype)).real.sum()


def run(fn, args, softplus, w_out, w_last):
    """(out, last, grad of every given input) of loss_of(fn(...)); inputs that get no gradient give zeros."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in args]
    out, last = fn(*leaves, softplus)
    loss_of(out, last, w_out, w_last).backward()
    grads = [None if t is None else (torch.zeros_like(t) if t.grad is None else t.grad) for t in leaves]
    return [out.detach(), last.detach()] + grads


def public(backend):
    def fn(u, delta, A, B, C, D, z, bias, h0, softplus):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=softplus,
                              return_last_state=True, h0=h0, backend=backend)

    return fn


def widened(args):
    return [None if t is None else t.detach().to(C128 if t.is_complex() else F64) for t in args]


def oracle(args, softplus, w_out, w_last):
    return run(oracle_loop, widened(args), softplus, w_out, w_last)


def check(args, backend, softplus=True, summed=()):
    """Forward and every gradient of ``backend`` against the oracle, with the inputs' tolerance."""
    w_out, w_last = cotangents(args)
    got = run(public(backend), args, softplus, w_out, w_last)
    want = oracle(args, softplus, w_out, w_last)
    u, A = args[0], args[2]
    compute = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    state_dtype = (torch.complex64 if compute == torch.float32 else C128) if A.is_complex() else compute
    assert got[0].shape == u.shape and got[0].dtype == u.dtype
    assert got[0].is_contiguous() or not all(t is None or t.is_contiguous() for t in args)
    assert got[1].shape == (u.shape[0], u.shape[1], A.shape[1]) and got[1].dtype == state_dtype
    assert_close(got[0], want[0], dtype=u.dtype, msg="out")
    assert_close_summed(got[1], want[1], dtype=u.dtype, msg="last state")
    for name, x, y, leaf in zip(NAMES, got[2:], want[2:], args):
        if leaf is None:
            continue
        assert x.dtype == leaf.dtype and x.shape == leaf.shape, name
        compare = assert_close_summed if name in SUMMED or name in summed else assert_close
        compare(x, y, dtype=u.dtype, msg=f"grad {name}")


BC_KINDS = {  # (B kind, C kind, G)
    "const": ("const", "const", 1),
    "var": ("var", "var", 1),
    "grouped": ("grouped", "grouped", 2),
    "var-B-const-C": ("var", "const", 1),
    "const-B-grouped-C": ("const", "grouped", 2),
}


def summed_for(kind):
    """Constant B/C sum over batch and time, grouped ones over the channels of a group."""
    B_kind, C_kind, _ = BC_KINDS[kind]
    return {name for name, k in (("B", B_kind), ("C", C_kind)) if k in ("const", "grouped")}


@pytest.mark.parametrize("L", [1, 7, 33, 100, 129])
@pytest.mark.parametrize("kind", list(BC_KINDS))
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_torch_matches_oracle_float64(L, kind, cplx):
    torch.manual_seed(L)
    B_kind, C_kind, G = BC_KINDS[kind]
    args = make_inputs(2, 6, 5, L, cplx=cplx, B_kind=B_kind, C_kind=C_kind, G=G)
    check(args, "torch", summed=summed_for(kind))


@pytest.mark.parametrize("L", [1, 33, 100])
@pytest.mark.parametrize("kind", ["const", "grouped", "var-B-const-C"])
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_reference_backend_matches_oracle_float64(L, kind, cplx):
    torch.manual_seed(100 + L)
    B_kind, C_kind, G = BC_KINDS[kind]
    args = make_inputs(2, 4, 3, L, cplx=cplx, B_kind=B_kind, C_kind=C_kind, G=G)
    check(args, "reference", summed=summed_for(kind))


OPTIONS = ["D", "z", "bias", "h0"]


@pytest.mark.parametrize("off", [(), ("D",), ("z",), ("bias",), ("h0",), tuple(OPTIONS)],
                         ids=["all", "no-D", "no-z", "no-bias", "no-h0", "none"])
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw-delta"])
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_every_option_on_and_off(off, softplus, cplx):
    torch.manual_seed(7)
    flags = {f"with_{name}": name not in off for name in OPTIONS}
    args = make_inputs(2, 3, 4, 37, cplx=cplx, **flags)
    if not softplus:
        args[1] = args[1].abs()  # a positive step without softplus
    check(args, "torch", softplus=softplus)


def test_groups_of_B_and_C_may_differ():
    # G = 2 for B and 3 for C on D = 6: channel d reads B group d // 3 and C group d // 2.
    torch.manual_seed(8)
    args = make_inputs(2, 6, 3, 21, B_kind="grouped", C_kind="grouped", G=2)
    args[4] = torch.randn(2, 3, 3, 21, dtype=F64)
    check(args, "torch", summed={"B", "C"})


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
@pytest.mark.parametrize("L", [1, 9, 64, 101])
def test_every_chunk_size_and_group_of_chunks(monkeypatch, chunk, L):
    # One chunk per group (GROUP_ELEMENTS = 1): states carried across many groups, forward
    # and backward, and every length of the padded last chunk.
    monkeypatch.setattr(spt, "CHUNK", chunk)
    monkeypatch.setattr(spt, "GROUP_ELEMENTS", 1)
    torch.manual_seed(9)
    for cplx, B_kind, C_kind in ((False, "grouped", "const"), (True, "const", "grouped"), (False, "var", "var")):
        args = make_inputs(1, 4, 3, L, cplx=cplx, B_kind=B_kind, C_kind=C_kind, G=2)
        check(args, "torch", summed={"B", "C"})


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_gradcheck(monkeypatch, cplx):
    # Finite differences for every input at once, through out and last state; chunks of 2
    # steps in groups of 2 chunks.
    monkeypatch.setattr(spt, "CHUNK", 2)
    monkeypatch.setattr(spt, "GROUP_ELEMENTS", 2 * 8)  # a chunk is T·B·N·D = 8 entries
    torch.manual_seed(10)
    args = make_inputs(1, 2, 2, 9, cplx=cplx, B_kind="var", C_kind="const")
    args = [t.requires_grad_(True) for t in args]

    def fn(*a):
        return public("torch")(*a, True)

    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("kind", ["var", "grouped"])
def test_complex_A_with_interleaved_real_B_C(backend, kind):
    # mamba_ssm's convention: real (B, [G,] N, 2L) B and C with (re, im) pairs along the last dim.
    torch.manual_seed(11)
    B_kind, C_kind, G = BC_KINDS[kind]
    args = make_inputs(2, 4, 3, 19, cplx=True, B_kind=B_kind, C_kind=C_kind, G=G, dtype=torch.float32)
    as_pairs = [torch.view_as_real(args[i]).flatten(-2) for i in (3, 4)]
    w_out, w_last = cotangents(args)
    got = run(public(backend), args[:3] + as_pairs + args[5:], True, w_out, w_last)
    want = oracle(args, True, w_out, w_last)
    assert as_pairs[0].shape[-1] == 2 * 19 and got[5].shape == as_pairs[0].shape
    for i, (x, y) in enumerate(zip(got, want)):
        if i in (5, 6):  # grads of B and C: pairs of the complex gradient
            y = torch.view_as_real(y).flatten(-2)
        compare = assert_close_summed if i in (1, 4, 5, 6, 7, 9) else assert_close
        compare(x, y, dtype=torch.float32, msg=str(i))


@pytest.mark.parametrize("kind", ["var", "grouped"])
def test_complex_A_with_float64_interleaved_pairs_stays_float64(kind):
    """Guards that float64 (re, im) pairs are read as complex128, not rounded through complex64."""
    torch.manual_seed(24)
    B_kind, C_kind, G = BC_KINDS[kind]
    args = make_inputs(2, 4, 3, 19, cplx=True, B_kind=B_kind, C_kind=C_kind, G=G)  # complex128
    as_pairs = [torch.view_as_real(args[i]).flatten(-2) for i in (3, 4)]
    assert as_pairs[0].dtype == F64
    w_out, w_last = cotangents(args)
    got = run(public("torch"), args[:3] + as_pairs + args[5:], True, w_out, w_last)
    want = oracle(args, True, w_out, w_last)
    for i, (x, y) in enumerate(zip(got, want)):
        if i in (5, 6):  # grads of B and C: pairs of the complex gradient
            assert x.dtype == F64
            y = torch.view_as_real(y).flatten(-2)
        compare = assert_close_summed if i in (4, 5, 6, 7, 9) else assert_close
        compare(x, y, dtype=F64, msg=str(i))


def test_softplus_slope_up_to_its_linear_branch():
    """Guards the backward's softplus slope σ(x) for delta + delta_bias up to 20, where F.softplus
    turns linear (an early cut to slope 1 is off by e^-x)."""
    torch.manual_seed(25)
    args = make_inputs(2, 4, 3, 37)  # two chunks and a padded third
    n = args[1].numel()
    pre = torch.linspace(-4.0, 19.5, n, dtype=F64)[torch.randperm(n)].view(args[1].shape)
    args[1] = pre - args[7][:, None]  # delta + delta_bias = pre, below the threshold 20 everywhere
    check(args, "torch")


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cplx", [False, True], ids=["real", "complex"])
def test_low_precision_matches_oracle(backend, dtype, cplx):
    # Half inputs are computed in float32: out in u's dtype, last state float32 (complex64).
    # The oracle sees exactly the rounded inputs; the tolerance is the one of dtype.
    torch.manual_seed(12)
    args = make_inputs(2, 4, 3, 100, cplx=cplx, B_kind="grouped", C_kind="var", G=2, dtype=dtype)
    check(args, backend, summed={"B"})


def test_long_sequence_with_large_steps_does_not_overflow():
    # Δ·|A| up to ~1e3 per step: decays underflow to 0 (never divided by), states stay finite.
    torch.manual_seed(13)
    args = make_inputs(1, 2, 3, 1500, cplx=True, B_kind="var", C_kind="var", dtype=torch.float32)
    args[1] = 10 * args[1].abs()  # Δ = delta + |delta_bias| without softplus
    args[7] = args[7].abs()
    args[2] = args[2] * torch.tensor([1.0, 10.0, 100.0])
    leaves = [t.detach().clone().requires_grad_(True) for t in args]
    out, last = public("torch")(*leaves, False)
    loss_of(out, last, *cotangents(args)).backward()
    for t in [out, torch.view_as_real(last)] + [leaf.grad for leaf in leaves]:
        assert torch.isfinite(t if not t.is_complex() else torch.view_as_real(t)).all()
    assert_close(out, oracle_loop(*widened(args), False)[0], dtype=torch.float32)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_zero_length(backend):
    torch.manual_seed(14)
    args = [t.requires_grad_(True) for t in make_inputs(2, 3, 4, 0)]
    out, last = public(backend)(*args, True)
    assert out.shape == (2, 3, 0) and last.shape == (2, 3, 4)
    assert_close(last, args[8])
    (last.sum() + out.sum()).backward()
    assert torch.all(args[8].grad == 1)
    out, last = selective_scan(*args[:5], return_last_state=True, backend=backend)
    assert torch.all(last == 0)


@pytest.mark.parametrize("backend", ["torch", "reference", "triton"])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("sizes", [(2, 3, 4, 0), (0, 3, 4, 5), (2, 0, 4, 5)], ids=["L=0", "B=0", "D=0"])
def test_an_empty_scan_gives_every_input_a_zero_gradient(backend, with_h0, sizes):
    """Nothing is scanned, so every gradient is zero, and none is missing: the last state (h0
    or zeros) alone used to leave delta, A, B, C and delta_bias out of the graph, and
    backward() raised."""
    torch.manual_seed(16)
    args = make_inputs(*sizes, with_h0=with_h0)
    device = backend_device(backend)
    args = [None if t is None else t.to(device).requires_grad_(True) for t in args]
    out, last = public(backend)(*args, True)
    Bsz, Dm, N, L = sizes
    assert out.shape == (Bsz, Dm, L) and last.shape == (Bsz, Dm, N)
    inputs = [t for t in args if t is not None]
    grads = torch.autograd.grad(out.sum() + last.sum(), inputs, retain_graph=True)
    for name, t, g in zip("u delta A B C D z delta_bias h0".split(), args, grads):
        assert g.shape == t.shape
        if name != "h0":
            assert not g.any(), name
    if with_h0:
        assert torch.all(grads[-1] == 1)
    for which, result in (("out", out), ("last", last)):  # each output alone ties every input in
        alone = torch.autograd.grad(result.sum(), inputs, retain_graph=True)
        for name, t, g in zip("u delta A B C D z delta_bias h0".split(), args, alone):
            assert g.shape == t.shape, (which, name)
            if not (which == "last" and name == "h0"):
                assert not g.any(), (which, name)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_zero_states_leave_the_skip_and_gate(backend):
    """N = 0: no state, y = D u silu(z) (the torch path divided by its chunk size, 0)."""
    g = torch.Generator().manual_seed(15)
    u, delta, z = torch.randn(3, 2, 4, 5, generator=g, dtype=F64).unbind(0)
    D = torch.randn(4, generator=g, dtype=F64)
    empty = torch.empty(2, 0, 5, dtype=F64)
    out, last = selective_scan(u, delta, torch.empty(4, 0, dtype=F64), empty, empty, D=D, z=z,
                               return_last_state=True, backend=backend)
    assert_close(out, D[:, None] * u * torch.nn.functional.silu(z))
    assert last.shape == (2, 4, 0)


@pytest.mark.parametrize("L", [1, 37])
def test_inputs_are_not_modified(L):
    torch.manual_seed(21)
    args = [t.requires_grad_(True) for t in make_inputs(2, 4, 3, L)]
    before = [t.detach().clone() for t in args]
    out, last = public("torch")(*args, True)
    loss_of(out, last, *cotangents(args)).backward()
    for name, t, t0 in zip(NAMES, args, before):
        assert torch.equal(t.detach(), t0), name


def test_non_contiguous_inputs():
    # The Mamba block passes transposed views of (B, L, D) and (B, L, N) projections.
    torch.manual_seed(22)
    args = make_inputs(2, 4, 3, 37, B_kind="var", C_kind="var")
    views = [t.transpose(-1, -2).contiguous().transpose(-1, -2) if t is not None and t.dim() == 3 else t
             for t in args]
    views[2] = args[2].t().contiguous().t()
    assert not views[0].is_contiguous() and not views[3].is_contiguous() and not views[2].is_contiguous()
    check(views, "torch", summed={"B", "C"})


def test_without_return_last_state_returns_out_only():
    torch.manual_seed(15)
    args = make_inputs(2, 3, 4, 10)
    out = selective_scan(*args[:5], backend="torch")
    assert torch.is_tensor(out) and out.shape == (2, 3, 10)
    assert_close(out, oracle_loop(*widened(args[:5]), None, None, None, None, False)[0])


def test_grad_only_for_inputs_that_require_it():
    torch.manual_seed(16)
    args = make_inputs(2, 3, 4, 40)
    args[0].requires_grad_(True)
    selective_scan(*args[:5], D=args[5], z=args[6], backend="torch").square().sum().backward()
    assert args[0].grad is not None and torch.isfinite(args[0].grad).all()
    assert all(t.grad is None for t in args[1:])


def test_grad_through_last_state_alone():
    # mamba_ssm drops the gradient of the last state; here it reaches every input.
    torch.manual_seed(17)
    args = [t if t is None else t.requires_grad_(True) for t in make_inputs(2, 3, 4, 40, with_z=False)]
    _, last = public("torch")(*args, True)
    last.sum().backward()
    for name, t in zip(NAMES, args):
        if name not in ("C", "D", "z"):  # these only act on the output
            assert t.grad is not None and t.grad.abs().sum() > 0, name


def test_default_backend_on_cpu_is_torch_and_use_backend_forces_one(monkeypatch):
    torch.manual_seed(18)
    args = make_inputs(2, 3, 4, 9)
    calls = []
    for name in ("torch", "reference"):
        impl = scan_pkg._IMPLEMENTATIONS[name]
        monkeypatch.setitem(scan_pkg._IMPLEMENTATIONS, name,
                            lambda *a, _n=name, _f=impl: calls.append(_n) or _f(*a))
    selective_scan(*args[:5])
    with kernels.use_backend("reference"):
        selective_scan(*args[:5])
        selective_scan(*args[:5], backend="torch")
    assert calls == ["torch", "reference", "torch"]


def test_pytorch_path_is_not_a_loop_over_time():
    # The number of torch calls grows with the chunk size and the number of groups of chunks,
    # not with L: one group here, L = 4096 steps.
    calls = []

    class Count(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(19)
    args = [t.requires_grad_(True) for t in make_inputs(1, 2, 2, 4096, dtype=torch.float32)]
    with Count():
        out, last = public("torch")(*args, True)
        (out.sum() + last.sum()).backward()
    assert len(calls) < 1500, len(calls)


# ---------------------------------------------------------------- input validation

def bad(**changes):
    """Valid arguments (u (2, 4, 5), A (4, 3)) with some replaced."""
    base = {"u": torch.randn(2, 4, 5), "delta": torch.rand(2, 4, 5), "A": -torch.rand(4, 3),
            "B": torch.randn(2, 3, 5), "C": torch.randn(2, 3, 5)}
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (bad(u=torch.randn(2, 4)), ValueError, r"u of shape \(B, D, L\)"),
        (bad(u=torch.ones(2, 4, 5, dtype=torch.int64)), TypeError, "u must be one of"),
        (bad(u=[1.0]), TypeError, "u must be a tensor"),
        (bad(delta=torch.rand(2, 4, 6)), ValueError, r"delta of shape \(B, D, L\) = \(2, 4, 5\)"),
        (bad(delta=torch.rand(2, 4, 5, dtype=torch.complex64)), TypeError, "delta must be real"),
        (bad(A=-torch.rand(5, 3)), ValueError, r"A of shape \(D, N\) with D = 4"),
        (bad(A=-torch.rand(4)), ValueError, r"A of shape \(D, N\)"),
        (bad(A=torch.ones(4, 3, dtype=torch.int32)), TypeError, "A must be real or complex"),
        (bad(B=torch.randn(2, 4, 5)), ValueError, r"B of shape \(B, N, L\) = \(2, 3, 5\).*got \(2, 4, 5\)$"),
        (bad(C=torch.randn(2, 3, 7)), ValueError, r"C of shape \(B, N, L\) = \(2, 3, 5\)"),
        (bad(B=torch.randn(4, 2)), ValueError, r"B of shape \(D, N\) = \(4, 3\)"),
        (bad(B=torch.randn(2, 3, 3, 5)), ValueError, r"G dividing D = 4"),
        (bad(C=torch.randn(2, 2, 3, 5, 1)), ValueError, r"C of shape \(D, N\), \(B, N, L\) or \(B, G, N, L\)"),
        (bad(B=torch.randn(2, 3, 5, dtype=torch.complex64)), TypeError, "complex B needs complex A"),
        (bad(C=torch.randn(4, 3, dtype=torch.complex64)), TypeError, "complex C needs complex A"),
        (bad(A=torch.randn(4, 3, dtype=torch.complex64)), ValueError, r"interleaved \(re, im\) pairs.*2L = 10, got \(2, 3, 5\)$"),
        (bad(D=torch.randn(5)), ValueError, r"D of shape \(D,\) = \(4,\)"),
        (bad(delta_bias=torch.randn(4, 1)), ValueError, r"delta_bias of shape \(D,\)"),
        (bad(z=torch.randn(2, 5, 4)), ValueError, r"z of shape \(B, D, L\)"),
        (bad(D=torch.ones(4, dtype=torch.int64)), TypeError, "D must be real floating point"),
        (bad(h0=torch.randn(2, 4)), ValueError, r"h0 of shape \(B, D, N\) = \(2, 4, 3\)"),
        (bad(h0=torch.randn(2, 4, 3, dtype=torch.complex64)), TypeError, "h0 must be complex exactly when A is"),
        (bad(h0=torch.ones(2, 4, 3, dtype=torch.int64)), TypeError, "h0 must be a floating-point"),
    ],
    ids=["u-rank", "u-int", "u-list", "delta-shape", "delta-complex", "A-channels", "A-rank", "A-int",
         "B-state-size", "C-length", "B-const-shape", "G-not-dividing-D", "C-rank", "complex-B-real-A",
         "complex-C-real-A", "interleaved-length", "D-shape", "bias-shape", "z-shape", "D-int", "h0-shape",
         "h0-complex", "h0-int"],
)
def test_bad_inputs_raise_clear_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        selective_scan(**kwargs, backend="torch")


def test_unknown_backend_raises_value_error():
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**bad(), backend="numpy")


# ---------------------------------------------------------------- peer oracle: mambapy

@pytest.mark.parametrize("L", [16, 37], ids=["L-power-of-2", "L-padded"])
def test_matches_mambapy_pscan_forward_and_backward(L):
    # mambapy's layer: Δ = softplus(·) (B, L, ED), deltaA = exp(Δ A), BX = Δ B x with B, C
    # (B, L, N); hs = pscan(deltaA, BX); y = hs C. Built here from its pscan (which pads L to
    # a power of two inside) in float64; ours in (B, ED, L) layout with the fused softplus.
    pscan = pytest.importorskip("mambapy.pscan").pscan
    torch.manual_seed(20)
    Bsz, ED, N = 2, 5, 4
    x = torch.randn(Bsz, L, ED, dtype=F64, requires_grad=True)
    raw = torch.randn(Bsz, L, ED, dtype=F64, requires_grad=True)
    bias = torch.randn(ED, dtype=F64, requires_grad=True)
    A = (-torch.exp(torch.randn(ED, N, dtype=F64))).requires_grad_(True)
    B = torch.randn(Bsz, L, N, dtype=F64, requires_grad=True)
    C = torch.randn(Bsz, L, N, dtype=F64, requires_grad=True)
    w = torch.randn(Bsz, L, ED, dtype=F64)

    delta = torch.nn.functional.softplus(raw + bias)
    hs = pscan(torch.exp(delta.unsqueeze(-1) * A), delta.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1))
    y_peer = (hs @ C.unsqueeze(-1)).squeeze(3)
    peer_grads = torch.autograd.grad((y_peer * w).sum(), (x, raw, bias, A, B, C))

    y = selective_scan(x.transpose(1, 2), raw.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2),
                       delta_bias=bias, delta_softplus=True, backend="torch").transpose(1, 2)
    grads = torch.autograd.grad((y * w).sum(), (x, raw, bias, A, B, C))
    assert_close(y, y_peer)
    for name, g, g_peer in zip(["x", "delta", "bias", "A", "B", "C"], grads, peer_grads):
        compare = assert_close_summed if name in ("bias", "A") else assert_close
        compare(g, g_peer, msg=name)


# ---------------------------------------------------------------- peer oracle: mamba_ssm


def mamba_ssm_reference():
    """state-spaces/mamba's ``selective_scan_ref``: from an installed ``mamba_ssm``, or from a
    checkout named by $SSM_PEER_MAMBA_SSM (loaded as in ``bench.peers``); skips otherwise."""
    from bench.peers import mamba_ssm_selective_scan

    checkout = os.environ.get("SSM_PEER_MAMBA_SSM")
    peer = mamba_ssm_selective_scan(checkout, torch.device("cpu"))
    if peer is None:
        pytest.skip("mamba_ssm is not installed and $SSM_PEER_MAMBA_SSM names no checkout")
    return peer[1]  # on the CPU always selective_scan_ref


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("case", ["plain", "all-options", "grouped", "constant-BC", "complex"])
def test_matches_mamba_ssm_reference(case, backend):
    # mamba_ssm's reference computes in float32 whatever the inputs: compare at float32 tolerance.
    ref = mamba_ssm_reference()
    torch.manual_seed(21)
    Bsz, Dm, N, L = 2, 4, 3, 13
    u, delta, z = torch.randn(Bsz, Dm, L), torch.rand(Bsz, Dm, L) - 0.5, torch.randn(Bsz, Dm, L)
    A = -torch.rand(Dm, N) - 0.2
    B, C = torch.randn(Bsz, N, L), torch.randn(Bsz, N, L)
    kwargs = {}
    if case == "all-options":
        kwargs = dict(D=torch.randn(Dm), z=z, delta_bias=0.1 * torch.randn(Dm), delta_softplus=True)
    elif case == "grouped":
        B, C = torch.randn(Bsz, 2, N, L), torch.randn(Bsz, 2, N, L)
    elif case == "constant-BC":
        B, C = torch.randn(Dm, N), torch.randn(Dm, N)
    elif case == "complex":
        A = torch.complex(A, torch.randn(Dm, N))
        B, C = torch.randn(Bsz, N, 2 * L), torch.randn(Bsz, N, 2 * L)  # mamba's interleaved (re, im) layout
    leaves = [t.requires_grad_(True) for t in (u, delta, A, B, C)]
    w = torch.randn(Bsz, Dm, L)
    out_peer, last_peer = ref(*leaves, return_last_state=True, **kwargs)
    grads_peer = torch.autograd.grad((out_peer * w).sum(), leaves)
    out, last = selective_scan(*leaves, return_last_state=True, backend=backend, **kwargs)
    grads = torch.autograd.grad((out * w).sum(), leaves)
    assert_close(out, out_peer)
    assert_close(last, last_peer.to(last.dtype))
    for name, g, g_peer in zip(["u", "delta", "A", "B", "C"], grads, grads_peer):
        compare = assert_close_summed if name in ("A",) or case == "constant-BC" else assert_close
        compare(g, g_peer, msg=name)
