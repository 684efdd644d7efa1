"""Random shapes and dtypes into every layer's forward: either the right output shape or a
ValueError / TypeError that says what was expected, never an error from deeper inside."""

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ssm

C = 4  # channels of every layer below
# name: (layer factory, rank of its input): (B, L, C) sequences, (B, H, W, C) images,
# (B, L, V, C) multivariate series
LAYERS = {
    "S4D": (functools.partial(ssm.S4D, C, d_state=4), 3),
    "DSS": (functools.partial(ssm.DSS, C, d_state=4), 3),
    "S4PTD": (functools.partial(ssm.S4PTD, C, d_state=4), 3),
    "S5": (functools.partial(ssm.S5, C, d_state=4), 3),
    "S5PTD": (functools.partial(ssm.S5PTD, C, d_state=4), 3),
    "CompanionSSM": (functools.partial(ssm.CompanionSSM, C, d_state=3), 3),
    "ShiftSSM": (functools.partial(ssm.ShiftSSM, C, d_state=3), 3),
    "ResidualSSM": (functools.partial(ssm.ResidualSSM, C, max_avg_window=6), 3),
    "Mamba": (functools.partial(ssm.Mamba, C, d_state=2), 3),
    "SS2D": (functools.partial(ssm.SS2D, C, d_state=2), 4),
    "NSSMamba": (functools.partial(ssm.NSSMamba, C, d_state=2, stripe=2), 4),
    "Mamba2D": (functools.partial(ssm.Mamba2D, C, d_state=2), 4),
    "Chimera": (functools.partial(ssm.Chimera, C, d_state=2, period=2), 4),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool, torch.complex64]
CLEAR = (ValueError, TypeError)


def tensors(rank_range, expected_rank):
    """Random shapes (usually with C channels last, often the right rank) and dtypes."""
    @st.composite
    def draw(draw_):
        rank = draw_(st.sampled_from([expected_rank] * 3 + list(rank_range)))
        shape = [draw_(st.integers(0, 5)) for _ in range(rank)]
        if rank and draw_(st.booleans()):
            shape[-1] = C
        dtype = draw_(st.sampled_from(DTYPES))
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(shape).to(dtype)
        return torch.zeros(shape, dtype=dtype)
    return draw()


FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def check(run, x, expected_shape):
    try:
        with torch.no_grad():
            y = run(x)
    except CLEAR as err:
        assert str(err), "an exception without a message"
        return
    assert y.shape == expected_shape, f"{tuple(x.shape)} {x.dtype} -> {tuple(y.shape)}"
    assert y.dtype == x.dtype and torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", LAYERS)
@FUZZ
@given(data=st.data())
def test_layers_give_the_input_shape_or_a_clear_error(name, data):
    factory, rank = LAYERS[name]
    x = data.draw(tensors(range(0, 6), rank))
    check(factory().eval(), x, x.shape)


@pytest.mark.parametrize("name", LAYERS)
def test_an_empty_batch_gives_an_empty_output(name):
    factory, rank = LAYERS[name]
    x = torch.randn(0, *[3] * (rank - 2), C)
    with torch.no_grad():
        assert factory().eval()(x).shape == x.shape


def empty_shapes(rank):
    """Each axis but the channels empty in turn: (0, 3, C), (2, 0, C) or (0, 3, 3, C), ..."""
    for axis in range(rank - 1):
        shape = [2] + [3] * (rank - 2) + [C]
        shape[axis] = 0
        yield tuple(shape)


@pytest.mark.parametrize("name", LAYERS)
def test_an_empty_input_keeps_the_graph(name):
    """A backward pass through an empty batch, sequence or image side gives the input and
    every trainable parameter a zero gradient (not None, which DDP reports as unused)."""
    factory, rank = LAYERS[name]
    for shape in empty_shapes(rank):
        layer = factory()
        x = torch.randn(shape, requires_grad=True)
        y = layer(x)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad is not None and x.grad.shape == x.shape
        for param_name, p in layer.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and not p.grad.any(), (shape, param_name)


def test_closed_loop_forecast_of_an_empty_batch():
    with torch.no_grad():
        assert ssm.ClosedLoopCompanionSSM(C, d_state=3)(torch.randn(0, 5, C), 2).shape == (0, 2, C)
        assert ssm.SpaceTime(lag=5, horizon=2, n_variates=2, d_model=8, d_state=3, n_kernels=1,
                             max_avg_window=6).forecast(torch.randn(0, 5, 2)).shape == (0, 2, 2)


@FUZZ
@given(x=tensors(range(0, 6), 3), horizon=st.integers(-1, 4))
def test_closed_loop_forecast_has_the_horizon_or_a_clear_error(x, horizon):
    layer = ssm.ClosedLoopCompanionSSM(C, d_state=3).eval()
    expected = (x.shape[0], horizon, C) if x.dim() == 3 else None
    check(lambda t: layer(t, horizon), x, expected)


