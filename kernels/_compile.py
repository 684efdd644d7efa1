"""Helpers that keep the package's Python-side caches out of ``torch.compile``'s way."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)


def cached_outside_compile(maxsize: int | None = None) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)`` in eager mode; under ``torch.compile`` the function is
    traced uncached. TorchDynamo cannot guard on an LRU cache (it warns and traces through it
    anyway), so the cache is bypassed while tracing, where the result becomes a constant of
    the graph, guarded by the arguments it was traced with."""

    def decorate(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            if torch.compiler.is_compiling():
                return fn(*args)
            return cached(*args)

        return call  # type: ignore[return-value]

    return decorate


# Opaque ops. The fast PyTorch paths are autograd.Functions whose loops write into buffers
# (``out=`` slices) and branch on data, the Triton paths launch kernels, and the companion
# kernel picks its formula per row from the values; TorchDynamo cannot trace them, so under
# ``torch.compile`` each would break the graph (and stop ``fullgraph=True`` and
# ``torch.export``). While compiling, each runs instead as a pair of ``torch.library``
# custom ops (forward; backward), which the compiler treats as single calls with known
# output shapes. The ops run the path's own forward and backward code; these helpers
# carry the backward's context and its optional gradients across the op boundary, where a
# tensor list cannot hold None.
#
# Inside an op, use ``conj_physical`` rather than the lazy ``conj``: in torch 2.13 the first
# run of a compiled graph calls a custom op with the Conjugate dispatch key excluded, so a
# conjugate view is read as the tensor itself there.


class FunctionContext:
    """The ``ctx`` of an ``autograd.Function``, rebuilt inside a custom op: what ``forward``
    writes (``save_for_backward``, attributes) and what ``backward`` reads
    (``saved_tensors``, ``needs_input_grad``, the attributes)."""

    def __init__(self, saved: tuple = (), attributes: dict | None = None, needs_input_grad: tuple[bool, ...] = ()):
        self.saved_tensors = saved
        self.needs_input_grad = needs_input_grad
        for name, value in (attributes or {}).items():
            setattr(self, name, value)

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors

    def set_materialize_grads(self, value: bool) -> None:
        """The op's backward receives the gradients as they come (None where absent)."""


def placeholder(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """t, or where t is None an empty tensor of ``like``'s dtype and device: a custom op's
    outputs cannot be None."""
    return like.new_empty(0) if t is None else t


def dense(t: torch.Tensor) -> torch.Tensor:
    """t as a contiguous tensor at the start of its storage: the layout every op's fake
    outputs promise (a view into a larger buffer is copied)."""
    return t.contiguous() if t.storage_offset() == 0 else t.clone(memory_format=torch.contiguous_format)


def placeholders(grads, needed, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A backward op's outputs: the needed gradients (:func:`dense`), and an empty tensor of
    ``like``'s dtype where a gradient is not needed (:func:`wanted` turns those back into
    None)."""
    return tuple(dense(g) if need and g is not None else like.new_empty(0) for g, need in zip(grads, needed))


def fake_gradients(inputs, needed, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The fake-tensor outputs of a backward op: each needed input's shape and dtype, and
    :func:`placeholders`' empty tensor elsewhere."""
    return tuple(x.new_empty(x.shape) if need else like.new_empty(0) for x, need in zip(inputs, needed))


def wanted(grads, needed) -> tuple[torch.Tensor | None, ...]:
    """The backward op's gradients with the unneeded placeholders back to None."""
    return tuple(g if need else None for g, need in zip(grads, needed))


def vjp_gradients(fn: Callable, inputs, grad: torch.Tensor, needs, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A backward op's outputs for a forward op that runs ``fn(*inputs)`` (a function whose
    values choose its algorithm, so TorchDynamo cannot trace it): the vector-Jacobian product
    of ``fn`` at ``inputs`` with ``grad``, by ``torch.func.vjp`` (autograd does not record
    inside a custom op), then :func:`placeholders`. ``fn`` runs again here: the op saves its
    inputs only."""
    _, pullback = torch.func.vjp(fn, *inputs)
    return placeholders(pullback(grad), needs, like)
