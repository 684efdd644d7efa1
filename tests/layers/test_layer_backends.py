"""S4D, DSS, S4-PTD, S5 and Mamba give the same numbers, forward and backward, on every kernel backend.

The torch path runs on CPU; on the Triton backend the layer and its input are moved to
``TRITON_DEVICE`` (the GPU when there is one, the interpreter on CPU otherwise)."""

import pytest
import torch
from devices import backend_device
from tolerances import assert_close

import kernels
import ssm


def run(layer, x, backend):
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    with kernels.use_backend(backend):
        y = layer(x)
        (y * torch.linspace(-1, 1, y.shape[1], device=y.device)[None, :, None]).sum().backward()
    grads = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("make", [
    lambda: ssm.S4D(3, 8, init="legs", bidirectional=True),
    lambda: ssm.S4D(3, 6, init="lin", disc="bilinear"),
    lambda: ssm.DSS(3, 8, variant="softmax"),
    lambda: ssm.S4PTD(3, 5, bidirectional=True),
    lambda: ssm.S5(3, 8, blocks=2, bidirectional=True),
    lambda: ssm.S5PTD(3, 6, disc="bilinear"),
    lambda: ssm.Mamba(3, 4, bidirectional=True),
])
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_layer_matches_the_pytorch_path_on_other_backends(make, backend):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, 37, 3)
    expected = run(layer, x, "torch")
    device = backend_device(backend)
    actual = run(layer.to(device), x.to(device), backend)
    assert_close(actual[0], expected[0], dtype=torch.float32)
    assert_close(actual[1], expected[1], dtype=torch.float32)
    assert len(actual[2]) == len(expected[2]) > 0
    for a, e in zip(actual[2], expected[2]):
        assert_close(a, e, dtype=torch.float32)


def test_use_backend_is_scoped_and_explicit_backend_wins():
    v = torch.randn(2, 3, dtype=torch.complex64)
    x = torch.complex(-torch.rand(2, 3), torch.randn(2, 3))
    with kernels.use_backend("reference"):
        assert kernels.select_backend("op", {"torch": len, "reference": abs}, None, v) is abs
        assert kernels.select_backend("op", {"torch": len, "reference": abs}, "torch", v) is len
    assert kernels.select_backend("op", {"torch": len, "reference": abs}, None, v) is len
    with pytest.raises(ValueError, match="unknown backend"):
        with kernels.use_backend("cuda"):
            pass
    assert kernels.vandermonde(v, x, 4).shape == (2, 4)
