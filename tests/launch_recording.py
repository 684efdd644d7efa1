"""Record the launches of a Triton kernel in a test, still running each one."""

from __future__ import annotations


def record_launches(monkeypatch, module, name: str) -> list[tuple]:
    """Patch ``module.name`` (a ``@triton.jit`` kernel launched as ``kernel[grid](*args)``) so
    that every launch runs as before and appends its positional arguments to the returned
    list."""
    launches: list[tuple] = []
    kernel = getattr(module, name)

    class Recording:
        def __getitem__(self, grid):
            launch = kernel[grid]

            def run(*args, **kwargs):
                launches.append(args)
                return launch(*args, **kwargs)

            return run

    monkeypatch.setattr(module, name, Recording())
    return launches
