"""Every public layer, and every kernel on its Triton backend, runs under ``torch.compile``
with the numbers of eager mode, forward and backward; on either backend every layer compiles
to one graph (``fullgraph=True``) and exports with ``torch.export``.

The compiler backend is ``aot_eager`` (TorchDynamo capture plus AOTAutograd's joint graph,
run without code generation): it exercises what can break under compilation (tracing the
layer, the opaque ops that stand for the Triton kernels, autograd across them) without
inductor's C++ build time. A counting wrapper checks that graphs were really captured: a layer that fell
back to eager mode everywhere would pass a comparison with itself."""

from __future__ import annotations

import functools

import pytest
import torch

import kernels
import ssm
from compile_counting import CountingBackend
from compiled_like_eager import outputs_and_gradients
from devices import TRITON_DEVICE, requires_cuda
from tolerances import assert_close


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached per code object: each test compiles from scratch."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def check(fn, inputs, min_ops: int = 3, fullgraph: bool = False):
    """fn(*inputs) and its gradients w.r.t. the floating-point inputs and fn's parameters,
    compiled (with a counting backend) as eager."""
    params = [p for p in getattr(fn, "parameters", lambda: [])() if p.requires_grad]
    counter = CountingBackend()
    compiled = torch.compile(fn, backend=counter, fullgraph=fullgraph)
    want = outputs_and_gradients(fn, inputs, params, allow_unused=True)
    got = outputs_and_gradients(compiled, inputs, params, allow_unused=True)
    assert counter.graphs >= 1 and counter.ops >= min_ops, "nothing was compiled"
    dtype = want[0].dtype
    assert_close(got[0], want[0], dtype=dtype)
    assert any(g is not None for g in want[1:]), "nothing was differentiated"
    for a, b in zip(got[1:], want[1:], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert_close(a, b, dtype=dtype)


SEQUENCE_LAYERS = {
    "s4d": lambda: ssm.S4D(4, 8),
    "s4d-bidirectional-bilinear": lambda: ssm.S4D(4, 6, disc="bilinear", bidirectional=True),
    "dss-exp": lambda: ssm.DSS(4, 8),
    "dss-softmax": lambda: ssm.DSS(4, 8, variant="softmax"),
    "s4ptd": lambda: ssm.S4PTD(4, 5),
    "s5": lambda: ssm.S5(4, 8, blocks=2),
    "s5ptd-bidirectional": lambda: ssm.S5PTD(4, 6, bidirectional=True),
    "companion": lambda: ssm.CompanionSSM(4, 8),
    "shift": lambda: ssm.ShiftSSM(4, 8),
    "mamba": lambda: ssm.Mamba(4, d_state=4),
    "mamba-bidirectional": lambda: ssm.Mamba(4, d_state=4, bidirectional=True),
}


@pytest.mark.parametrize("name", sorted(SEQUENCE_LAYERS))
def test_sequence_layer_compiles_to_its_eager_numbers(name):
    torch.manual_seed(0)
    layer = SEQUENCE_LAYERS[name]()
    check(layer, [torch.randn(2, 13, 4)], fullgraph=True)


@pytest.mark.parametrize("make, shape", [
    (lambda: ssm.SS2D(4, d_state=4), (2, 5, 3, 4)),
    (lambda: ssm.NSSMamba(4, d_state=4), (2, 5, 3, 4)),
    (lambda: ssm.Mamba2D(4, d_state=4), (2, 5, 3, 4)),
    (lambda: ssm.Chimera(4, d_state=4), (2, 7, 3, 4)),
], ids=["ss2d", "nss-mamba", "mamba2d", "chimera"])
def test_2d_layer_compiles_to_its_eager_numbers(make, shape):
    torch.manual_seed(0)
    check(make(), [torch.randn(*shape)], fullgraph=True)


class Forecast(torch.nn.Module):
    """A closed-loop layer's forecast of a fixed horizon, as a module of x alone."""

    def __init__(self, layer, horizon: int):
        super().__init__()
        self.layer, self.horizon = layer, horizon

    def forward(self, x):
        return self.layer(x, self.horizon)


def test_closed_loop_forecast_compiles_to_its_eager_numbers():
    torch.manual_seed(0)
    check(Forecast(ssm.ClosedLoopCompanionSSM(4, 6), 5), [torch.randn(2, 9, 4)], fullgraph=True)


def test_backbone_step_compiles_to_its_eager_numbers():
    """Decoding loops are what users compile most: one compiled step of a Mamba stack."""
    from ssm.blocks import SequenceBackbone

    torch.manual_seed(0)
    net = SequenceBackbone(6, n_layers=2, layer=lambda d: ssm.Mamba(d, d_state=4), output="none").eval()
    x = torch.randn(3, 6)
    counter = CountingBackend()
    step = torch.compile(net.step, backend=counter, fullgraph=True)
    state_eager, state_compiled = net.init_state(3), net.init_state(3)
    with torch.no_grad():
        for _ in range(3):
            y, state_eager = net.step(x, state_eager)
            yc, state_compiled = step(x, state_compiled)
            assert_close(yc, y, dtype=torch.float32)
            x = torch.tanh(y)
    assert counter.graphs >= 1


def ss_inputs(B=1, D=4, N=3, L=11):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, D, L, generator=g), torch.rand(B, D, L, generator=g), -torch.rand(D, N, generator=g),
            torch.randn(B, N, L, generator=g), torch.randn(B, N, L, generator=g), torch.randn(D, generator=g),
            torch.randn(B, D, L, generator=g)]


