"""One check that compiled code gives eager mode's numbers: a function's output and its
gradients under a fixed output weighting (:func:`outputs_and_gradients`), eager and compiled;
used for the Triton paths that run as ``torch.library`` ops and by ``tests/test_compile.py``."""

from __future__ import annotations

import torch


def outputs_and_gradients(fn, inputs, parameters=(), allow_unused: bool = False) -> list:
    """[fn(*inputs), then the gradient of Re Σ fn(*inputs) · w for each input, then for each
    of ``parameters``]: w a fixed random weight of the output's shape (the same values at any
    dtype); None for inputs that are not floating-point or complex tensors (None, an int
    length), passed as they are, and with ``allow_unused`` for what the output does not use."""
    differentiable = [torch.is_tensor(t) and (t.is_floating_point() or t.is_complex()) for t in inputs]
    leaves = [t.detach().clone().requires_grad_() if d else t for t, d in zip(inputs, differentiable)]
    out = fn(*leaves)
    wide = torch.complex128 if out.is_complex() else torch.float64  # the same weight at any precision
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=wide).to(out.device, out.dtype)
    wanted = [t for t, d in zip(leaves, differentiable) if d] + list(parameters)
    grads = iter(torch.autograd.grad((out * weight).real.sum(), wanted, allow_unused=allow_unused))
    return [out.detach()] + [next(grads) if d else None for d in differentiable] + list(grads)


def assert_compiled_like_eager(fn, *input_sets) -> None:
    """``fn`` compiled whole (``fullgraph=True``, backend ``aot_eager``) gives eager mode's
    outputs and input gradients, equal to float rounding (the same launches), for each input
    set in turn: a second length is traced again with the length symbolic."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    try:
        for inputs in input_sets:
            want = outputs_and_gradients(fn, inputs)
            got = outputs_and_gradients(compiled, inputs)
            for name, a, b in zip(["output"] + [f"grad {i}" for i in range(len(inputs))], got, want):
                torch.testing.assert_close(a, b, msg=lambda message: f"{name}: {message}")
    finally:
        torch._dynamo.reset()
