"""Time ops and layers across sequence lengths, backends side by side in one process.

    python -m bench --op fftconv --lengths 1024 4096 16384 --out bench/results/cpu.json
    python -m bench --op s4d_kernel --peer-s4 ~/src/s4     # beside state-spaces/s4's S4DKernel
    python -m bench --op companion_kernel --channels 128 --state 64 --peer-spacetime ~/src/spacetime

Prints a Markdown table: median forward and forward+backward times per backend, the ratio
to the "torch" backend, peak memory of one forward and of one forward+backward call (CUDA and
CPU, see bench.timing.peak_memory) and, on CUDA, achieved bandwidth as a fraction of a
device-to-device copy measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform

import torch

from bench.cases import CASES
from bench.timing import copy_bandwidth, median_time, peak_memory

REFERENCE_MAX_L = 2048  # the O(L^2) references are skipped beyond this length
# ops whose reference is a loop of O(L) steps (a scan) keep it longer
REFERENCE_MAX_L_BY_OP = {"linear_scan": 16384, "s5": 16384, "selective_scan": 4096, "mamba": 4096,
                         "selective_scan_2d": 1024, "companion_kernel": 4096}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def forward_backward(run):
    def call():
        out = run()
        out.float().square().sum().backward()

    return call


def measure(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    copy = copy_bandwidth(device) if device.type == "cuda" else None
    rows = []
    for L in args.lengths:
        cap = REFERENCE_MAX_L_BY_OP.get(args.op, REFERENCE_MAX_L)
        backends = [b for b in args.backends if b != "reference" or L <= cap]
        case = CASES[args.op](args.batch, args.channels, args.state, L, device=device, backends=backends,
                              peers={"s4": args.peer_s4, "spacetime": args.peer_spacetime,
                                     "mamba_ssm": args.peer_mamba_ssm})
        for backend, run in case.runs.items():
            fwd = median_time(run, device, repeats=args.repeats)
            fwd_bwd = median_time(forward_backward(run), device, repeats=args.repeats)
            rows.append(dict(op=case.name, shape=case.shape, backend=backend, forward_s=fwd,
                             forward_backward_s=fwd_bwd, peak_bytes=peak_memory(run, device),
                             peak_bytes_forward_backward=peak_memory(forward_backward(run), device),
                             bandwidth_fraction=(case.ideal_bytes / fwd / copy) if copy else None))
    return dict(device=device_name(device), date=datetime.date.today().isoformat(),
                torch=torch.__version__, copy_bytes_per_s=copy, rows=rows)


HEADER = ("| op | shape | backend | fwd ms | fwd+bwd ms | fwd time / torch | fwd peak MiB | fwd+bwd peak MiB "
          "| % of copy BW |")
PEAK_NOTE = ("peak MiB: the most memory held at once by tensors the call allocated, above what was "
             "allocated when it started (one call after the timed ones, so parameter gradients already "
             "exist; returned outputs count). CUDA: torch.cuda.max_memory_allocated; CPU: allocation and "
             "free events of torch's CPU allocator, excluding memory outside it such as FFT/BLAS "
             "workspaces. Not the resident set.")


def mebibytes(n_bytes: int | None) -> str:
    return f"{n_bytes / 2**20:.1f}" if n_bytes is not None else "-"


def markdown(result: dict) -> str:
    torch_time = {r["shape"]: r["forward_s"] for r in result["rows"] if r["backend"] == "torch"}
    lines = [f"device: {result['device']}, torch {result['torch']}, {result['date']}", "",
             HEADER, "|---" * HEADER.count(" | ") + "|---|"]
    for r in result["rows"]:
        ratio = r["forward_s"] / torch_time[r["shape"]] if r["shape"] in torch_time else None
        peak = mebibytes(r.get("peak_bytes"))
        peak_fb = mebibytes(r.get("peak_bytes_forward_backward"))
        bw = f"{100 * r['bandwidth_fraction']:.1f}" if r["bandwidth_fraction"] is not None else "-"
        ratio_text = f"{ratio:.2f}x" if ratio is not None else "-"
        lines.append(f"| {r['op']} | {r['shape']} | {r['backend']} | {1e3 * r['forward_s']:.2f} | "
                     f"{1e3 * r['forward_backward_s']:.2f} | {ratio_text} | {peak} | {peak_fb} | {bw} |")
    lines += ["", PEAK_NOTE]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=sorted(CASES), default="fftconv")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--backends", nargs="+", default=["torch", "reference"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--state", type=int, default=32, help="modes N (complex)")
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
    result = measure(args)
    table = markdown(result)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
