"""kernels.mamba_ssm_compat: mamba_ssm's in-place decoding step and its names."""

import pytest
import torch

import kernels
from kernels.mamba_ssm_compat import selective_scan_fn, selective_state_update

F64 = torch.float64


def step_inputs(Bsz=3, Dm=4, N=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(Bsz, Dm, generator=gen, dtype=F64), dt=torch.randn(Bsz, Dm, generator=gen, dtype=F64),
                A=-torch.rand(Dm, N, generator=gen, dtype=F64), B=torch.randn(Bsz, N, generator=gen, dtype=F64),
                C=torch.randn(Bsz, N, generator=gen, dtype=F64), D=torch.randn(Dm, generator=gen, dtype=F64),
                z=torch.randn(Bsz, Dm, generator=gen, dtype=F64), dt_bias=torch.rand(Dm, generator=gen, dtype=F64),
                dt_softplus=True)


def test_selective_scan_fn_is_the_op():
    assert selective_scan_fn is kernels.selective_scan


def test_state_is_updated_in_place_and_the_output_returned():
    args = step_inputs()
    state = torch.randn(3, 4, 5, dtype=F64)
    expected_y, expected_state = kernels.selective_state_update(state, **args)
    buffer = state.data_ptr()
    y = selective_state_update(state, **args)
    torch.testing.assert_close(y, expected_y, rtol=0, atol=0)
    torch.testing.assert_close(state, expected_state, rtol=0, atol=0)
    assert state.data_ptr() == buffer


def test_state_batch_indices_read_and_write_only_their_slots():
    args = step_inputs()
    cache = torch.randn(6, 4, 5, dtype=F64)
    before = cache.clone()
    slots = torch.tensor([4, 0, 2], dtype=torch.int32)
    expected_y, expected_rows = kernels.selective_state_update(before[slots.long()], **args)
    y = selective_state_update(cache, **args, state_batch_indices=slots)
    torch.testing.assert_close(y, expected_y, rtol=0, atol=0)
    torch.testing.assert_close(cache[slots.long()], expected_rows, rtol=0, atol=0)
    untouched = torch.tensor([1, 3, 5])
    torch.testing.assert_close(cache[untouched], before[untouched], rtol=0, atol=0)


@pytest.mark.parametrize(
    "slots, error, match",
    [(torch.tensor([0, 1]), ValueError, r"\(B,\) = \(3,\)"), (torch.tensor([0.0, 1.0, 2.0]), ValueError, "integer"),
     (torch.tensor([0, 6, 1]), IndexError, r"\[0, 6\)"), (torch.tensor([0, -1, 2]), IndexError, r"\[0, 6\)"),
     (torch.tensor([1, 1, 2]), ValueError, "distinct")],
    ids=["length", "float", "out-of-range", "negative", "repeated"],
)
def test_bad_state_batch_indices_are_refused(slots, error, match):
    cache = torch.zeros(6, 4, 5, dtype=F64)
    with pytest.raises(error, match=match):
        selective_state_update(cache, **step_inputs(), state_batch_indices=slots)
    assert cache.abs().max() == 0


@pytest.mark.parametrize("with_slots", [False, True], ids=["state", "cache-slots"])
def test_the_step_records_no_autograd_graph(with_slots):
    """Parameters that require grad (a model decoding outside torch.no_grad) leave the output
    and the updated state out of autograd, as in mamba_ssm: the state is not made to require
    grad and does not carry the graph of every step before it."""
    args = step_inputs()
    for name in ("A", "D", "dt_bias"):
        args[name].requires_grad_(True)
    state = torch.randn(6 if with_slots else 3, 4, 5, dtype=F64)
    slots = {"state_batch_indices": torch.tensor([4, 0, 2])} if with_slots else {}
    y = selective_state_update(state, **args, **slots)
    assert not y.requires_grad
    assert not state.requires_grad and state.grad_fn is None


def test_dt_softplus_is_off_by_default():
    """mamba_ssm's default: Δ = dt + dt_bias unless dt_softplus=True. Checked against the step
    written out with the raw (positive) step size."""
    args = step_inputs()
    del args["dt_softplus"]
    args["dt"] = args["dt"].abs()
    state = torch.randn(3, 4, 5, dtype=F64)
    delta = (args["dt"] + args["dt_bias"])[:, :, None]
    h = torch.exp(delta * args["A"]) * state + delta * args["x"][:, :, None] * args["B"][:, None]
    y_hand = ((h * args["C"][:, None]).sum(-1) + args["D"] * args["x"]) * torch.nn.functional.silu(args["z"])
    y = selective_state_update(state, **args)
    torch.testing.assert_close(y, y_hand)
    torch.testing.assert_close(state, h)
