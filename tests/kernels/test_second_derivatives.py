"""Second derivatives: the hand-written backward passes are first-order, so a second
derivative through them must raise, never come out without the op's terms, and the
"reference" backend (plain autograd) gives exact ones.

``once_differentiable`` alone did not raise under ``torch.autograd.grad`` with respect to the
inputs (its error node hangs off detached copies): Hessian-vector products through
linear_scan, selective_scan and selective_scan_2d silently dropped the op's terms.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from devices import backend_device
from torch.autograd import gradgradcheck

import kernels

F64 = torch.float64


def _t(*shape, kind="normal", dtype=F64):
    g = _t.gen
    x = torch.randn(*shape, generator=g, dtype=dtype) if kind == "normal" else torch.rand(*shape, generator=g, dtype=dtype)
    return -x if kind == "negative" else x


def cases(dtype):
    """name -> (op(backend, *inputs), inputs): tiny, well-conditioned, every input differentiable."""
    _t.gen = torch.Generator().manual_seed(0)
    t = lambda *s, kind="normal": _t(*s, kind=kind, dtype=dtype)  # noqa: E731
    return {
        "linear_scan": (lambda b, a, x, h0: kernels.linear_scan(a, x, h0=h0, backend=b),
                        [t(1, 20, 2, kind="uniform"), t(1, 20, 2), t(1, 2)]),
        "selective_scan": (lambda b, u, dt, A, B, C: kernels.selective_scan(u, dt, A, B, C, delta_softplus=True, backend=b),
                           [t(1, 2, 20), t(1, 2, 20), t(2, 3, kind="negative"), t(1, 3, 20), t(1, 3, 20)]),
        "selective_scan_2d": (lambda b, u, dt, A, B, C: kernels.selective_scan_2d(u, dt, A, B, C, delta_softplus=True, backend=b),
                              [t(1, 2, 3, 4), t(1, 2, 3, 4), t(2, 3, kind="negative"), t(1, 3, 3, 4), t(1, 3, 3, 4)]),
        "vandermonde": (lambda b, v, xr, xi: kernels.vandermonde(torch.view_as_complex(v), torch.complex(xr, xi), 6, backend=b),
                        [t(2, 3, 2), t(2, 3, kind="negative"), t(2, 3)]),
        "companion_kernel": (lambda b, a, bb, c: kernels.companion_kernel(a, bb, c, 9, backend=b),
                             [0.3 * t(2, 4), t(2, 4), t(2, 4)]),
        "fftconv": (lambda b, u, k: kernels.fftconv(u, k, backend=b), [t(1, 2, 7), t(2, 7)]),
    }


FIRST_ORDER = {  # (op, backend) pairs whose backward is hand-written
    ("linear_scan", "torch"), ("selective_scan", "torch"), ("selective_scan_2d", "torch"),
    ("linear_scan", "triton"), ("selective_scan", "triton"), ("selective_scan_2d", "triton"),
    ("vandermonde", "triton"), ("companion_kernel", "triton"), ("fftconv", "triton"),
}


def has_triton(name):
    return "triton" in importlib.import_module(f"kernels.{name}")._IMPLEMENTATIONS


def second_derivative(op, backend, inputs, loss="square"):
    """d/d inputs of <grad of the loss w.r.t. inputs, w> for a fixed w: a Hessian-vector product.
    ``loss="linear"``: sum(out * c), whose incoming gradient c carries no graph, so only the
    op's saved inputs tie its gradients to the second derivative."""
    device = backend_device(backend)
    leaves = [x.detach().to(device).clone().requires_grad_(True) for x in inputs]
    out = op(backend, *leaves)
    value = out.square().sum() if loss == "square" else (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype,
                                                                                 device=out.device).view_as(out)).sum()
    grads = torch.autograd.grad(value, leaves, create_graph=True)
    w = [torch.linspace(-1, 1, g.numel(), dtype=g.dtype, device=g.device).view_as(g) for g in grads]
    return torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, w)), leaves, allow_unused=True)


@pytest.mark.parametrize("loss", ["square", "linear"])
@pytest.mark.parametrize("name, backend", sorted(FIRST_ORDER))
def test_second_derivative_through_a_first_order_backward_raises(name, backend, loss):
    if backend == "triton" and not has_triton(name):
        pytest.skip("triton is not installed")
    dtype = torch.float32 if backend == "triton" else F64  # float32: the Triton fftconv's own path
    op, inputs = cases(dtype)[name]
    with pytest.raises(RuntimeError, match=rf"{name} \({backend}\): second derivatives .* backend='reference'"):
        second_derivative(op, backend, inputs, loss)


def test_gradients_kept_for_a_later_second_derivative_can_be_modified_in_place():
    """create_graph=True without a second derivative: the gradients are ordinary tensors."""
    op, inputs = cases(F64)["linear_scan"]
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    grads = torch.autograd.grad(op("torch", *leaves).square().sum(), leaves, create_graph=True)
    grads[0].add_(1.0)


@pytest.mark.parametrize("name, backend", sorted(FIRST_ORDER))
def test_create_graph_alone_keeps_first_derivatives_exact(name, backend):
    """create_graph=True with no second derivative taken (e.g. a graph kept for later use):
    the gradients are the ordinary ones and nothing raises."""
    if backend == "triton" and not has_triton(name):
        pytest.skip("triton is not installed")
    dtype = torch.float32 if backend == "triton" else F64
    op, inputs = cases(dtype)[name]
    leaves = [x.detach().to(backend_device(backend)).clone().requires_grad_(True) for x in inputs]
    plain = torch.autograd.grad(op(backend, *leaves).square().sum(), leaves)
    kept = torch.autograd.grad(op(backend, *leaves).square().sum(), leaves, create_graph=True)
    for a, b in zip(kept, plain):
        torch.testing.assert_close(a.detach(), b)


@pytest.mark.parametrize("name", sorted(cases(F64)))
def test_reference_backend_gives_exact_second_derivatives(name):
    op, inputs = cases(F64)[name]
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    assert gradgradcheck(lambda *xs: op("reference", *xs), leaves)


def test_a_layer_hessian_vector_product_raises_on_the_fast_path_and_is_exact_on_the_reference():
    import ssm

    torch.manual_seed(0)
    layer = ssm.S5(3, 4).double()
    x = torch.randn(2, 6, 3, dtype=F64, requires_grad=True)

    def hvp():
        g = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)[0]
        return torch.autograd.grad((g * torch.linspace(-1, 1, g.numel(), dtype=F64).view_as(g)).sum(), x)[0]

    with pytest.raises(RuntimeError, match="second derivatives"):
        hvp()
    with kernels.use_backend("reference"):
        exact = hvp()
        v = torch.linspace(-1, 1, x.numel(), dtype=F64).view_as(x)
        eps = 1e-6
        f = lambda z: torch.autograd.grad(layer(z).square().sum(), z)[0]  # noqa: E731
        x1, x2 = (x + eps * v).detach().requires_grad_(), (x - eps * v).detach().requires_grad_()
        finite = ((f(x1) - f(x2)) / (2 * eps) * torch.linspace(-1, 1, x.numel(), dtype=F64).view_as(x)).sum()
    # the HVP is symmetric: <H w, v> from the exact HVP equals the finite difference of <grad, w> along v
    torch.testing.assert_close((exact * v).sum(), finite, rtol=1e-6, atol=1e-8)