STEP_LAYERS = ["S4D", "DSS", "S4PTD", "S5", "S5PTD", "CompanionSSM", "ShiftSSM", "ResidualSSM", "Mamba"]


@pytest.mark.parametrize("name", STEP_LAYERS)
def test_step_rejects_a_state_of_another_batch_or_dtype(name):
    """A state of another batch size used to broadcast (y of the state's batch), and one made
    before .double() to keep its old precision (or fail deep inside)."""
    factory, _ = LAYERS[name]
    layer = factory()
    if name == "DSS":
        layer = ssm.DSS(C, d_state=4, l_max=8)
    state = layer.init_state(2)
    layer.step(torch.randn(2, C), state)  # the right state works
    with pytest.raises(ValueError, match=r"has shape .*expected.*init_state"):
        layer.step(torch.randn(1, C), state)
    layer.double()
    with pytest.raises(ValueError, match=r"has dtype torch\.(complex64|float32), expected torch\.(complex128|float64)"):
        layer.step(torch.randn(2, C, dtype=torch.float64), state)
    layer.step(torch.randn(2, C, dtype=torch.float64), layer.init_state(2))


KERNEL_LAYERS = {
    "S4D": LAYERS["S4D"][0],
    "DSS": LAYERS["DSS"][0],
    "DSS-softmax": functools.partial(ssm.DSS, C, d_state=4, variant="softmax"),
    "S4PTD": LAYERS["S4PTD"][0],
    "CompanionSSM": LAYERS["CompanionSSM"][0],
    "ShiftSSM": LAYERS["ShiftSSM"][0],
    "ResidualSSM": LAYERS["ResidualSSM"][0],
}


@pytest.mark.parametrize("name", KERNEL_LAYERS)
@pytest.mark.parametrize("length", [-1, 2.5, True])
def test_kernel_rejects_a_bad_length(name, length):
    """kernel(L) takes a non-negative integer L, as the kernel ops do; the softmax DSS gave an
    empty kernel for a negative L, and the shift SSMs failed deep inside slicing (or took
    True as 1)."""
    layer = KERNEL_LAYERS[name]()
    with pytest.raises(ValueError, match="L must be a non-negative integer"):
        layer.kernel(length)
    assert layer.kernel(0).shape == (C, 0)
    assert layer.kernel(3.0).shape == (C, 3)  # an integral float is a length, as for the kernel ops


def test_closed_loop_steps_check_their_state():
    layer = ssm.ClosedLoopCompanionSSM(C, d_state=3)
    state = layer.init_state(2)
    with pytest.raises(ValueError, match="has shape"):
        layer.step(torch.randn(3, C), state)
    with pytest.raises(ValueError, match="has dtype"):
        layer.closed_loop_step(state.double())
    with pytest.raises(TypeError, match="must be a tensor"):
        layer.closed_loop_step(None)


@pytest.mark.parametrize("name", STEP_LAYERS)
@pytest.mark.parametrize("batch_size", [-1, 2.5, True, "2"])
def test_init_state_rejects_a_bad_batch_size(name, batch_size):
    layer = ssm.DSS(C, d_state=4, l_max=8) if name == "DSS" else LAYERS[name][0]()
    with pytest.raises(ValueError, match="init_state: batch_size must be a non-negative integer"):
        layer.init_state(batch_size)
    assert layer.init_state(0.0 if name == "S4D" else 0) is not None  # an integral float or 0 is fine


