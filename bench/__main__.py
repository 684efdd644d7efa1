"""Time ops and layers across sequence lengths, backends side by side in one process.

    python -m bench --op fftconv --lengths 1024 4096 16384 --out bench/results/cpu.json
    python -m bench --op s4d_kernel --peer-s4 ~/src/s4     # beside state-spaces/s4's S4DKernel
    python -m bench --op companion_kernel --channels 128 --state 64 --peer-spacetime ~/src/spacetime

Prints a Markdown table: median forward and forward+backward times per backend (with the
min–max of the repeats, and † on rows the machine's load made unsteady), the ratio to the
"torch" backend, peak memory of one forward and of one forward+backward call (CUDA and
CPU, see bench.timing.peak_memory), the largest difference from the "torch" output (checked
before timing) and, on CUDA, the forward's achieved bandwidth as a fraction of a
device-to-device copy of the same number of bytes measured in the same run. A backend that
fails (out of memory, say) gets a row saying so and the others go on; with ``--out`` the table
is rewritten after each length, so a run stopped part way keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import platform

import torch

from bench.cases import CASES, UsageError
from bench.shapes import default_shape
from bench.timing import copy_bandwidth, peak_memory, time_stats

REFERENCE_MAX_L = 2048  # the O(L^2) references are skipped beyond this length
# ops whose reference is a loop of O(L) steps (a scan) keep it longer
REFERENCE_MAX_L_BY_OP = {"linear_scan": 16384, "s5": 16384, "selective_scan": 4096, "mamba": 4096,
                         "selective_scan_2d": 1024, "companion_kernel": 4096,
                         "selective_state_update": 64}  # its reference loops over channels at every step


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def autograd_leaves(out: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors whose gradients a backward from ``out`` accumulates."""
    leaves, seen, stack = [], {}, [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        # Hold each node visited: autograd makes its Python objects on demand, and a freed
        # one's id can come back as the next node's, which would then be skipped.
        seen[id(node)] = node
        if hasattr(node, "variable"):  # AccumulateGrad
            leaves.append(node.variable)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def forward_backward(run):
    """``run()`` and a backward of a fixed random gradient of its output, as a training step
    pays for them: the leaves' gradients are dropped before each call (set to None, as
    ``zero_grad`` does), so no call adds into the last one's."""
    state = {}

    def call():
        for leaf in state.get("leaves", ()):
            leaf.grad = None
        out = run()
        if "grad" not in state:
            state["grad"] = torch.randn_like(out)
            state["leaves"] = autograd_leaves(out)
        out.backward(state["grad"])

    return call


def is_reference(backend: str) -> bool:
    """Our sequential reference, or a peer's (e.g. mamba_ssm's selective_scan_ref)."""
    return backend == "reference" or backend.endswith("_ref")


def relative_difference(out: torch.Tensor, expected: torch.Tensor) -> float:
    """max |out - expected| / max |expected| (in float64); inf for a shape mismatch."""
    if out.shape != expected.shape:
        return float("inf")
    out, expected = out.detach().double(), expected.detach().double()
    scale = expected.abs().max().clamp_min(torch.finfo(torch.float64).tiny) if expected.numel() else 1.0
    return float((out - expected).abs().max() / scale) if out.numel() else 0.0


def measure_run(case, backend: str, run, expected, device: torch.device, repeats: int, copies: dict) -> dict:
    """One row: the output check against ``expected`` (the torch output), then the timings,
    peaks and bandwidth; a failure becomes the row's ``error``."""
    label = f"{backend} (interpreter)" if backend == "triton" and device.type == "cpu" else backend
    row = dict(op=case.name, shape=case.shape, backend=label)
    try:
        with torch.no_grad():
            out = run()
        if expected is not None and backend not in case.independent:
            row["max_rel_diff_vs_torch"] = relative_difference(out, expected)
        del out
        fwd_stats = time_stats(run, device, repeats=repeats)
        fwd = fwd_stats["median"]
        row.update(forward_s=fwd, forward_min_s=fwd_stats["min"], forward_max_s=fwd_stats["max"],
                   peak_bytes=peak_memory(run, device))
        if not case.forward_only:
            fb_stats = time_stats(forward_backward(run), device, repeats=repeats)
            row.update(forward_backward_s=fb_stats["median"], forward_backward_min_s=fb_stats["min"],
                       forward_backward_max_s=fb_stats["max"],
                       peak_bytes_forward_backward=peak_memory(forward_backward(run), device))
        if device.type == "cuda":
            size = max(4, case.ideal_bytes // 2)  # a copy of this many bytes reads and writes ideal_bytes
            if size not in copies:
                copies[size] = copy_bandwidth(device, size)
            row["bandwidth_fraction"] = case.ideal_bytes / fwd / copies[size]
    except Exception as err:  # out of memory, a kernel that does not compile, ...: report it, go on
        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def measure(args: argparse.Namespace, on_length=None) -> dict:
    """Every backend (and peer) of ``args.op`` at each length; ``on_length(result)`` is called
    with the rows so far after each length."""
    device = torch.device(args.device)
    result = dict(device=device_name(device), date=datetime.date.today().isoformat(), torch=torch.__version__,
                  copy_bytes_per_s=copy_bandwidth(device) if device.type == "cuda" else None, rows=[])
    copies = {}
    for L in args.lengths:
        cap = REFERENCE_MAX_L_BY_OP.get(args.op, REFERENCE_MAX_L)
        backends = [b for b in args.backends if b != "reference" or L <= cap]
        case = CASES[args.op](args.batch, args.channels, args.state, L, device=device, backends=backends,
                              peers={"s4": args.peer_s4, "spacetime": args.peer_spacetime,
                                     "mamba_ssm": args.peer_mamba_ssm})
        expected = None
        if "torch" in case.runs:
            try:
                with torch.no_grad():
                    expected = case.runs["torch"]()
            except Exception:  # its own row reports the failure
                expected = None
        for backend, run in case.runs.items():
            if is_reference(backend) and L > cap:  # a peer's Python loop, as slow as ours
                continue
            result["rows"].append(measure_run(case, backend, run, expected, device, args.repeats, copies))
        del expected, case
        if on_length is not None:
            on_length(result)
    return result


HEADER = ("| op | shape | backend | fwd ms (min–max) | fwd+bwd ms (min–max) | fwd time / torch | fwd peak MiB "
          "| fwd+bwd peak MiB | max rel. diff vs torch | fwd % of copy BW |")
UNSTEADY = ("†: forward+backward timed faster than the forward alone, or a spread (max/min) above 1.5: the "
            "machine was busy while this row was timed; rerun it before reading the ratios.")
PEAK_NOTE = ("peak MiB: the most memory held at once by tensors the call allocated, above what was "
             "allocated when it started (one call after the timed ones; returned outputs count; fwd+bwd "
             "drops the gradients first, as zero_grad does, so it counts them). CUDA: torch.cuda.max_memory_allocated; CPU: allocation and "
             "free events of torch's CPU allocator, excluding memory outside it such as FFT/BLAS "
             "workspaces. Not the resident set. max rel. diff vs torch: max |out - torch out| / max |torch out| "
             "of one forward, checked before timing (- for a peer with parameters of its own). fwd % of copy "
             "BW (CUDA): the bytes an ideal forward moves over its time, as a fraction of a device-to-device "
             "copy of as many bytes timed in the same run.")


def mebibytes(n_bytes: int | None) -> str:
    return f"{n_bytes / 2**20:.1f}" if n_bytes is not None else "-"


def milliseconds(row: dict, what: str) -> str:
    """The median in ms, with the (min–max) of the repeats when the row has them ("-" for a
    timing the row does not have: forward+backward of an inference op)."""
    if f"{what}_s" not in row:
        return "-"
    text = f"{1e3 * row[f'{what}_s']:.2f}"
    if f"{what}_min_s" in row:
        text += f" ({1e3 * row[f'{what}_min_s']:.2f}–{1e3 * row[f'{what}_max_s']:.2f})"
    return text


def unsteady(row: dict, spread: float = 1.5) -> bool:
    """Timings that cannot all be right: forward+backward faster than the forward, or repeats
    that differ by more than ``spread``×."""
    if row.get("forward_backward_s", math.inf) < row["forward_s"]:
        return True
    return any(row.get(f"{w}_min_s") and row[f"{w}_max_s"] > spread * row[f"{w}_min_s"]
               for w in ("forward", "forward_backward"))


def markdown(result: dict) -> str:
    torch_time = {r["shape"]: r["forward_s"] for r in result["rows"] if r["backend"] == "torch" and "forward_s" in r}
    lines = [f"device: {result['device']}, torch {result['torch']}, {result['date']}", "",
             HEADER, "|---" * HEADER.count(" | ") + "|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['shape']} | {r['backend']} | failed: {r['error'].replace('|', '/')} "
                         "| - | - | - | - | - | - |")
            continue
        ratio = r["forward_s"] / torch_time[r["shape"]] if r["shape"] in torch_time else None
        peak = mebibytes(r.get("peak_bytes"))
        peak_fb = mebibytes(r.get("peak_bytes_forward_backward"))
        bw = f"{100 * r['bandwidth_fraction']:.1f}" if r.get("bandwidth_fraction") is not None else "-"
        diff = f"{r['max_rel_diff_vs_torch']:.1e}" if r.get("max_rel_diff_vs_torch") is not None else "-"
        ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
        mark = "†" if unsteady(r) else ""
        lines.append(f"| {r['op']} | {r['shape']} | {r['backend']}{mark} | {milliseconds(r, 'forward')} | "
                     f"{milliseconds(r, 'forward_backward')} | {ratio_text} | {peak} | {peak_fb} | {diff} | {bw} |")
    lines += ["", PEAK_NOTE]
    if any(unsteady(r) for r in result["rows"] if "error" not in r):
        lines += ["", UNSTEADY]
    return "\n".join(lines)


def fill_default_shape(args: argparse.Namespace) -> None:
    """Give each of --lengths, --batch, --channels, --state that was not passed the op's
    default for the device (bench/shapes.py), and say which were filled in."""
    filled = []
    for key, value in zip(("lengths", "batch", "channels", "state"),
                          default_shape(args.op, torch.device(args.device).type)):
        if getattr(args, key) is None:
            setattr(args, key, value)
            filled.append(f"--{key} {' '.join(map(str, value)) if key == 'lengths' else value}")
    if filled:
        print(f"{args.op} on {args.device}, default shape: {' '.join(filled)}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=sorted(CASES), default="fftconv")
    sized = "default: the op's shape for the device, in bench/shapes.py"
    parser.add_argument("--lengths", type=int, nargs="+", help=sized)
    parser.add_argument("--backends", nargs="+", default=["torch", "reference"])
    parser.add_argument("--batch", type=int, help=sized)
    parser.add_argument("--channels", type=int, help=f"H, the channels or kernel sets ({sized})")
    parser.add_argument("--state", type=int, help=f"N, the state size or modes ({sized})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peer-s4", metavar="PATH", help="a state-spaces/s4 checkout to time beside ours")
    parser.add_argument("--peer-spacetime", metavar="PATH",
                        help="a HazyResearch/spacetime checkout (companion_kernel: its krylov functions)")
    parser.add_argument("--peer-mamba-ssm", metavar="PATH",
                        help="a state-spaces/mamba checkout (selective_scan: its CUDA kernel where built, else its "
                             "PyTorch reference); an installed mamba_ssm is used without it")
    parser.add_argument("--out", type=pathlib.Path, help="write the JSON result here (and .md beside it)")
    args = parser.parse_args(argv)
    fill_default_shape(args)

    def save(result: dict) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result) + "\n")

    try:
        result = measure(args, on_length=save if args.out else None)
    except (UsageError, FileNotFoundError) as err:  # the op's device, a peer checkout without its files
        parser.exit(2, f"python -m bench: {err}\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
