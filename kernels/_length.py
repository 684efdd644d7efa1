"""The length argument L of the ops that generate a kernel (and of the layers' ``kernel(L)``)."""

from __future__ import annotations


def check_length(L, name: str):
    """Require a non-negative integer L (an integral float passes, a bool does not), else
    ``ValueError("<name>: L must be a non-negative integer, got <L>")``. Returns L, an
    integral float as an int; an int or a symbolic length under torch.compile comes back as
    it is."""
    if isinstance(L, bool) or int(L) != L or L < 0:
        raise ValueError(f"{name}: L must be a non-negative integer, got {L!r}")
    return int(L) if isinstance(L, float) else L