def ss2d_inputs(B=1, D=2, N=3, H=3, W=4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, D, H, W, generator=g), torch.rand(B, D, H, W, generator=g), -torch.rand(D, N, generator=g),
            torch.randn(B, N, H, W, generator=g), torch.randn(B, N, H, W, generator=g)]


def vandermonde_inputs(H=2, N=3):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(H, N, 2, generator=g)
    x = torch.stack([-torch.rand(H, N, generator=g), torch.randn(H, N, generator=g)], -1)
    return [v, x]


def companion_inputs(n=2, d=4):
    g = torch.Generator().manual_seed(0)
    return [0.3 * torch.randn(n, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)]


TRITON_OPS = {
    "selective_scan": (lambda u, dt, A, B, C, D, z: kernels.selective_scan(
        u, dt, A, B, C, D=D, z=z, delta_softplus=True, backend="triton"), ss_inputs),
    "selective_scan_2d": (lambda u, dt, A, B, C: kernels.selective_scan_2d(u, dt, A, B, C, backend="triton"),
                          ss2d_inputs),
    "linear_scan": (lambda a, b: kernels.linear_scan(a, b, backend="triton"),
                    lambda: [torch.rand(2, 9, 3), torch.randn(2, 9, 3)]),
    "fftconv": (lambda u, k, D: kernels.fftconv(u, k, D, backend="triton"),
                lambda: [torch.randn(2, 3, 10), torch.randn(3, 10), torch.randn(3)]),
    "vandermonde": (lambda v, x: kernels.vandermonde(torch.view_as_complex(v), torch.view_as_complex(x), 7,
                                                     backend="triton"), vandermonde_inputs),
    "companion_kernel": (lambda a, b, c: kernels.companion_kernel(a, b, c, 9, backend="triton"), companion_inputs),
    "cross_scan": (lambda x: kernels.cross_scan(x, backend="triton"), lambda: [torch.randn(1, 2, 3, 4)]),
    "cross_merge": (lambda y: kernels.cross_merge(y, 3, 4, backend="triton"), lambda: [torch.randn(1, 4, 2, 12)]),
}


@pytest.mark.parametrize("name", sorted(TRITON_OPS))
def test_triton_op_compiles_into_the_graph_of_the_ops_around_it(name):
    """While TorchDynamo traces, each Triton op runs as a torch.library op (forward and
    backward launches), so it sits in one graph with the traced ops on both sides
    (``fullgraph=True``) and gradients flow through it. The inputs are drawn on CPU and put on
    TRITON_DEVICE (the GPU, or the interpreter's CPU)."""
    fn, make_inputs = TRITON_OPS[name]

    def around(*inputs):  # traced ops on both sides of the Triton call
        return fn(*(t * 1.5 if t.is_floating_point() else t for t in inputs)).sin()

    check(around, [t.to(TRITON_DEVICE) for t in make_inputs()], min_ops=1, fullgraph=True)


