"""B and C of a selective scan with different group counts, brought to one grouping."""

from __future__ import annotations

import math

import torch


def common_groups(B: torch.Tensor, C: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C with G_B and G_C groups along ``dim`` (each dividing D), spread to
    G = lcm(G_B, G_C) groups by repeating each group G / G_X times.

    Channel d reads group d // (D / G) of the result, which is group d // (D / G_X) of the
    input, so the scan is unchanged; the kernels then index B and C with one group count.
    Differentiable (the repeats' gradients sum back). Returns the inputs when G_B = G_C."""
    g_b, g_c = B.shape[dim], C.shape[dim]
    if g_b == g_c:
        return B, C
    G = math.lcm(g_b, g_c)
    return B.repeat_interleave(G // g_b, dim=dim), C.repeat_interleave(G // g_c, dim=dim)
