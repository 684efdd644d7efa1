"""ssm.prefill: a prompt in one parallel pass, then step; against forward over the whole
sequence and against the state that step reaches over the prompt (float64)."""

import functools

import pytest
import torch

import ssm
from ssm.prefill import prefill, prefill_by_steps

F64 = torch.float64
H = 6
LAYERS = {
    "s4d": functools.partial(ssm.S4D, d_state=8),
    "s4d-bilinear": functools.partial(ssm.S4D, d_state=8, disc="bilinear", init="legs"),
    "s4ptd": functools.partial(ssm.S4PTD, d_state=7),
    "dss-exp": functools.partial(ssm.DSS, d_state=8),
    "dss-softmax": functools.partial(ssm.DSS, d_state=8, variant="softmax", l_max=64),
    "s5": functools.partial(ssm.S5, d_state=8),
    "companion": functools.partial(ssm.CompanionSSM, d_state=8),
    "mamba": functools.partial(ssm.Mamba, d_state=4, d_conv=4),
}


def flat_state(state):
    """The tensors of a state (a tensor, a named tuple of tensors or a list of those)."""
    if torch.is_tensor(state):
        return [state]
    return [t for s in state if s is not None and not isinstance(s, int) for t in flat_state(s)]


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("L", [0, 1, 3, 37])
def test_prefill_then_step_is_forward_over_the_whole_sequence(name, L):
    torch.manual_seed(60)
    layer = LAYERS[name](H).to(F64).eval()
    x = torch.randn(2, L + 5, H, dtype=F64)
    with torch.no_grad():
        y, state = prefill(layer, x[:, :L])
        torch.testing.assert_close(y, layer(x[:, :L]), rtol=1e-10, atol=1e-12)
        _, stepped = prefill_by_steps(layer, x[:, :L])
        for got, expected in zip(flat_state(state), flat_state(stepped), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        outputs = [y]
        for t in range(L, L + 5):
            y_t, state = layer.step(x[:, t], state)
            outputs.append(y_t[:, None])
        torch.testing.assert_close(torch.cat(outputs, 1), layer(x), rtol=1e-10, atol=1e-12)


def test_diagonal_prefill_sums_the_state_in_chunks():
    """Chunks of 4 over 37 steps (a partial last chunk) give the stepped state."""
    torch.manual_seed(61)
    layer = ssm.S4D(H, d_state=8).to(F64).eval()
    x = torch.randn(3, 37, H, dtype=F64)
    with torch.no_grad():
        _, state = layer.prefill(x, chunk=4)
        _, stepped = prefill_by_steps(layer, x)
    torch.testing.assert_close(state, stepped, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", ["s4d", "mamba", "dss-softmax"])
@pytest.mark.parametrize("norm, prenorm", [("layer", True), ("batch", False)])
def test_backbone_prefill_then_step_is_forward(layer, norm, prenorm):
    torch.manual_seed(62)
    output = "none" if layer == "mamba" else "glu"
    model = ssm.SequenceBackbone(H, 2, LAYERS[layer], norm=norm, prenorm=prenorm, output=output).to(F64)
    if norm == "batch":
        model(2 + 3 * torch.randn(4, 8, H, dtype=F64))  # running statistics away from (0, 1)
    model.eval()
    x = torch.randn(2, 12, H, dtype=F64)
    with torch.no_grad():
        y, state = model.prefill(x[:, :9])
        outputs = [y]
        for t in range(9, 12):
            y_t, state = model.step(x[:, t], state)
            outputs.append(y_t[:, None])
        torch.testing.assert_close(torch.cat(outputs, 1), model(x), rtol=1e-10, atol=1e-12)


def test_prefill_is_differentiable_through_the_state():
    torch.manual_seed(63)
    layer = ssm.Mamba(H, d_state=4).to(F64)
    x = torch.randn(2, 7, H, dtype=F64, requires_grad=True)
    _, state = layer.prefill(x)
    _, stepped = prefill_by_steps(layer, x)
    weights = [torch.randn_like(t) for t in flat_state(state)]
    grad = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, flat_state(state))), x)[0]
    expected = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, flat_state(stepped))), x)[0]
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_prefill_refuses_layers_without_a_step_and_bad_input():
    with pytest.raises(RuntimeError, match="bidirectional"):
        ssm.S4D(H, bidirectional=True).prefill(torch.randn(1, 3, H))
    with pytest.raises(RuntimeError, match="bidirectional"):
        ssm.S5(H, d_state=4, bidirectional=True).prefill(torch.randn(1, 3, H))
    with pytest.raises(RuntimeError, match="reorder_tokens"):
        ssm.Mamba(H, reorder_tokens=True).prefill(torch.randn(1, 3, H))
    with pytest.raises(ValueError, match=r"\(batch, length, channels\)"):
        prefill_by_steps(ssm.S5(H, d_state=4), torch.randn(3, H))
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, length, 6\)"):
        ssm.SequenceBackbone(H, 1, LAYERS["s4d"]).prefill(torch.randn(1, 3, H + 1))