SAVING_OPS = {  # the ops that save states for their backward only when one will run
    "selective_scan-torch": (lambda u, dt, A, B, C, D, z: kernels.selective_scan(
        u, dt, A, B, C, D=D, z=z, delta_softplus=True, backend="torch"), ss_inputs, "cpu"),
    **{f"{name}-triton": (*TRITON_OPS[name], TRITON_DEVICE)
       for name in ("selective_scan", "selective_scan_2d", "fftconv")},
}


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("name", sorted(SAVING_OPS))
def test_compiled_op_saves_states_only_for_a_backward(name, grad):
    """Compiled (or exported) for inference, the op is called with save=False, as in eager
    mode: no chunk or tile states are kept for a backward that never runs."""
    fn, make_inputs, device = SAVING_OPS[name]
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    inputs = [t.to(device).requires_grad_(grad) for t in make_inputs()]
    with torch.set_grad_enabled(grad):
        torch.compile(fn, backend=record, fullgraph=True)(*inputs)
    saves = []
    for node in (n for gm in graphs for n in gm.graph.nodes):
        if node.op == "call_function" and str(node.target).startswith("ssm_kernels."):
            names = [a.name for a in node.target._schema.arguments]
            saves.append(node.kwargs["save"] if "save" in node.kwargs else node.args[names.index("save")])
    assert saves == [grad]


def _triton_op_cases():
    """(op module, the forward op's arguments): half-precision activations with float32
    parameters where a path takes them, so that gradients come in two dtypes."""
    g = torch.Generator().manual_seed(1)

    def draw(*shape, dtype=torch.float32):
        t = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        return t.to(TRITON_DEVICE).requires_grad_(t.is_floating_point() or t.is_complex())

    half = torch.float16
    A = (-torch.rand(4, 3, generator=g)).to(TRITON_DEVICE).requires_grad_()
    A2 = (-torch.rand(2, 3, generator=g)).to(TRITON_DEVICE).requires_grad_()
    x = torch.complex(-torch.rand(2, 3, generator=g), torch.randn(2, 3, generator=g)).to(TRITON_DEVICE).requires_grad_()
    return {
        "selective_scan": ("kernels.selective_scan.triton_op", (
            draw(1, 4, 11, dtype=half), draw(1, 4, 11, dtype=half), A, draw(1, 2, 3, 11, dtype=half),
            draw(1, 2, 3, 11, dtype=half), draw(4), draw(1, 4, 11, dtype=half), draw(4), draw(1, 4, 3), True, True)),
        "selective_scan_2d": ("kernels.selective_scan_2d.triton_op", (
            draw(1, 2, 3, 4, dtype=half), draw(1, 2, 3, 4, dtype=half), A2, draw(1, 1, 3, 3, 4, dtype=half),
            draw(1, 1, 3, 3, 4, dtype=half), draw(2), None, None, False, True, 2, 2)),
        "linear_scan": ("kernels.linear_scan.triton_op", (
            draw(2, 9, 3, dtype=half), draw(2, 9, 3, dtype=half), draw(2, 3, dtype=half), True)),
        "fftconv": ("kernels.fftconv.triton_op", (draw(2, 3, 10), draw(2, 3, 10), draw(3), True)),
        "vandermonde": ("kernels.vandermonde.triton_op", (draw(2, 2, 3, dtype=torch.complex64), x, 7)),
    }


@pytest.mark.parametrize("name", sorted(_triton_op_cases()))
def test_triton_backward_op_fake_outputs_are_its_real_ones(name):
    """Each Triton forward op's backward op, called as its autograd calls it: the fake
    gradients (what the compiler plans with) have the real ones' shapes, dtypes and layouts,
    e.g. h0's float32 gradient beside u's float16 one."""
    import importlib

    from fake_outputs import assert_fake_outputs_like_real, backward_op_calls

    module_name, args = _triton_op_cases()[name]
    module = importlib.import_module(module_name)

    def backward():
        outs = module._forward_op(*args)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        torch.autograd.backward([o.real.float().sum() for o in outs if o.requires_grad])

    for op, op_args in backward_op_calls(module, "_backward_op", backward):
        assert_fake_outputs_like_real(op, op_args)


TRITON_LAYERS = {
    "s4d": (lambda: ssm.S4D(4, 4), (1, 9, 4)),
    "s5": (lambda: ssm.S5(4, 4, blocks=2), (1, 9, 4)),
    "mamba": (lambda: ssm.Mamba(4, d_state=4), (1, 9, 4)),
    "ss2d": (lambda: ssm.SS2D(4, d_state=4), (1, 3, 4, 4)),
    "mamba2d": (lambda: ssm.Mamba2D(4, d_state=4), (1, 3, 4, 4)),
}


