"""What can be benchmarked: each case takes the shape (B, H, N, L) and the peer checkouts,
builds inputs and returns callables per backend, plus the bytes an ideal kernel must move
(for the bandwidth column)."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch

import kernels
import ssm
from bench.peers import (
    mamba_ssm_selective_scan,
    mambapy_block,
    mambapy_selective_scan,
    s4_minimal_kernel,
    s5_pytorch_layer,
    spacetime_companion_kernels,
)
from kernels.companion_kernel import companion_kernel_squaring


class UsageError(ValueError):
    """An op asked for where it cannot run (``python -m bench`` says so and exits with status 2)."""


@dataclass
class Case:
    """Callables per backend for one op at one shape. Every run's output is compared with
    the "torch" run's before timing, except those named in ``independent`` (a peer with
    parameters of its own, or same-size work that computes something else)."""

    name: str
    shape: str
    runs: dict[str, Callable[[], torch.Tensor]]
    ideal_bytes: int
    independent: tuple[str, ...] = ()
    forward_only: bool = False  # an inference op (decoding): no forward+backward timing


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
    """The S4D layer forward on x (B, L, H); each backend is its Vandermonde kernel's and FFT
    convolution's."""
    layer = ssm.S4D(H, N).to(device)
    x = torch.randn(B, L, H, device=device, requires_grad=True)

    def ours(backend):
        with kernels.use_backend(backend):
            return layer(x)

    return Case("S4D layer", f"B={B} H={H} N={N} L={L}", {b: functools.partial(ours, b) for b in backends},
                ideal_bytes=8 * B * L * H)


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
    return Case("S4D kernel", f"H={H} N={N} L={L}", runs, ideal_bytes=4 * H * L + 24 * H * N,
                independent=("state-spaces/s4 S4DKernel",))


def linear_scan_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                     peers: dict) -> Case:
    """h[:, t] = a[:, t] h[:, t-1] + b[:, t] over P = H channels (N is not used): complex64
    a (B, L, H) with 0.5 <= |a| < 1 and b (B, L, H). Ideal bytes: read a and b, write h."""
    a = torch.polar(0.5 + 0.5 * torch.rand(B, L, H, device=device), torch.randn(B, L, H, device=device))
    b = torch.randn(B, L, H, dtype=torch.complex64, device=device)
    a.requires_grad_(True)
    b.requires_grad_(True)

    def run(backend):
        return torch.view_as_real(kernels.linear_scan(a, b, backend=backend))  # real, for the loss

    runs = {name: functools.partial(run, name) for name in backends}
    return Case("linear_scan", f"B={B} P={H} L={L}", runs, ideal_bytes=3 * 8 * B * L * H)


def s5_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str], peers: dict) -> Case:
    """S5 layer forward on x (B, L, H) with P = N states, all stored (conj_sym=False, the
    same work as s5-pytorch's S5SSM, timed beside it when that package is installed); each
    backend is the scan's (``reference`` = the sequential loop)."""
    layer = ssm.S5(H, N, conj_sym=False).to(device)
    x = torch.randn(B, L, H, device=device, requires_grad=True)

    def ours(backend):
        with kernels.use_backend(backend):
            return layer(x)

    runs = {b: functools.partial(ours, b) for b in backends}
    peer = s5_pytorch_layer(H, N, device)
    if peer is not None:
        runs["s5-pytorch S5SSM"] = functools.partial(peer, x)
    return Case("S5 layer", f"B={B} H={H} P={N} L={L}", runs, ideal_bytes=8 * B * L * H,
                independent=("s5-pytorch S5SSM",))


