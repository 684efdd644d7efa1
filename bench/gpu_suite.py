"""Everything that needs a GPU, in one command: the tests of what wraps every Triton launch
(device guard, NaN propagation, second derivatives, torch.compile) on the GPU, the CUDA-only
tests of the kernels (compiled Triton at larger shapes, not the interpreter), then the benchmark table of every op on the
GPU, each written to ``<out>/<device>-<date>-<op>.{json,md}`` beside a summary, and with
``--all-triton-tests`` every Triton test of the suite (``pytest tests -k triton``) compiled.

    python -m bench.gpu_suite --out bench/results
    python -m bench.gpu_suite --ops selective_scan mamba --peer-mamba-ssm ~/src/mamba --budget-s 400

Each step runs in its own process with a timeout, so a hang or a crash in one op does not
lose the others; steps stop being started once ``--budget-s`` seconds have passed. The
summary (``<device>-<date>-gpu-suite.md``, rewritten after each step) lists each step, its
exit status and its time. The test steps run in ``--test-workers`` pytest-xdist processes
where pytest-xdist is installed. Shapes (``bench/shapes.py``'s ``GPU_SHAPES``) are
Mamba/S4-sized and meant to keep the suite to a few minutes on an H100-class GPU; its time
there has not been measured yet.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import time

from bench.shapes import GPU_SHAPES

ROOT = pathlib.Path(__file__).resolve().parents[1]


def device_slug() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).lower()
    match = re.search(r"(h100|h200|a100|l40s?|a10g?|v100|t4|rtx ?\d+)", name)
    return (match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", name).strip("-")).replace(" ", "")


def step(name: str, command: list[str], timeout: float, log: pathlib.Path) -> dict:
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        rc = "timeout"
        stdout, stderr = (t.decode() if isinstance(t, bytes) else (t or "") for t in (err.stdout, err.stderr))
    seconds = time.perf_counter() - start
    log.write_text(stdout + "\n--- stderr ---\n" + stderr)
    lines = [line for line in stdout.splitlines() if line.strip() and not line.startswith("peak MiB")]
    if rc != 0:  # the error, not the last table row
        lines += [line for line in stderr.splitlines() if line.strip() and not line.startswith("USDT:")][-1:]
    tail = lines[-1:] or [""]
    print(f"[{name}] rc={rc} in {seconds:.0f} s: {tail[0][:160]}", flush=True)
    shown = " ".join(["python" if command[0] == sys.executable else command[0], *command[1:]])
    shown = shown.replace(f"{ROOT}{os.sep}", "")
    return {"name": name, "rc": rc, "seconds": seconds, "command": shown, "last_line": tail[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    parser.add_argument("--ops", nargs="+", default=list(GPU_SHAPES), choices=list(GPU_SHAPES))
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    parser.add_argument("--all-triton-tests", action="store_true",
                        help="after the benchmarks, also run every Triton test (pytest tests -k triton, the "
                             "interpreter's tests in CI) compiled on the GPU: minutes of compilation")
    parser.add_argument("--test-timeout-s", type=float, default=180)
    parser.add_argument("--test-workers", type=int, default=8,
                        help="pytest-xdist worker processes for the test steps (0: in one process); most of "
                             "their time is compiling kernels, which the workers spread over the CPU cores")
    parser.add_argument("--op-timeout-s", type=float, default=120)
    parser.add_argument("--budget-s", type=float, default=480, help="start no new step after this many seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", help="replace every op's lengths (a quick check)")
    parser.add_argument("--backends", nargs="+", default=["triton", "torch", "reference"])
    parser.add_argument("--peer-mamba-ssm", metavar="PATH", help="a state-spaces/mamba checkout (see python -m bench)")
    parser.add_argument("--peer-s4", metavar="PATH", help="a state-spaces/s4 checkout")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run the steps without a GPU (a dry run of the suite; the tables are CPU timings)")
    args = parser.parse_args(argv)
    import torch

    if not (torch.cuda.is_available() or args.allow_cpu):
        parser.exit(2, "python -m bench.gpu_suite: no CUDA GPU is visible, so there is nothing for it to measure; "
                       "python -m bench --op <op> times the CPU paths (--allow-cpu runs the suite anyway, as a "
                       "dry run)\n")
    # the steps run in ROOT: paths given relative to here must not change meaning there
    args.out = args.out.expanduser().resolve()
    for key in ("peer_mamba_ssm", "peer_s4"):
        if getattr(args, key):
            setattr(args, key, str(pathlib.Path(getattr(args, key)).expanduser().resolve()))

    prefix = f"{device_slug()}-{datetime.date.today().isoformat()}"
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / f"{prefix}-gpu-suite-logs"
    logs.mkdir(exist_ok=True)
    summary = args.out / f"{prefix}-gpu-suite.md"
    start = time.perf_counter()
    results = []

    def record(result: dict) -> None:
        """Add a step's result and rewrite the summary, so a suite stopped part way (a time
        limit, a lost machine) keeps what it ran."""
        results.append(result)
        summary.write_text(summary_text(prefix, results) + "\n")

    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if args.test_workers > 0 and importlib.util.find_spec("xdist") is not None:
        pytest += ["-n", str(args.test_workers)]
    if not args.no_tests:  # what wraps every launch (device guard, NaN, second derivatives, torch.compile)
        wrappers = [*pytest, "tests/kernels/test_launch.py", "tests/kernels/test_second_derivatives.py",
                    "tests/test_compile.py", "-k", "launch or nan or second or triton"]
        record(step("launch wrappers on the GPU", wrappers, args.test_timeout_s, logs / "tests-wrappers.txt"))
    if not args.no_tests:  # the CUDA-only tests: larger shapes against the torch path, dispatch
        cuda_tests = [*pytest, "--continue-on-collection-errors", "tests/kernels", "-k", "cuda"]
        record(step("cuda tests (tests/kernels -k cuda)", cuda_tests, args.test_timeout_s, logs / "tests-cuda.txt"))
    for op in args.ops:
        if time.perf_counter() - start > args.budget_s:
            record({"name": op, "rc": "not started (budget)", "seconds": 0.0, "command": "", "last_line": ""})
            continue
        lengths, batch, channels, state = GPU_SHAPES[op]
        command = [sys.executable, "-m", "bench", "--op", op, "--lengths", *map(str, args.lengths or lengths),
                   "--batch", str(batch), "--channels", str(channels), "--state", str(state),
                   "--backends", *args.backends, "--repeats", str(args.repeats),
                   "--out", str(args.out / f"{prefix}-{op}.json")]
        if op == "selective_scan" and args.peer_mamba_ssm:
            command += ["--peer-mamba-ssm", args.peer_mamba_ssm]
        if op == "s4d_kernel" and args.peer_s4:
            command += ["--peer-s4", args.peer_s4]
        record(step(op, command, args.op_timeout_s, logs / f"{op}.txt"))
    all_triton = [*pytest, "tests", "-k", "triton"]
    if args.all_triton_tests and time.perf_counter() - start < args.budget_s:
        remaining = max(60.0, args.budget_s + args.op_timeout_s - (time.perf_counter() - start))
        record(step("all Triton tests, compiled (tests -k triton)", all_triton, remaining,
                    logs / "tests-all-triton.txt"))
    elif args.all_triton_tests:
        record({"name": "all Triton tests, compiled (tests -k triton)", "rc": "not started (budget)",
                "seconds": 0.0, "command": "", "last_line": ""})
    print(summary_text(prefix, results))


def summary_text(prefix: str, results: list[dict]) -> str:
    """The summary table: each step's exit status, time and last line, the device and
    versions, then the commands."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (a dry run)"
    try:
        import triton

        versions = f"torch {torch.__version__}, triton {triton.__version__}"
    except ImportError:
        versions = f"torch {torch.__version__}, no triton"
    lines = [f"# GPU suite on {prefix}", "", f"device: {device}, {versions}", "",
             "| step | exit | seconds | last line |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['rc']} | {r['seconds']:.0f} | {r['last_line'][:120].replace('|', '/')} |"
              for r in results]
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in results if r["command"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
