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