def selective_scan_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                        peers: dict) -> Case:
    """Mamba's selective scan as its block calls it, over D = H channels and N states: u,
    delta, z (B, D, L), A = -exp(A_log) (D, N), variable B and C (B, N, L), D and delta_bias,
    delta_softplus. Beside it, when the package is installed, mambapy's parallel scan (pscan)
    with the same softplus, skip and gate around it, on (B, L, D) copies of the inputs; and
    state-spaces/mamba's scan when ``mamba_ssm`` is installed or ``--peer-mamba-ssm`` names a
    checkout (its CUDA kernel where it is built, else its PyTorch reference). Ideal
    bytes: read u, delta, z, B, C and write out, in float32."""
    def leaf(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(*shape, device=device)).requires_grad_(True)

    u, delta, z = leaf(B, H, L), leaf(B, H, L, scale=0.5, shift=-2.0), leaf(B, H, L)
    A_log = torch.log(torch.arange(1, N + 1, dtype=torch.float32, device=device)).repeat(H, 1)
    A = (-torch.exp(A_log)).requires_grad_(True)
    B_, C_ = leaf(B, N, L), leaf(B, N, L)
    D, bias = leaf(H), leaf(H, scale=0.1)

    def ours(backend):
        return kernels.selective_scan(u, delta, A, B_, C_, D, z, delta_bias=bias, delta_softplus=True,
                                      backend=backend)

    runs = {b: functools.partial(ours, b) for b in backends}
    mamba_ssm = mamba_ssm_selective_scan(peers.get("mamba_ssm"), device)
    if mamba_ssm is not None:
        name, fn = mamba_ssm
        runs[name] = functools.partial(fn, u, delta, A, B_, C_, D, z, delta_bias=bias, delta_softplus=True)
    peer = mambapy_selective_scan()
    if peer is not None:
        # the peer's own (B, L, D) / (B, L, N) layouts, made once outside the timed call
        layout = [t.detach().transpose(1, 2).contiguous().requires_grad_(True) for t in (u, delta, z, B_, C_)]
        peer_args = (*layout[:2], A, *layout[3:], D, layout[2], bias)
        runs["mambapy pscan"] = lambda: peer(*peer_args).transpose(1, 2)  # a view: ours' (B, D, L), for the check
    return Case("selective_scan", f"B={B} D={H} N={N} L={L}", runs,
                ideal_bytes=4 * (4 * B * H * L + 2 * B * N * L))


def mamba_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str], peers: dict) -> Case:
    """The whole Mamba block (in_proj, causal conv, x_proj, dt_proj, selective scan, out_proj)
    on x (B, L, H) with d_state N and expand 2; each backend is the scan's, and on a GPU also
    the block compiled with ``torch.compile`` (one graph) on it. Beside it, when the package
    is installed, mambapy's MambaBlock with the same weights (parallel scan)."""
    layer = ssm.Mamba(H, d_state=N).to(device)
    x = torch.randn(B, L, H, device=device, requires_grad=True)

    def ours(backend):
        with kernels.use_backend(backend):
            return layer(x)

    runs = {b: functools.partial(ours, b) for b in backends}
    if device.type == "cuda":  # the block under torch.compile (inductor), its scan an op of the graph
        compiled = torch.compile(layer, fullgraph=True)

        def ours_compiled(backend):
            with kernels.use_backend(backend):
                return compiled(x)

        # not the reference loop: traced, it would be unrolled over L
        runs.update({f"{b} + torch.compile": functools.partial(ours_compiled, b) for b in backends if b != "reference"})
    peer = mambapy_block(layer, device)
    if peer is not None:
        runs["mambapy MambaBlock"] = functools.partial(peer, x)
    return Case("Mamba block", f"B={B} d_model={H} N={N} L={L}", runs, ideal_bytes=8 * B * L * H)


def selective_state_update_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                                peers: dict) -> Case:
    """Decoding L tokens with Mamba's one-step update, as ``Mamba.step`` calls it: state (B, D, N)
    over D = H channels, per step x, dt, z (B, D) and B, C (B, N), softplus(dt + dt_bias), D and
    the gate; no gradients (inference). Ideal bytes: per step, read and write the state and
    read x, dt, z, B, C, write y, in float32."""
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, scale=1.0, shift=0.0):
        return shift + scale * torch.randn(*shape, device=device, generator=gen)

    x, dt, z = randn(B, H, L), randn(B, H, L, scale=0.5, shift=-2.0), randn(B, H, L)
    A = -torch.arange(1, N + 1, dtype=torch.float32, device=device).repeat(H, 1)
    B_, C_ = randn(B, N, L), randn(B, N, L)
    D, bias = randn(H), randn(H, scale=0.1)
    state0 = torch.zeros(B, H, N, device=device)

    def decode(backend):
        state, ys = state0, []
        with torch.no_grad():
            for t in range(L):
                y, state = kernels.selective_state_update(state, x[..., t], dt[..., t], A, B_[..., t], C_[..., t], D,
                                                          z[..., t], dt_bias=bias, dt_softplus=True, backend=backend)
                ys.append(y)
        return torch.stack(ys, -1)

    runs = {b: functools.partial(decode, b) for b in backends}
    return Case("selective_state_update", f"B={B} D={H} N={N} steps={L}", runs,
                ideal_bytes=4 * L * (2 * B * H * N + 4 * B * H + 2 * B * N), forward_only=True)