@pytest.mark.parametrize("name", sorted(TRITON_LAYERS))
def test_layer_on_the_triton_backend_compiles_to_one_graph(name):
    """A whole layer with every op on its Triton kernel: one graph, eager mode's numbers."""
    make, shape = TRITON_LAYERS[name]
    torch.manual_seed(0)
    layer = make().to(TRITON_DEVICE)
    with kernels.use_backend("triton"):
        check(layer, [torch.randn(*shape).to(TRITON_DEVICE)], fullgraph=True)


@requires_cuda
@pytest.mark.parametrize("name", ["mamba", "mamba2d"])
def test_layer_on_the_triton_backend_under_inductor_on_cuda(name):
    """The default compiler (inductor, generating its own Triton code around our ops) with
    fullgraph=True on a GPU: eager mode's outputs and gradients."""
    make, shape = TRITON_LAYERS[name]
    torch.manual_seed(0)
    layer = make().cuda()
    x = torch.randn(*shape, device="cuda")
    want = outputs_and_gradients(layer, [x], list(layer.parameters()))
    got = outputs_and_gradients(torch.compile(layer, fullgraph=True), [x], list(layer.parameters()))
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, dtype=torch.float32)


def test_layer_on_the_triton_backend_exports():
    """``torch.export`` of a Mamba layer on the Triton backend keeps the scan as its op."""
    torch.manual_seed(0)
    layer = ssm.Mamba(4, d_state=4).eval().to(TRITON_DEVICE)
    with kernels.use_backend("triton"):
        program = torch.export.export(layer, (torch.randn(1, 9, 4).to(TRITON_DEVICE),))
        x = torch.randn(1, 9, 4).to(TRITON_DEVICE)
        with torch.no_grad():
            assert_close(program.module()(x), layer(x), dtype=torch.float32)
    targets = {str(node.target) for node in program.graph.nodes}
    assert "ssm_kernels.selective_scan_triton.default" in targets


