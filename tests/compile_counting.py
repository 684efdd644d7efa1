"""A ``torch.compile`` backend for tests that need to know what was compiled."""

from __future__ import annotations

import torch


class CountingBackend:
    """``aot_eager`` that records the op count of every graph it is handed: ``sizes`` (one
    entry per graph), ``graphs`` and ``ops`` (their number and total)."""

    def __init__(self):
        self.sizes: list[int] = []
        self.inner = torch._dynamo.lookup_backend("aot_eager")

    @property
    def graphs(self) -> int:
        return len(self.sizes)

    @property
    def ops(self) -> int:
        return sum(self.sizes)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.sizes.append(sum(node.op in ("call_function", "call_method", "call_module") for node in gm.graph.nodes))
        return self.inner(gm, example_inputs)
