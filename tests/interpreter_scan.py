"""A faster ``tl.associative_scan`` for the Triton interpreter, for the scan kernels' tests.

The interpreter's scan calls the combine function once per element; ``fast_scan`` replaces
that loop by one call per position along the scanned axis on whole slices (the same
arithmetic in the same order), which turns seconds per test into a fraction of a second.
"""

import importlib

import numpy as np


def _slice_scan(stock):
    """ScanOps.generic_scan of the interpreter with one combine call per step along the axis
    (``stock`` for 1D inputs)."""

    def scan(self, input):
        data = [arg.handle.data for arg in input]
        if data[0].ndim < 2:
            return stock(self, input)
        outs = [np.empty_like(d) for d in data]

        def at(x, i):
            return x[(slice(None),) * self.axis + (i,)]

        for o, d in zip(outs, data):
            at(o, 0)[...] = at(d, 0)
        for i in range(1, data[0].shape[self.axis]):
            acc = [self.to_tensor(at(o, i - 1), arg.dtype) for o, arg in zip(outs, input)]
            cur = [self.to_tensor(at(d, i), arg.dtype) for d, arg in zip(data, input)]
            ret = self.combine_fn.fn(*acc, *cur)
            for o, r in zip(outs, ret if isinstance(ret, tuple) else (ret,)):
                at(o, i)[...] = r.handle.data
        return [self.to_tensor(o, arg.dtype) for o, arg in zip(outs, input)]

    return scan


def fast_scan(monkeypatch) -> None:
    """Patch the interpreter's scan for the current test. Where a Triton release lacks these
    interpreter internals, the stock scan runs (slower)."""
    scan_ops = getattr(importlib.import_module("triton.runtime.interpreter"), "ScanOps", None)
    if scan_ops is not None and hasattr(scan_ops, "generic_scan"):
        monkeypatch.setattr(scan_ops, "generic_scan", _slice_scan(scan_ops.generic_scan))