def test_compiling_layers_raises_no_warnings():
    """The Python-side caches (FFT lengths, scan orders) are bypassed while tracing: TorchDynamo
    warns on every LRU-cached function it meets."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.compile(ssm.S4D(4, 4), backend="aot_eager")(torch.randn(2, 7, 4)).sum().backward()
        torch.compile(ssm.NSSMamba(4, d_state=4), backend="aot_eager")(torch.randn(1, 5, 3, 4)).sum().backward()
    assert [str(w.message) for w in caught] == []


def test_cached_outside_compile_caches_in_eager_mode_only():
    from kernels._compile import cached_outside_compile

    calls = []

    @cached_outside_compile(maxsize=None)
    def square(n):
        calls.append(n)
        return n * n

    assert square(3) == square(3) == 9 and calls == [3]
    traced = torch.compile(lambda x: x * square(4), backend="aot_eager", fullgraph=True)
    assert torch.equal(traced(torch.ones(2)), torch.full((2,), 16.0))
    assert calls == [3, 4]  # traced through, uncached: the cache saw no call
    assert square(4) == 16 and calls == [3, 4, 4]


@pytest.mark.parametrize("name", sorted(SEQUENCE_LAYERS))
def test_sequence_layer_compiled_once_runs_at_other_lengths(name):
    """A second length makes TorchDynamo trace again with the length symbolic (automatic
    dynamic shapes); the ops whose Python arithmetic depends on L (the chunked scans, the
    Vandermonde kernel's blocks) are opaque there, so that graph is whole too. The scan
    layers' symbolic graph serves a third length; the convolution layers' FFT size is chosen
    per length (a guard), so they trace once more."""
    torch.manual_seed(0)
    layer = SEQUENCE_LAYERS[name]()
    counter = CountingBackend()
    compiled = torch.compile(layer, backend=counter, fullgraph=True)
    for L in (13, 40, 27):
        x = torch.randn(2, L, 4)
        assert_close(compiled(x), layer(x), dtype=torch.float32)
    assert counter.graphs == (2 if name.startswith(("mamba", "s5")) else 3)


@pytest.mark.parametrize("make, short, long", [
    (lambda: ssm.Mamba(4, d_state=4), (1, 13, 4), (1, 700, 4)),
    (lambda: ssm.S5(4, 8, blocks=2), (1, 13, 4), (1, 700, 4)),
    (lambda: ssm.Mamba2D(4, d_state=4), (1, 3, 5, 4), (1, 30, 40, 4)),
], ids=["mamba", "s5", "mamba2d"])
def test_graph_size_does_not_grow_with_the_sequence(make, short, long):
    """The chunked PyTorch scans loop in Python over chunks and pixels; compiled, each is one
    opaque op, so the graph holds the same ops at any length instead of the loops unrolled."""
    torch.manual_seed(0)
    layer = make()
    sizes = []
    for shape in (short, long):
        torch._dynamo.reset()
        counter = CountingBackend()
        torch.compile(layer, backend=counter, fullgraph=True, dynamic=False)(torch.randn(*shape)).sum().backward()
        sizes.append(counter.ops)
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("make, shape", [
    (lambda: ssm.S4D(4, 8, bidirectional=True), (2, 13, 4)),
    (lambda: ssm.S5(4, 8, blocks=2), (2, 13, 4)),
    (lambda: ssm.Mamba(4, d_state=4), (2, 13, 4)),
    (lambda: ssm.Mamba2D(4, d_state=4), (2, 5, 3, 4)),
    (lambda: ssm.NSSMamba(4, d_state=4), (2, 5, 3, 4)),
    (lambda: ssm.Chimera(4, d_state=4), (2, 7, 3, 4)),
    (lambda: ssm.CompanionSSM(4, 8), (2, 13, 4)),
    (lambda: Forecast(ssm.ClosedLoopCompanionSSM(4, 6), 5), (2, 9, 4)),
], ids=["s4d", "s5", "mamba", "mamba2d", "nss-mamba", "chimera", "companion", "closed-loop"])
def test_layer_exports_and_the_exported_program_matches_eager(make, shape):
    """``torch.export`` (for deployment) needs one graph: exported once, the program gives
    the layer's outputs on inputs it was not traced with."""
    torch.manual_seed(0)
    layer = make().eval()
    program = torch.export.export(layer, (torch.randn(*shape),))
    x = torch.randn(*shape)
    with torch.no_grad():
        assert_close(program.module()(x), layer(x), dtype=torch.float32)


def test_exported_program_saves_and_loads(tmp_path):
    """A saved program calls the package's ops by name (``ssm_kernels::*``): loaded where
    ``kernels`` is imported, it runs them."""
    torch.manual_seed(0)
    layer = ssm.Mamba(4, d_state=4).eval()
    with torch.no_grad():  # an inference program: the scan saves nothing for a backward
        program = torch.export.export(layer, (torch.randn(1, 9, 4),))
    torch.export.save(program, tmp_path / "mamba.pt2")
    loaded = torch.export.load(tmp_path / "mamba.pt2")
    assert any(str(node.target).startswith("ssm_kernels.") for node in loaded.graph.nodes)
    x = torch.randn(1, 9, 4)
    with torch.no_grad():
        assert_close(loaded.module()(x), layer(x), dtype=torch.float32)


PADDED_LAYERS = {
    "s4d": lambda d: ssm.S4D(d, 8),
    "dss-exp": lambda d: ssm.DSS(d, 8),
    # per-length kernels: one per distinct length eagerly (torch.unique), one per sequence compiled
    "dss-softmax": lambda d: ssm.DSS(d, 8, variant="softmax"),
    "s5": lambda d: ssm.S5(d, 8, blocks=2),
    "mamba-bidirectional": lambda d: ssm.Mamba(d, d_state=4, bidirectional=True),
}


@pytest.mark.parametrize("name", sorted(PADDED_LAYERS))
def test_backbone_with_padding_lengths_compiles_to_one_graph(name):
    """A padded batch (the LRA tasks' lengths): the lengths and mask checks are assertions in
    the graph, not host reads, so the backbone stays one graph."""
    from ssm.blocks import SequenceBackbone

    torch.manual_seed(0)
    net = SequenceBackbone(4, n_layers=2, layer=PADDED_LAYERS[name], output="none")
    lengths = torch.tensor([13, 9, 9])  # two of one length; not a palindrome, so each sequence's own kernel shows
    check(lambda x: net(x, lengths), [torch.randn(3, 13, 4)], fullgraph=True)


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_backbone_with_padding_lengths_compiles_to_one_graph(train):
    """ListOps' blocks: BatchNorm in training takes its statistics over the valid steps with
    masked sums, not by picking the valid rows out (a data-dependent count), so the padded
    batch stays one graph and the running statistics move as in eager mode."""
    import copy

    from ssm.blocks import SequenceBackbone

    torch.manual_seed(0)
    net = SequenceBackbone(4, n_layers=2, layer=PADDED_LAYERS["s4d"], norm="batch", output="none").train(train)
    eager, twin = copy.deepcopy(net), copy.deepcopy(net)
    lengths = torch.tensor([13, 9, 9])
    x = torch.randn(3, 13, 4)
    check(lambda x: net(x, lengths), [x], fullgraph=True)
    compiled = torch.compile(lambda x: twin(x, lengths), backend="aot_eager", fullgraph=True)
    compiled(x), eager(x, lengths)  # one call each: the same running statistics
    for mine, theirs in zip(twin.buffers(), eager.buffers(), strict=True):
        assert_close(mine, theirs, dtype=torch.float32)


def test_compiled_padding_check_still_refuses_bad_lengths():
    from ssm.blocks import SequenceBackbone

    net = SequenceBackbone(4, n_layers=1, layer=lambda d: ssm.S4D(d, 8), output="none")
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 13, 4)
    compiled(x, torch.tensor([13, 9]))
    with pytest.raises(RuntimeError, match=r"values in \[1, 13\]"):
        compiled(x, torch.tensor([14, 9]))