def test_dss_softmax_prefill_of_an_empty_prompt_leaves_the_length_to_init_state():
    """An empty prompt gives no length: the state takes init_state's rule (here: none, so
    step asks for one) instead of normalizing every later step over a single step."""
    layer = ssm.DSS(H, d_state=8, variant="softmax").eval()
    _, state = layer.prefill(torch.randn(2, 0, H))
    assert state.length is None
    with pytest.raises(RuntimeError, match="normalized over its length"):
        layer.step(torch.randn(2, H), state)
    layer(torch.randn(1, 9, H))  # after a forward of 9 steps, init_state's rule gives 9
    assert layer.prefill(torch.randn(2, 0, H))[1].length == 9


def test_diagonal_prefill_chunk_must_be_positive():
    for chunk in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk must be a positive integer"):
            ssm.S4D(H, d_state=4).prefill(torch.randn(1, 3, H), chunk=chunk)


def test_prefill_refuses_a_batch_norm_in_training_mode_and_leaves_its_statistics():
    model = ssm.SequenceBackbone(H, 1, LAYERS["s4d"], norm="batch", prenorm=False)
    before = model.blocks[0].norm.bn.running_mean.clone()
    with pytest.raises(RuntimeError, match=r"prefill\(\) with a batch norm needs its running statistics"):
        model.prefill(torch.randn(2, 5, H))
    assert torch.equal(model.blocks[0].norm.bn.running_mean, before)
    pre = ssm.SequenceBackbone(H, 1, LAYERS["s4d"], norm="batch", prenorm=True)  # its final norm
    pre.blocks[0].eval()
    with pytest.raises(RuntimeError, match="running statistics"):
        pre.prefill(torch.randn(2, 5, H))


def test_dss_softmax_prefill_without_l_max_normalizes_over_the_prompts_length():
    """Without l_max, prefill normalizes the kernel over the prompt's own length, as forward
    does, not over the length of an earlier forward."""
    torch.manual_seed(64)
    layer = ssm.DSS(H, d_state=8, variant="softmax").to(F64).eval()
    x = torch.randn(2, 9, H, dtype=F64)
    with torch.no_grad():
        layer(torch.randn(2, 4, H, dtype=F64))  # a forward at another length first
        y, state = layer.prefill(x)
        torch.testing.assert_close(y, layer(x), rtol=1e-10, atol=1e-12)
    assert state.length == 9


def test_prefill_with_a_state_length_steps_from_that_init_state():
    """prefill(layer, x, length=...) passes the length to init_state and steps, even for a
    layer with its own prefill: DSS softmax then normalizes over that length, not x's."""
    torch.manual_seed(65)
    layer = ssm.DSS(H, d_state=8, variant="softmax").to(F64).eval()
    x = torch.randn(2, 9, H, dtype=F64)
    with torch.no_grad():
        y, state = prefill(layer, x, length=20)
        expected_state = layer.init_state(2, length=20)
        outputs = []
        for t in range(9):
            y_t, expected_state = layer.step(x[:, t], expected_state)
            outputs.append(y_t)
        torch.testing.assert_close(y, torch.stack(outputs, 1), rtol=1e-10, atol=1e-12)
        assert not torch.allclose(y, layer(x))  # forward normalizes over 9 steps
    assert state.length == 20
    for got, expected in zip(flat_state(state), flat_state(expected_state), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_mamba_prefill_under_autocast_returns_the_input_dtype_as_forward_does():
    """Under bfloat16 autocast a float32 prompt gives float32 outputs, like forward's."""
    torch.manual_seed(66)
    layer = ssm.Mamba(H, d_state=4).eval()
    u = torch.randn(2, 5, H)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer.prefill(u)
        expected = layer(u)
    assert y.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(y, expected)
