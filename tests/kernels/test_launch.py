"""What every Triton launcher must do, checked op by op on tiny shapes (the interpreter on CPU):

- launch under the tensors' device (``kernels._launch.device_guard``), forward and backward:
  Triton launches on the current device, so a model on cuda:1 would otherwise run its kernels
  on cuda:0's stream or fault;
- let a NaN through: a non-finite Δ must give NaN outputs where the reference gives them (the
  softplus' clamp at 20 once returned 20 for NaN, and a diverged model showed finite losses).
"""

from __future__ import annotations

import contextlib
import importlib
import os

import pytest
import torch
from devices import TRITON_DEVICE

import kernels
from kernels import _launch

HAS_TRITON = "triton" in importlib.import_module("kernels.fftconv")._IMPLEMENTATIONS
pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def _rand(*shape, kind="normal"):
    g = _rand.gen
    return torch.randn(*shape, generator=g) if kind == "normal" else torch.rand(*shape, generator=g)


def _inputs(name):
    """(op(backend, *inputs), inputs, index of Δ among the inputs or None) for a tiny case."""
    _rand.gen = torch.Generator().manual_seed(0)
    r = _rand
    if name == "selective_scan":
        inputs = [r(1, 3, 9), r(1, 3, 9), -r(3, 2, kind="uniform"), r(1, 2, 9), r(1, 2, 9), r(3), r(1, 3, 9)]
        return (lambda b, u, dt, A, B, C, D, z: kernels.selective_scan(
            u, dt, A, B, C, D=D, z=z, delta_softplus=True, backend=b)), inputs, 1
    if name == "selective_scan_2d":
        inputs = [r(1, 2, 3, 4), r(1, 2, 3, 4), -r(2, 3, kind="uniform"), r(1, 3, 3, 4), r(1, 3, 3, 4)]
        return (lambda b, u, dt, A, B, C: kernels.selective_scan_2d(
            u, dt, A, B, C, delta_softplus=True, backend=b)), inputs, 1
    if name == "selective_state_update":
        inputs = [r(2, 3, 4), r(2, 3), r(2, 3), -r(3, 4, kind="uniform"), r(2, 4), r(2, 4)]
        return (lambda b, state, x, dt, A, B, C: kernels.selective_state_update(
            state, x, dt, A, B, C, dt_softplus=True, backend=b)[0]), inputs, 2
    if name == "vandermonde":
        inputs = [r(2, 3, 2), torch.stack([-r(2, 3, kind="uniform"), r(2, 3)], -1)]
        return (lambda b, v, x: kernels.vandermonde(
            torch.view_as_complex(v), torch.view_as_complex(x), 7, backend=b)), inputs, None
    if name == "fftconv":
        return (lambda b, u, k: kernels.fftconv(u, k, backend=b)), [r(2, 3, 10), r(3, 10)], None
    if name == "linear_scan":
        return (lambda b, a, x: kernels.linear_scan(a, x, backend=b)), [r(2, 9, 3, kind="uniform"), r(2, 9, 3)], None
    if name == "companion_kernel":
        return (lambda b, a, bb, c: kernels.companion_kernel(a, bb, c, 9, backend=b)), \
            [0.3 * r(2, 4), r(2, 4), r(2, 4)], None
    if name == "cross_scan":
        return (lambda b, x: kernels.cross_scan(x, backend=b)), [r(1, 2, 3, 4)], None
    if name == "cross_merge":
        return (lambda b, y: kernels.cross_merge(y, 3, 4, backend=b)), [r(1, 4, 2, 12)], None
    raise KeyError(name)


OPS = ["companion_kernel", "cross_merge", "cross_scan", "fftconv", "linear_scan", "selective_scan",
       "selective_scan_2d", "selective_state_update", "vandermonde"]
FORWARD_ONLY = {"selective_state_update"}  # a decoding op: its Triton kernel has no backward


@pytest.mark.parametrize("name", OPS)
def test_every_launch_runs_under_the_tensors_device(name, monkeypatch):
    entered = []  # devices the guard was entered with
    depth = []  # non-empty while inside a guard
    launches = []  # for each kernel launch: whether it ran inside a guard

    @contextlib.contextmanager
    def recording_guard(t):
        entered.append(t.device)
        depth.append(None)
        try:
            yield
        finally:
            depth.pop()

    monkeypatch.setattr(_launch, "device_guard", recording_guard)
    if os.environ.get("TRITON_INTERPRET") == "1":
        from triton.runtime.interpreter import InterpretedFunction

        run = InterpretedFunction.run

        def recording_run(self, *args, **kwargs):
            launches.append(bool(depth))
            return run(self, *args, **kwargs)

        monkeypatch.setattr(InterpretedFunction, "run", recording_run)

    op, inputs, _ = _inputs(name)
    inputs = [t.to(TRITON_DEVICE).requires_grad_(name not in FORWARD_ONLY) for t in inputs]
    out = op("triton", *inputs)
    n_forward = len(entered)
    assert n_forward >= 1, "the forward launched outside device_guard"
    if name not in FORWARD_ONLY:
        out.abs().sum().backward()
        assert len(entered) > n_forward, "the backward launched outside device_guard"
    assert set(entered) == {inputs[0].device}
    if launches or os.environ.get("TRITON_INTERPRET") == "1":
        assert launches and all(launches), f"{launches.count(False)} of {len(launches)} launches outside the guard"


@pytest.mark.parametrize("name", ["selective_scan", "selective_scan_2d", "selective_state_update"])
def test_nan_delta_gives_nan_outputs_where_the_reference_does(name):
    op, inputs, i = _inputs(name)
    inputs = [t.to(TRITON_DEVICE) for t in inputs]
    inputs[i].view(-1)[1] = float("nan")
    want = torch.isnan(op("reference", *inputs))
    assert want.any() and not want.all()
    for backend in ("torch", "triton"):
        got = torch.isnan(op(backend, *inputs))
        assert torch.equal(got, want), f"{backend}: NaN at {got.nonzero().tolist()}, reference at {want.nonzero().tolist()}"


def test_flat_grid_puts_every_program_on_dimension_0():
    # CUDA caps grid dimensions 1 and 2 at 65535: the launchers give the batch none of its own
    assert _launch.flat_grid(70000, 3) == (210000,)
    assert _launch.flat_grid(2**31 - 1) == (2**31 - 1,)
    with pytest.raises(ValueError, match="at most 2147483647"):
        _launch.flat_grid(2**16, 2**15)