@pytest.mark.parametrize("pooling", ["mean", "last_k"])
def test_token_classifier_on_padding_compiles_to_one_graph_and_keeps_its_checks(pooling):
    """The ListOps model as trained (token ids, padded lengths, BatchNorm, training mode): the
    token-id range and last_k's lengths >= k checks are assertions in the graph, not host
    reads, so the whole model is one graph, and bad ids or lengths still raise."""
    torch.manual_seed(0)
    net = ssm.SequenceClassifier(8, 2, functools.partial(ssm.S4D, d_state=4), 3, n_tokens=10, norm="batch",
                                 pooling=pooling, n_predict=2 if pooling == "last_k" else 1).train()
    tokens, lengths = torch.randint(0, 10, (3, 13)), torch.tensor([13, 9, 9])
    counter = CountingBackend()
    compiled = torch.compile(net, backend=counter, fullgraph=True)
    assert_close(compiled(tokens, lengths), net(tokens, lengths), dtype=torch.float32)
    assert counter.graphs == 1
    with pytest.raises(RuntimeError, match=r"token ids must lie in \[0, 10\)"):
        compiled(torch.full((3, 13), 10), lengths)
    if pooling == "last_k":
        with pytest.raises(RuntimeError, match=r"values in \[2, 13\]"):
            compiled(tokens, torch.tensor([13, 1, 9]))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_image_classifier_compiles_to_one_graph(norm, train):
    """The LRA Image / Pathfinder model, forward and backward. With BatchNorm: for a
    transposed input (forward) or output gradient (backward) torch's CPU batch_norm returns a
    contiguous tensor where its fake tensor keeps the input's strides, so the compiled graph
    viewed the next Linear's input, or the gradient, by strides it did not have (a
    RuntimeError); the norm is now written out in tensor ops."""
    torch.manual_seed(0)
    net = ssm.ImageClassifier(8, 2, functools.partial(ssm.SS2D, d_state=2), 3, (4, 4), n_tokens=256,
                              norm=norm).train(train)
    check(net, [torch.randint(0, 256, (2, 16))], fullgraph=True)


def test_compiled_mask_check_still_refuses_values_other_than_0_and_1():
    """A layer's own float mask: its 0/1 check is an assertion in the graph too."""
    compiled = torch.compile(ssm.DSS(4, 8), fullgraph=True, backend="aot_eager")
    x, mask = torch.randn(2, 13, 4), torch.ones(2, 13)
    mask[0, 9:] = 0
    compiled(x, mask)
    mask[1, 3] = 0.5
    with pytest.raises(RuntimeError, match="the padding mask must hold only 0 and 1"):
        compiled(x, mask)