@pytest.mark.parametrize("name", ["S4D", "DSS", "S4PTD", "S5", "S5PTD"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_layer_computes_its_kernel_in_float32(name, dtype):
    """``.half()`` / ``.bfloat16()`` used to fail in complex half arithmetic; now the layer
    equals a float32 layer holding the same (rounded) parameters, forward and step."""
    from tolerances import assert_close

    torch.manual_seed(0)
    layer = (ssm.DSS(C, d_state=4, l_max=12) if name == "DSS" else LAYERS[name][0]()).to(dtype)
    wide = ssm.DSS(C, d_state=4, l_max=12) if name == "DSS" else LAYERS[name][0]()
    wide.load_state_dict(layer.state_dict())
    x = torch.randn(2, 12, C).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    assert_close(y, wide(x.float()), dtype=dtype)
    state, wide_state = layer.init_state(2), wide.init_state(2)
    for t in range(3):
        y_t, state = layer.step(x[:, t], state)
        expected, wide_state = wide.step(x[:, t].float(), wide_state)
        assert y_t.dtype == dtype
        assert_close(y_t, expected, dtype=dtype)
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.requires_grad)


@pytest.mark.parametrize("make", [
    lambda n, s: ssm.S4D(n, d_state=s), lambda n, s: ssm.DSS(n, d_state=s), lambda n, s: ssm.S4PTD(n, d_state=s),
    lambda n, s: ssm.S5(n, d_state=s, init="ptd", conj_sym=False),
])
@pytest.mark.parametrize("sizes", [(True, 8), (4, True), (4, 2.5), (0, 8)])
def test_sizes_must_be_positive_integers_not_bools(make, sizes):
    """S4D(True, 8) built a one-channel layer and S4PTD(2, True) a one-state one."""
    with pytest.raises(ValueError, match="must be a positive integer"):
        make(*sizes)


@pytest.mark.parametrize("name", LAYERS)
def test_a_layer_built_under_a_float64_default_is_float64(name):
    """torch.set_default_dtype(torch.float64): S5 and Chimera were left half float32 (their
    initializations are computed in a fixed precision) and their forward failed."""
    factory, rank = LAYERS[name]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        layer = factory()
    finally:
        torch.set_default_dtype(previous)
    tensors_ = list(layer.parameters()) + [b for b in layer.buffers() if b.is_floating_point()]
    assert {t.dtype for t in tensors_} == {torch.float64}
    x = torch.randn(2, 5, 3, C, dtype=torch.float64)[..., 0, :] if rank == 3 else torch.randn(2, 5, 3, C, dtype=torch.float64)
    y = layer(x)
    assert y.dtype == torch.float64 and y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", LAYERS)
def test_an_input_of_another_dtype_than_the_layer_is_refused_unless_autocast(name):
    """A float64 input to a float32 layer came back float64 but float32-accurate (and a
    float16 one was computed in float32): now a TypeError, as nn.Linear gives; under
    torch.autocast the layer takes what autocast hands it."""
    factory, rank = LAYERS[name]
    layer = factory()
    shape = (2, 5, C) if rank == 3 else (2, 3, 3, C)
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(TypeError, match=rf"is {dtype} but the layer's parameters are torch\.float32"):
            layer(torch.randn(shape, dtype=dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(shape, dtype=torch.bfloat16))
    assert y.shape == shape and torch.isfinite(y.float()).all()
    if name in STEP_LAYERS:
        if name == "DSS":
            layer = ssm.DSS(C, d_state=4, l_max=8)
        with pytest.raises(TypeError, match=r"x_t is torch\.float64 but the layer's parameters"):
            layer.step(torch.randn(2, C, dtype=torch.float64), layer.init_state(2))


@pytest.mark.parametrize("make, x", [
    (lambda: ssm.SequenceClassifier(C, 1, functools.partial(ssm.S4D, d_state=4), 3, d_input=2),
     torch.randn(2, 5, 2, dtype=torch.float64)),
    (lambda: ssm.ResidualBlock(C, ssm.S4D(C, d_state=4)), torch.randn(2, 5, C, dtype=torch.float64)),
    (lambda: ssm.models.ImageClassifier(C, 1, functools.partial(ssm.SS2D, d_state=2), 3, image_shape=(4, 4),
                                        d_input=1), torch.randn(2, 16, 1, dtype=torch.float64)),
    (lambda: ssm.models.MultivariateForecaster(C, 1, functools.partial(ssm.Chimera, d_state=2, period=2), lag=6,
                                               horizon=2, n_variates=3), torch.randn(2, 6, 3, dtype=torch.float64)),
    (lambda: ssm.SpaceTime(n_variates=2, lag=8, horizon=4), torch.randn(2, 8, 2, dtype=torch.float64)),
])
def test_models_refuse_an_input_of_another_dtype_with_a_clear_error(make, x):
    model = make()
    with pytest.raises(TypeError, match=r"is torch\.float64 but the layer's parameters are torch\.float32"):
        model(x)
    model.double()(x)  # the same input once the model is float64


def test_padded_forecaster_refuses_an_input_of_another_dtype_naming_itself():
    model = ssm.models.PaddedForecaster(functools.partial(ssm.S4D, d_state=4), lag=6, horizon=2, n_variates=3)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"^PaddedForecaster: x is torch\.float64 but the layer's parameters are torch\.float32"):
        model(x)
    model.double()(x)


def test_chimera_names_its_input_u_in_the_dtype_error():
    layer = ssm.Chimera(C, d_state=2, period=2)
    with pytest.raises(TypeError, match=r"^Chimera: u is torch\.float64 but the layer's parameters are torch\.float32"):
        layer(torch.randn(2, 5, 3, C, dtype=torch.float64))


def test_meta_tensors_of_another_dtype_get_the_same_clear_error():
    """torch.is_autocast_enabled("meta") raises; the check treats an unknown device type as
    autocast off instead of failing with that RuntimeError."""
    layer = ssm.S4D(C, d_state=4).to("meta")
    with pytest.raises(TypeError, match=r"x is torch\.float64 but the layer's parameters are torch\.float32"):
        layer(torch.empty(2, 5, C, dtype=torch.float64, device="meta"))
    assert layer(torch.empty(2, 5, C, device="meta")).shape == (2, 5, C)
