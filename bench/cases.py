"""What can be benchmarked: each case takes the shape (B, H, N, L) and the peer checkouts,
builds inputs and returns callables per backend, plus the bytes an ideal kernel must move
(for the bandwidth column)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

import kernels
import ssm
from bench.peers import s4_minimal_kernel


@dataclass
class Case:
    """Callables per backend for one op at one shape."""

    name: str
    shape: str
    runs: dict[str, Callable[[], torch.Tensor]]
    ideal_bytes: int


def vandermonde_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str], peers: dict) -> Case:
    v = torch.randn(H, N, dtype=torch.complex64, device=device, requires_grad=True)
    x = torch.complex(-torch.rand(H, N, device=device), torch.randn(H, N, device=device))
    x.requires_grad_(True)
    runs = {b: functools.partial(kernels.vandermonde, v, x, L, backend=b) for b in backends}
    return Case("vandermonde", f"H={H} N={N} L={L}", runs, ideal_bytes=4 * H * L + 16 * H * N)


def fftconv_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str], peers: dict) -> Case:
    u = torch.randn(B, H, L, device=device, requires_grad=True)
    k = torch.randn(H, L, device=device, requires_grad=True)
    D = torch.randn(H, device=device, requires_grad=True)
    runs = {b: functools.partial(kernels.fftconv, u, k, D, backend=b) for b in backends}
    return Case("fftconv", f"B={B} H={H} L={L}", runs, ideal_bytes=4 * (2 * B * H * L + H * L))


def s4d_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str], peers: dict) -> Case:
    layer = ssm.S4D(H, N).to(device)
    x = torch.randn(B, L, H, device=device, requires_grad=True)
    return Case("S4D layer", f"B={B} H={H} N={N} L={L}", {"torch": lambda: layer(x)}, ideal_bytes=8 * B * L * H)


def s4d_kernel_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                    peers: dict) -> Case:
    """S4D kernel generation K (H, L) from the layer's parameters (N = d_state, N/2 modes):
    ours through each Vandermonde backend, and state-spaces/s4's minimal kernel if given."""
    layer = ssm.S4D(H, N, init="lin").to(device)

    def ours(backend):
        with kernels.use_backend(backend):
            return layer.kernel(L)

    runs = {b: functools.partial(ours, b) for b in backends}
    if peers.get("s4"):
        peer = s4_minimal_kernel(peers["s4"], H, N, device)
        runs["state-spaces/s4 S4DKernel"] = functools.partial(peer, L)
    return Case("S4D kernel", f"H={H} N={N} L={L}", runs, ideal_bytes=4 * H * L + 24 * H * N)


CASES = {"vandermonde": vandermonde_case, "fftconv": fftconv_case, "s4d": s4d_case, "s4d_kernel": s4d_kernel_case}
