"""Compile every Triton kernel for a GPU architecture, on a machine without a GPU.

    python -m bench.gpu_compile                          # sm_90 (H100 / H200), the full sweep
    python -m bench.gpu_compile --quick --json out.json  # a few cases per op (the CI test)
    python -m bench.gpu_compile --arch 80 --out bench/results
    python -m bench.gpu_compile --quick --ttir ir/        # also each specialization's Triton IR

Each case calls a public op (``kernels.*``, and a few layers) with ``backend="triton"`` on
CPU tensors, forward and backward, at the shapes and options of the GPU tests and
benchmarks. No kernel runs: each launch compiles the specialization its launcher picked
(constexprs, dtypes, alignment) through Triton's own pipeline down to a cubin (ptxas), then
returns, so the outputs hold garbage and only the compilation is checked. Launch heuristics
that size work by the GPU's multiprocessor count see the architecture's data-centre part
(132 SMs for sm_90, 108 for sm_80). The interpreter tests check the math; ``bench.gpu_suite``
checks both on a device.

Reported per compiled specialization: registers per thread, local memory per thread (spills),
shared memory against the architecture's per-block limit, warps, and the largest launch
grid against CUDA's grid limits. Exit status 1 when a kernel does not compile, needs more
shared memory than a block may have, or a grid is out of range; spills are reported only.

Must run in its own process: the kernels have to be decorated as compiled kernels, so
``TRITON_INTERPRET`` is cleared before any Triton kernel module is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable, Iterator

ROOT = pathlib.Path(__file__).resolve().parents[1]

KERNEL_MODULES = (
    "kernels.companion_kernel.triton",
    "kernels.cross_scan.triton",
    "kernels.fftconv.triton",
    "kernels.linear_scan.triton",
    "kernels.selective_scan.triton",
    "kernels.selective_scan_2d.triton",
    "kernels.selective_state_update.triton",
    "kernels.vandermonde.triton",
)

# Shared memory a block may use (opt-in maximum), bytes, and CUDA's grid limits.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
GRID_LIMIT = (2**31 - 1, 65535, 65535)
ARCH_NAMES = {80: "A100", 86: "RTX 30xx / A10", 89: "L4 / L40S / RTX 40xx", 90: "H100 / H200"}
# Streaming multiprocessors of the data-centre part of each architecture (A100, H100/H200 SXM):
# launch heuristics that size work by the SM count see this number instead of "no GPU".
SM_COUNT = {80: 108, 90: 132}


@dataclasses.dataclass
class Compiled:
    """One compiled specialization of one kernel."""

    kernel: str
    case: str
    constexprs: str
    num_warps: int
    shared: int
    registers: int | None = None
    local: int | None = None
    max_grid: tuple[int, int, int] = (0, 0, 0)


@dataclasses.dataclass
class Failure:
    case: str
    error: str


# --------------------------------------------------------------------------- compile-only mode


class _OfflineDriver:
    """Stands in for Triton's CUDA driver: reports the target architecture, so kernels compile
    for it; it has no device, so nothing is ever launched."""

    def __init__(self, target):
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def set_current_device(self, device):
        pass

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    @staticmethod
    def is_active():
        return True


class CompileRecorder:
    """Puts Triton in compile-only mode for ``arch`` and records every specialization that a
    launch compiles (and the largest grid each was launched with)."""

    def __init__(self, arch: int, ttir_dir: pathlib.Path | None = None):
        if any(m in sys.modules for m in KERNEL_MODULES):
            raise RuntimeError("bench.gpu_compile must run in a fresh process (python -m bench.gpu_compile)")
        os.environ.pop("TRITON_INTERPRET", None)
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.runtime.driver import driver
        from triton.runtime.jit import JITFunction

        self.arch = arch
        driver.set_active(_OfflineDriver(GPUTarget("cuda", arch, 32)))
        self.kernels = {}
        for name in KERNEL_MODULES:
            module = __import__(name, fromlist=["_"])
            for attr, value in vars(module).items():
                if isinstance(value, JITFunction) and attr.endswith("_kernel"):
                    self.kernels[f"{name.split('.')[1]}.{attr}"] = value
        if arch in SM_COUNT:
            fftconv = sys.modules["kernels.fftconv.triton"]
            fftconv.multiprocessors = lambda device: SM_COUNT[arch]
        # The kernels are decorated as compiled ones now; from here on the variable only lets
        # the ops accept backend="triton" on CPU tensors (kernels._dispatch checks it), and
        # what the installed interpreter cannot run does not matter: it never runs.
        os.environ["TRITON_INTERPRET"] = "1"
        import kernels._dispatch

        kernels._dispatch.INTERPRETER_PROBLEM = None
        self.triton_version = triton.__version__
        self.compiled: dict[str, Compiled] = {}
        self.case = ""
        self.ttir_dir = ttir_dir
        if ttir_dir is not None:
            ttir_dir.mkdir(parents=True, exist_ok=True)
        names = {id(fn): key for key, fn in self.kernels.items()}
        recorder = self
        original = JITFunction.run

        def compile_only(fn, *args, grid, warmup, **kwargs):
            kernel = original(fn, *args, grid=grid, warmup=True, **kwargs)
            recorder._record(names.get(id(fn), fn.__name__), kernel, grid)
            return kernel

        JITFunction.run = compile_only

    def _record(self, name: str, kernel, grid) -> None:
        meta = kernel.metadata
        key = f"{name}:{meta.hash}"
        if key not in self.compiled:
            src = getattr(kernel, "src", None)
            constants = getattr(src, "constants", None) or {}
            shown = {k[0] if isinstance(k, tuple) else k: v for k, v in constants.items()}
            params = [p.name for p in self.kernels[name].params] if name in self.kernels else []
            consts = ", ".join(
                f"{params[k] if isinstance(k, int) and k < len(params) else k}={_short(v)}" for k, v in shown.items()
            )
            record = Compiled(name, self.case, consts, meta.num_warps, meta.shared)
            record.registers, record.local, static = _resource_usage(kernel.asm["cubin"])
            record.shared += static
            self.compiled[key] = record
            if self.ttir_dir is not None:
                (self.ttir_dir / f"{name}.{meta.hash[:16]}.ttir").write_text(kernel.asm["ttir"])
        record = self.compiled[key]
        dims = tuple(grid) + (1,) * (3 - len(grid))
        record.max_grid = tuple(max(a, int(b)) for a, b in zip(record.max_grid, dims))


def _short(value) -> str:
    text = str(value)
    return text.replace("triton.language.", "tl.").replace("fp32", "float32")


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None, int]:
    """(registers per thread, local bytes per thread, static shared bytes) from cuobjdump."""
    import triton

    tool = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return None, None, 0
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout

    def field(name):
        match = re.search(rf"\b{name}:(\d+)", text)
        return int(match.group(1)) if match else None

    return field("REG"), field("LOCAL"), field("SHARED") or 0


# --------------------------------------------------------------------------- cases


def _leaf(*shape, dtype=None, scale=1.0, shift=0.0):
    import torch

    dtype = dtype or torch.float32
    return (torch.randn(*shape) * scale + shift).to(dtype).requires_grad_(True)


def _backward(out) -> None:
    """Backpropagate the sum of every differentiable output (launches the backward kernels)."""
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o.requires_grad]
    if outs:
        sum((o.real if o.is_complex() else o).float().sum() for o in outs).backward()


def selective_scan_cases(quick: bool) -> Iterator[tuple[str, Callable[[], None]]]:
    import torch

    import kernels

    def case(Bsz, Dm, N, L, dtype=torch.float32, G=1, const_B=False, extras=False):
        def run():
            u = _leaf(Bsz, Dm, L, dtype=dtype)
            delta = _leaf(Bsz, Dm, L, dtype=dtype, scale=0.5, shift=-1.0)
            A = _leaf(Dm, N, scale=0.5, shift=-1.0)
            B = _leaf(Dm, N) if const_B else _leaf(Bsz, G, N, L, dtype=dtype)
            C = _leaf(Bsz, G, N, L, dtype=dtype)
            opts = {}
            if extras:
                opts = dict(D=_leaf(Dm), z=_leaf(Bsz, Dm, L, dtype=dtype), delta_bias=_leaf(Dm),
                            delta_softplus=True, return_last_state=True, h0=_leaf(Bsz, Dm, N))
            _backward(kernels.selective_scan(u, delta, A, B, C, backend="triton", **opts))

        name = str(dtype).replace("torch.", "")
        label = f"selective_scan B={Bsz} D={Dm} N={N} L={L} {name} G={G}{' const B' if const_B else ''}"
        return label + (" +D,z,bias,softplus,last,h0" if extras else ""), run

    yield case(2, 64, 16, 300, extras=True)
    yield case(1, 1536, 16, 4096)
    yield case(70000, 4, 2, 3, extras=True)  # more batch rows than a grid dimension 1 or 2 holds
    if quick:
        return
    yield case(2, 64, 16, 300)
    yield case(2, 48, 17, 257, G=2, const_B=True, extras=True)
    yield case(2, 8, 4, 1, extras=True)
    yield case(1, 1536, 16, 1024, extras=True)
    yield case(1, 1536, 16, 16384, extras=True)
    yield case(1, 768, 16, 4096, G=4)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        yield case(2, 64, 16, 300, dtype=dtype, extras=True)
    yield case(1, 1536, 16, 4096, dtype=torch.bfloat16, extras=True)


def selective_state_update_cases(quick: bool):
    import torch

    import kernels

    def case(Bsz, Dm, N, G=1, dtype=torch.float32, extras=False):
        def run():
            with torch.no_grad():  # the Triton step is forward-only (decoding)
                state = torch.randn(Bsz, Dm, N)
                x, dt = torch.randn(Bsz, Dm).to(dtype), torch.randn(Bsz, Dm).to(dtype)
                A = -torch.rand(Dm, N)
                B, C = torch.randn(Bsz, G, N).to(dtype), torch.randn(Bsz, G, N).to(dtype)
                opts = dict(D=torch.randn(Dm), z=torch.randn(Bsz, Dm).to(dtype), dt_bias=torch.randn(Dm),
                            dt_softplus=True) if extras else {}
                kernels.selective_state_update(state, x, dt, A, B, C, backend="triton", **opts)

        return f"selective_state_update B={Bsz} D={Dm} N={N} G={G} {str(dtype)[6:]}{' +D,z,bias' if extras else ''}", run

    yield case(2, 64, 16, extras=True)
    yield case(70000, 4, 2, extras=True)  # more batch rows than a grid dimension 1 or 2 holds
    if quick:
        return
    yield case(8, 1536, 16)
    yield case(3, 48, 17, G=2, extras=True)
    yield case(2, 64, 16, dtype=torch.bfloat16, extras=True)


def selective_scan_2d_cases(quick: bool):
    import torch

    import kernels

    def case(Bsz, Dm, N, H, W, G=1, dtype=torch.float32, extras=False, grad=True):
        def run():
            with torch.set_grad_enabled(grad):  # no grad: the inference forward, two band carries
                u = _leaf(Bsz, Dm, H, W, dtype=dtype)
                delta = _leaf(Bsz, Dm, H, W, dtype=dtype, scale=0.5, shift=-1.0)
                A = _leaf(Dm, N, scale=0.5, shift=-1.0)
                B, C = _leaf(Bsz, G, N, H, W, dtype=dtype), _leaf(Bsz, G, N, H, W, dtype=dtype)
                opts = dict(D=_leaf(Dm), z=_leaf(Bsz, Dm, H, W, dtype=dtype), delta_bias=_leaf(Dm),
                            delta_softplus=True) if extras else {}
                _backward(kernels.selective_scan_2d(u, delta, A, B, C, backend="triton", **opts))

        label = f"selective_scan_2d B={Bsz} D={Dm} N={N} {H}x{W} G={G} {str(dtype)[6:]}"
        return label + (" +D,z,bias,softplus" if extras else "") + ("" if grad else " no grad"), run

    yield case(2, 8, 16, 5, 7, extras=True)
    yield case(1, 8, 16, 40, 700, G=2)
    yield case(1, 8, 16, 40, 700, G=2, grad=False)
    yield case(70000, 2, 2, 2, 3, extras=True)  # more batch rows than a grid dimension 1 or 2 holds
    if quick:
        return
    yield case(2, 8, 16, 5, 7)
    yield case(1, 192, 16, 32, 32, extras=True)
    yield case(1, 192, 16, 64, 64)
    yield case(1, 192, 16, 64, 64, grad=False)
    yield case(1, 192, 16, 128, 128, extras=True)
    yield case(1, 192, 16, 128, 128, extras=True, grad=False)
    yield case(1, 8, 16, 3, 300, extras=True)
    yield case(2, 6, 5, 1, 1, G=3, extras=True)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        yield case(2, 8, 16, 9, 11, dtype=dtype, extras=True)
    yield from selective_scan_2d_tiling_cases()


def selective_scan_2d_tiling_cases():
    """Every tiling the GPU tile sweep (``python -m bench --op selective_scan_2d_tiles``) times,
    at its image sizes: that each builds without spilling is known before any GPU time."""
    from bench.cases import _side, selective_scan_2d_tilings
    from kernels.selective_scan_2d.triton_op import selective_scan_2d_triton

    def case(H, W, rows, width, N=16):
        def run():
            x = [_leaf(1, 8, H, W) for _ in range(3)]
            B, C = _leaf(1, 1, N, H, W), _leaf(1, 1, N, H, W)
            A = _leaf(8, N, scale=0.5, shift=-1.0)
            _backward(selective_scan_2d_triton(x[0], x[1], A, B, C, _leaf(8), x[2], _leaf(8), True,
                                               block_h=rows, block_w=width))

        return f"selective_scan_2d tiles {rows}x{width} N={N} {H}x{W} +D,z,bias,softplus", run

    for L in (4096, 16384):
        H, W = _side(L)
        for rows, width in selective_scan_2d_tilings(16, H, W):
            yield case(H, W, rows, width)


def cross_scan_cases(quick: bool):
    import torch

    import kernels

    def case(Bsz, C, H, W, dtype=torch.float32):
        def run():
            x = _leaf(Bsz, C, H, W, dtype=dtype)
            _backward(kernels.cross_scan(x, backend="triton"))
            y = _leaf(Bsz, 4, C, H * W, dtype=dtype)
            _backward(kernels.cross_merge(y, H, W, backend="triton"))

        return f"cross_scan / cross_merge B={Bsz} C={C} {H}x{W} {str(dtype)[6:]}", run

    yield case(2, 24, 56, 56)
    if quick:
        return
    yield case(2, 24, 3, 5)
    yield case(1, 1, 1, 1)
    yield case(70000, 1, 3, 5)
    yield case(2, 192, 64, 64, dtype=torch.bfloat16)
    yield case(2, 24, 17, 9, dtype=torch.float16)


def linear_scan_cases(quick: bool):
    import torch

    import kernels

    def case(Bsz, L, P, dtype, const=False, reverse=False, h0=False):
        def run():
            if dtype.is_complex:
                a = torch.polar(0.5 + 0.5 * torch.rand(*((P,) if const else (Bsz, L, P))),
                                torch.randn(*((P,) if const else (Bsz, L, P)))).to(dtype).requires_grad_(True)
                b = torch.randn(Bsz, L, P, dtype=dtype).requires_grad_(True)
                start = torch.randn(Bsz, P, dtype=dtype).requires_grad_(True) if h0 else None
            else:
                a = (0.5 + 0.5 * torch.rand(*((P,) if const else (Bsz, L, P)))).to(dtype).requires_grad_(True)
                b = _leaf(Bsz, L, P, dtype=dtype)
                start = _leaf(Bsz, P, dtype=dtype) if h0 else None
            _backward(kernels.linear_scan(a, b, start, reverse=reverse, backend="triton"))

        flags = "".join(f" {n}" for n, on in (("const a", const), ("reverse", reverse), ("h0", h0)) if on)
        return f"linear_scan B={Bsz} L={L} P={P} {str(dtype)[6:]}{flags}", run

    yield case(2, 300, 40, torch.complex64, h0=True)
    if quick:
        return
    yield case(2, 300, 40, torch.float32, const=True, reverse=True)
    yield case(1, 4096, 256, torch.complex64)
    yield case(1, 16384, 256, torch.complex64, reverse=True, h0=True)
    yield case(2, 1, 3, torch.float32, h0=True)
    yield case(2, 257, 33, torch.complex64, const=True, reverse=True, h0=True)
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.complex128):
        yield case(2, 300, 40, dtype, h0=True)


def fftconv_cases(quick: bool):
    import torch

    import kernels

    def case(Bsz, H, L, two_sided=False, D=True, dtype=torch.float32):
        def run():
            u = _leaf(Bsz, H, L, dtype=dtype)
            k = _leaf(*((2,) if two_sided else ()), H, L, dtype=dtype)
            _backward(kernels.fftconv(u, k, _leaf(H, dtype=dtype) if D else None, backend="triton"))

        return f"fftconv B={Bsz} H={H} L={L} {str(dtype)[6:]}{' two-sided' if two_sided else ''}", run

    yield case(16, 256, 1000)  # 4096 rows at n = 2048: eight rows per program on an H100
    if quick:
        return
    yield case(2, 4, 300)
    yield case(1, 8, 4096, two_sided=True)
    yield case(8, 256, 2048, two_sided=True)
    yield case(4, 256, 512)
    yield case(2, 4, 1)
    yield case(2, 4, 1000, D=False)
    yield case(1, 256, 1024)
    yield case(1, 256, 2048, two_sided=True)
    yield case(2, 4, 512, dtype=torch.float16)
    yield case(2, 4, 512, dtype=torch.bfloat16, two_sided=True)


def vandermonde_cases(quick: bool):
    import torch

    import kernels

    def case(C, H, N, L, dtype=torch.complex64):
        def run():
            shape = (C, H, N) if C else (H, N)
            v = torch.randn(*shape, dtype=dtype).requires_grad_(True)
            x = torch.complex(-torch.rand(H, N), torch.randn(H, N)).to(dtype).requires_grad_(True)
            _backward(kernels.vandermonde(v, x, L, backend="triton"))

        return f"vandermonde C={C or '-'} H={H} N={N} L={L} {str(dtype)[6:]}", run

    yield case(0, 4, 8, 300)
    if quick:
        return
    yield case(2, 4, 8, 300)
    yield case(0, 256, 32, 1024)
    yield case(0, 256, 32, 65536)
    yield case(0, 3, 5, 1)
    yield case(0, 4, 8, 300, dtype=torch.complex128)


def companion_kernel_cases(quick: bool):
    import torch

    import kernels

    def case(n, d, L, dtype=torch.float32, method="fft"):
        def run():
            a, b, c = (_leaf(n, d, dtype=dtype, scale=0.1) for _ in range(3))
            _backward(kernels.companion_kernel(a, b, c, L, backend="triton", method=method))

        return f"companion_kernel n={n} d={d} L={L} {str(dtype)[6:]} {method}", run

    yield case(4, 8, 300)
    if quick:
        return
    yield case(256, 64, 1024)
    yield case(256, 64, 16384)
    yield case(3, 5, 1)
    yield case(4, 8, 300, method="series")
    yield case(4, 8, 300, dtype=torch.float64)


def layer_cases(quick: bool):
    """The layers on the Triton backend (their own launch shapes, Mamba's decoding step)."""
    import torch

    import kernels
    import ssm

    def mamba():
        layer = ssm.Mamba(64, d_state=16)
        x = torch.randn(2, 33, 64)
        with kernels.use_backend("triton"):
            _backward(layer(x))
            with torch.no_grad():
                state = layer.init_state(2)
                for t in range(2):
                    _, state = layer.step(x[:, t], state)

    def image_layers():
        x = torch.randn(2, 9, 11, 32)
        with kernels.use_backend("triton"):
            for layer in (ssm.SS2D(32, d_state=8), ssm.Mamba2D(32, d_state=8)):
                _backward(layer(x))

    if quick:  # the quick sweep launches every kernel through the ops already
        return
    yield "ssm.Mamba forward, backward and step", mamba
    yield "ssm.SS2D and ssm.Mamba2D forward and backward", image_layers


CASE_GROUPS = {
    "selective_scan": selective_scan_cases,
    "selective_state_update": selective_state_update_cases,
    "selective_scan_2d": selective_scan_2d_cases,
    "cross_scan": cross_scan_cases,
    "linear_scan": linear_scan_cases,
    "fftconv": fftconv_cases,
    "vandermonde": vandermonde_cases,
    "companion_kernel": companion_kernel_cases,
    "layers": layer_cases,
}


# --------------------------------------------------------------------------- report


def problems(records: list[Compiled], arch: int) -> list[str]:
    """What would fail at launch on the architecture: shared memory or grid out of range."""
    limit = SHARED_LIMIT.get(arch)
    found = []
    for r in records:
        if limit is not None and r.shared > limit:
            found.append(f"{r.kernel} ({r.case}): {r.shared} B of shared memory, the limit is {limit} B")
        for axis, (size, cap) in enumerate(zip(r.max_grid, GRID_LIMIT)):
            if size > cap:
                found.append(f"{r.kernel} ({r.case}): grid dim {axis} = {size} > {cap}")
    return found


def markdown(result: dict) -> str:
    arch = result["arch"]
    lines = [
        f"# Triton kernels compiled for sm_{arch} ({ARCH_NAMES.get(arch, 'CUDA')}), no GPU",
        "",
        f"{result['date']}, Triton {result['triton']}, torch {result['torch']}; "
        f"`python -m bench.gpu_compile --arch {arch}{' --quick' if result['quick'] else ''}`.",
        "Each row is one specialization a launch compiled (constexprs as the launcher chose them), "
        "built to a cubin by ptxas. Nothing ran: this checks that the kernels compile and fit, not "
        "their results or speed.",
        "",
        f"- cases: {result['cases']}, failed: {len(result['failures'])}; "
        f"specializations: {len(result['compiled'])}; kernels never launched: "
        f"{', '.join(result['not_launched']) or 'none'}",
        f"- shared-memory limit per block: {SHARED_LIMIT.get(arch, 'unknown')} B; "
        f"spilling specializations (local memory > 0): {sum(1 for r in result['compiled'] if r['local'])}",
        f"- problems: {'; '.join(result['problems']) or 'none'}",
        "",
    ]
    if result["failures"]:
        lines += ["## Failures", ""] + [f"- {f['case']}: {f['error']}" for f in result["failures"]] + [""]
    lines += [
        "| kernel | first case | warps | regs/thread | local B/thread | shared B | largest grid | constexprs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result["compiled"], key=lambda r: (r["kernel"], r["case"])):
        grid = "×".join(str(g) for g in r["max_grid"])
        lines.append(
            f"| {r['kernel']} | {r['case']} | {r['num_warps']} | {r['registers']} | {r['local']} | {r['shared']} | "
            f"{grid} | {r['constexprs']} |"
        )
    return "\n".join(lines) + "\n"


def run(arch: int, quick: bool, groups: list[str], ttir_dir: pathlib.Path | None = None) -> dict:
    recorder = CompileRecorder(arch, ttir_dir)
    import torch

    torch.manual_seed(0)
    failures: list[Failure] = []
    n_cases = 0
    for group in groups:
        for label, case in CASE_GROUPS[group](quick):
            n_cases += 1
            recorder.case = label
            start = time.perf_counter()
            try:
                case()
                status = "ok"
            except Exception as err:  # noqa: BLE001 - every failure is reported, the sweep goes on
                message = "".join(traceback.format_exception_only(type(err), err)).strip().splitlines()
                failures.append(Failure(label, " ".join(message)[:600]))
                status = "FAILED: " + (message[-1] if message else type(err).__name__)[:200]
            print(f"[{time.perf_counter() - start:5.1f} s] {label}: {status}", flush=True)
    compiled = list(recorder.compiled.values())
    launched = {r.kernel for r in compiled}
    covered = {name for name in recorder.kernels if name.split(".")[0] in groups or "layers" in groups}
    return {
        "arch": arch,
        "quick": quick,
        "date": datetime.date.today().isoformat(),
        "triton": recorder.triton_version,
        "torch": torch.__version__,
        "cases": n_cases,
        "kernels": sorted(recorder.kernels),
        "not_launched": sorted(covered - launched),
        "compiled": [dataclasses.asdict(r) for r in compiled],
        "failures": [dataclasses.asdict(f) for f in failures],
        "problems": problems(compiled, arch),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10: 90 (H100/H200), 80 (A100)")
    parser.add_argument("--quick", action="store_true", help="a few cases per op instead of the full sweep")
    parser.add_argument("--ops", nargs="+", default=list(CASE_GROUPS), choices=list(CASE_GROUPS))
    parser.add_argument("--json", type=pathlib.Path, help="write the result as JSON here")
    parser.add_argument("--ttir", type=pathlib.Path,
                        help="write each specialization's Triton IR into this folder, as <kernel>.<hash>.ttir")
    parser.add_argument("--out", type=pathlib.Path,
                        help="write sm<arch>-compile-triton<version>-<date>.{json,md} into this folder")
    args = parser.parse_args(argv)
    result = run(args.arch, args.quick, args.ops, args.ttir)
    report = markdown(result)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        version = ".".join(result["triton"].split(".")[:2])
        stem = f"sm{args.arch}-compile-triton{version}-{result['date']}"
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{stem}.md").write_text(report)
    bad = result["failures"] or result["problems"] or result["not_launched"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