def _side(L: int) -> tuple[int, int]:
    """An image of about L pixels: (H, W) with H = floor(sqrt(L)), W = ceil(L / H)."""
    H = max(1, math.isqrt(L))
    return H, -(-L // H)


def selective_scan_2d_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                           peers: dict) -> Case:
    """The 2D selective scan (row then column) over an image of about L pixels, D = H channels,
    N states, grouped B/C (G = 1), delta_softplus, D and gate. Beside it, the same-size work
    of a four-direction 1D scan (SS2D): cross_scan, one grouped selective scan over the four
    orders (B, 4·D, L), cross_merge. Ideal bytes: read u, delta, z, B, C, write out (float32)."""
    Hgt, Wdt = _side(L)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(*shape, device=device)).requires_grad_(True)

    u, delta, z = leaf(B, H, Hgt, Wdt), leaf(B, H, Hgt, Wdt, scale=0.5, shift=-2.0), leaf(B, H, Hgt, Wdt)
    A = (-torch.arange(1, N + 1, dtype=torch.float32, device=device).repeat(H, 1)).requires_grad_(True)
    B_, C_ = leaf(B, N, Hgt, Wdt), leaf(B, N, Hgt, Wdt)
    D, bias = leaf(H), leaf(H, scale=0.1)

    def ours(backend):
        return kernels.selective_scan_2d(u, delta, A, B_, C_, D, z, delta_bias=bias, delta_softplus=True,
                                         backend=backend)

    runs = {b: functools.partial(ours, b) for b in backends}
    A4, D4, bias4 = (t.detach().repeat(4, *([1] * (t.dim() - 1))).requires_grad_(True) for t in (A, D, bias))
    B4, C4 = (leaf(B, 4, N, Hgt * Wdt) for _ in range(2))

    def four_way(backend):
        with kernels.use_backend(backend):
            xs = kernels.cross_scan(u).reshape(B, 4 * H, Hgt * Wdt)
            ds = kernels.cross_scan(delta).reshape(B, 4 * H, Hgt * Wdt)
            ys = kernels.selective_scan(xs, ds, A4, B4, C4, D4, delta_bias=bias4, delta_softplus=True)
            return kernels.cross_merge(ys.view(B, 4, H, Hgt * Wdt), Hgt, Wdt) * torch.nn.functional.silu(z)

    # the same-size work of the fastest path there is: Triton on CUDA, torch elsewhere
    fastest = "triton" if device.type == "cuda" else "torch"
    name = f"four-way 1D scan (SS2D), {fastest}"
    runs[name] = functools.partial(four_way, fastest)
    return Case("selective_scan_2d", f"B={B} D={H} N={N} {Hgt}x{Wdt}", runs,
                ideal_bytes=4 * (4 * B * H * Hgt * Wdt + 2 * B * N * Hgt * Wdt), independent=(name,))


def selective_scan_2d_tilings(N: int, Hgt: int, Wdt: int) -> list[tuple[int, int]]:
    """(BLOCK_H, BLOCK_W) tilings of the Triton 2D scan worth timing on an Hgt × Wdt image with
    N states: register tiles (BLOCK_N, BLOCK_H, BLOCK_W) of 2048 and 4096 elements, widths
    from 16 (or the image width) to the widest the kernel takes, rows at most the image's."""
    from kernels.selective_scan_2d.triton import MAX_BLOCK_H, MAX_ROW

    block_n = 1 << max(0, N - 1).bit_length()
    widest = min(1 << max(0, Wdt - 1).bit_length(), max(1, MAX_ROW // block_n))
    tallest = min(MAX_BLOCK_H, 1 << max(0, Hgt - 1).bit_length())
    tilings = []
    for elements in (2048, 4096):
        width = min(16, widest)
        while width <= widest:
            rows = max(1, min(tallest, elements // (block_n * width)))
            if (rows, width) not in tilings:
                tilings.append((rows, width))
            width *= 2
    return tilings


def selective_scan_2d_tiles_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                                 peers: dict) -> Case:
    """The Triton 2D scan of :func:`selective_scan_2d_case` at each tiling of
    :func:`selective_scan_2d_tilings` (the override sets forward and backward alike), beside
    the launcher's own choice and the torch path: the data for the tile heuristic."""
    from kernels.selective_scan_2d.triton_op import selective_scan_2d_triton

    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UsageError("--op selective_scan_2d_tiles times Triton kernels: run it on a CUDA device "
                         "(or, for a functional check only, with TRITON_INTERPRET=1 set)")
    Hgt, Wdt = _side(L)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(*shape, device=device)).requires_grad_(True)

    u, delta, z = leaf(B, H, Hgt, Wdt), leaf(B, H, Hgt, Wdt, scale=0.5, shift=-2.0), leaf(B, H, Hgt, Wdt)
    A = (-torch.arange(1, N + 1, dtype=torch.float32, device=device).repeat(H, 1)).requires_grad_(True)
    B_, C_ = leaf(B, 1, N, Hgt, Wdt), leaf(B, 1, N, Hgt, Wdt)
    D, bias = leaf(H), leaf(H, scale=0.1)

    def triton(block_h=None, block_w=None):
        return selective_scan_2d_triton(u, delta, A, B_, C_, D, z, bias, True, block_h=block_h, block_w=block_w)

    runs = {}
    if "torch" in backends:
        runs["torch"] = functools.partial(kernels.selective_scan_2d, u, delta, A, B_[:, 0], C_[:, 0], D, z,
                                          delta_bias=bias, delta_softplus=True, backend="torch")
    runs["triton (launcher's tiles)"] = triton
    for rows, width in selective_scan_2d_tilings(N, Hgt, Wdt):
        runs[f"triton {rows}x{width} tiles"] = functools.partial(triton, rows, width)
    return Case("selective_scan_2d", f"B={B} D={H} N={N} {Hgt}x{Wdt}", runs,
                ideal_bytes=4 * (4 * B * H * Hgt * Wdt + 2 * B * N * Hgt * Wdt))


def cross_scan_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                    peers: dict) -> Case:
    """cross_scan then cross_merge of a (B, C = H, about L pixels) image. Ideal bytes: the scan
    reads the image once and writes four copies; the merge reads four and writes one."""
    Hgt, Wdt = _side(L)
    x = torch.randn(B, H, Hgt, Wdt, device=device, requires_grad=True)

    def ours(backend):
        return kernels.cross_merge(kernels.cross_scan(x, backend=backend), Hgt, Wdt, backend=backend)

    return Case("cross_scan", f"B={B} C={H} {Hgt}x{Wdt}", {b: functools.partial(ours, b) for b in backends},
                ideal_bytes=4 * 10 * B * H * Hgt * Wdt)


def companion_kernel_case(B: int, H: int, N: int, L: int, device: torch.device, backends: list[str],
                          peers: dict) -> Case:
    """The companion kernel K (n, L) of n = H kernel sets with state d = N (a L1-normalized):
    ours by the generating function ("torch", "triton"), by the power series, SpaceTime's
    squaring Krylov rewritten here, the dense recurrence ("reference", the naive Krylov) and,
    with a checkout, SpaceTime's own functions. Ideal bytes: read a, b, c, write K."""
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.randn(3, H, N, generator=g).to(device)
    a = a / a.abs().sum(-1, keepdim=True)
    leaves = [t.requires_grad_(True) for t in (a, b, c)]
    runs = {name: functools.partial(kernels.companion_kernel, *leaves, L, backend=name) for name in backends}
    runs["torch (series method)"] = functools.partial(kernels.companion_kernel, *leaves, L, method="series",
                                                      backend="torch")
    runs["squaring Krylov"] = functools.partial(companion_kernel_squaring, *leaves, L)
    if peers.get("spacetime"):
        for name, fn in spacetime_companion_kernels(peers["spacetime"]).items():
            runs[f"HazyResearch/spacetime {name}"] = functools.partial(fn, *leaves, L)
    return Case("companion_kernel", f"n={H} d={N} L={L}", runs, ideal_bytes=4 * (3 * H * N + H * L))


CASES = {"vandermonde": vandermonde_case, "fftconv": fftconv_case, "s4d": s4d_case, "s4d_kernel": s4d_kernel_case,
         "linear_scan": linear_scan_case, "s5": s5_case, "selective_scan": selective_scan_case,
         "selective_state_update": selective_state_update_case,
         "mamba": mamba_case, "selective_scan_2d": selective_scan_2d_case,
         "selective_scan_2d_tiles": selective_scan_2d_tiles_case, "cross_scan": cross_scan_case,
         "companion_kernel": companion_kernel_case}
