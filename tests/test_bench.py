"""The benchmark entry point runs end to end on tiny shapes and writes its table and JSON."""

import json
import pathlib
import os
import sys

import pytest
import torch
from devices import TRITON_DEVICE

from bench.__main__ import main


@pytest.mark.parametrize("op", ["vandermonde", "fftconv", "s4d", "s4d_kernel", "linear_scan", "s5", "selective_scan", "mamba",
                                "selective_scan_2d", "selective_scan_2d_tiles", "cross_scan", "companion_kernel"])
def test_bench_writes_table_and_json(op, tmp_path):
    out = tmp_path / "result.json"
    # the tile sweep runs Triton kernels, on TRITON_DEVICE (the GPU, or the interpreter on CPU,
    # hence one channel, one state); the other ops time their torch and reference backends on CPU
    tiles = op == "selective_scan_2d_tiles"
    channels, state = ("1", "1") if tiles else ("3", "4")
    device = TRITON_DEVICE if tiles else "cpu"
    result = main(["--op", op, "--lengths", "8", "17", "--channels", channels, "--batch", "2",
                   "--state", state, "--repeats", "1", "--device", device, "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and len(result["rows"]) >= 2
    assert not [r for r in result["rows"] if "error" in r]
    assert all(r["forward_s"] > 0 and r["forward_backward_s"] > 0 for r in result["rows"])
    assert all(r["peak_bytes"] > 0 and r["peak_bytes_forward_backward"] > 0 for r in result["rows"])
    if tiles:  # the torch path, then the Triton kernel at the launcher's and at each benchmarked tile shape
        assert [r["backend"] for r in result["rows"][:2]] == ["torch", "triton (launcher's tiles)"]
    else:
        assert {r["backend"] for r in result["rows"]} >= {"torch", "reference"}
    checked = [r for r in result["rows"] if "max_rel_diff_vs_torch" in r]
    assert len(checked) >= len(result["rows"]) - 2 and all(r["max_rel_diff_vs_torch"] < 1e-3 for r in checked)
    table = out.with_suffix(".md").read_text()
    assert "| fwd ms (min–max) |" in table and "| fwd peak MiB | fwd+bwd peak MiB | max rel. diff vs torch |" in table


def test_a_failing_backend_gets_a_row_and_the_others_go_on(tmp_path, monkeypatch):
    """An out-of-memory error (say) in one backend at one length loses only that row, and the
    table on disk is rewritten after each length."""
    import bench.__main__ as entry

    original = entry.CASES["fftconv"]

    def with_a_broken_peer(*args, **kwargs):
        case = original(*args, **kwargs)
        case.runs["broken peer"] = lambda: (_ for _ in ()).throw(RuntimeError("CUDA out of memory | really"))
        return case

    monkeypatch.setitem(entry.CASES, "fftconv", with_a_broken_peer)
    saved = []
    monkeypatch.setattr(entry, "markdown", lambda result, _md=entry.markdown: saved.append(len(result["rows"])) or _md(result))
    out = tmp_path / "r.json"
    result = main(["--op", "fftconv", "--lengths", "8", "12", "--channels", "2", "--batch", "1", "--repeats", "1",
                   "--device", "cpu", "--backends", "torch", "--out", str(out)])
    broken = [r for r in result["rows"] if r["backend"] == "broken peer"]
    assert len(broken) == 2 and all(r["error"].startswith("RuntimeError: CUDA out of memory") for r in broken)
    assert [r["backend"] for r in result["rows"]].count("torch") == 2
    assert saved[:2] == [2, 4]  # written after the first length, then after the second
    assert "| broken peer | failed: RuntimeError: CUDA out of memory / really |" in out.with_suffix(".md").read_text()


def test_relative_difference_and_reference_names():
    from bench.__main__ import is_reference, relative_difference

    x = 100 * torch.randn(4, 3)
    assert relative_difference(2 * x, x) == pytest.approx(1.0)  # relative to max |x|, not absolute
    assert relative_difference(torch.zeros(2, 3), torch.zeros(3, 2)) == float("inf")  # a layout mix-up shows
    assert relative_difference(torch.zeros(0, 3), torch.zeros(0, 3)) == 0.0
    assert is_reference("reference") and is_reference("mamba_ssm selective_scan_ref") and not is_reference("torch")


def test_error_rows_have_every_column_and_peer_references_are_capped(monkeypatch):
    import bench.__main__ as entry

    result = {"device": "cpu", "torch": "x", "date": "d", "rows": [
        dict(op="o", shape="s", backend="b", error="RuntimeError: boom")]}
    row = entry.markdown(result).splitlines()[4]
    assert row.count("|") == entry.HEADER.count("|")
    original = entry.CASES["fftconv"]

    def with_a_peer_reference(*args, **kwargs):
        case = original(*args, **kwargs)
        case.runs["peer selective_scan_ref"] = case.runs["torch"]
        return case

    monkeypatch.setitem(entry.CASES, "fftconv", with_a_peer_reference)
    monkeypatch.setitem(entry.REFERENCE_MAX_L_BY_OP, "fftconv", 10)
    result = main(["--op", "fftconv", "--lengths", "8", "12", "--channels", "2", "--batch", "1", "--repeats", "1",
                   "--device", "cpu", "--backends", "torch"])
    assert [r["backend"] for r in result["rows"]] == ["torch", "peer selective_scan_ref", "torch"]


def test_the_s4d_layer_case_runs_each_backend_on_its_own_path(monkeypatch):
    import kernels._dispatch as dispatch
    from bench.cases import s4d_case

    seen = []
    select = dispatch.select_backend
    monkeypatch.setattr(dispatch, "select_backend", lambda op, impls, backend, *a: seen.append(
        (op, backend or dispatch.forced_backend())) or select(op, impls, backend, *a))
    for module in ("kernels.vandermonde", "kernels.fftconv"):
        monkeypatch.setattr(sys.modules[module], "select_backend", dispatch.select_backend)
    case = s4d_case(1, 2, 4, 8, device=torch.device("cpu"), backends=["torch", "reference"], peers={})
    for name, run in case.runs.items():
        seen.clear()
        run()
        assert {backend for _, backend in seen} == {name}, (name, seen)


def test_forward_backward_starts_each_call_from_no_gradients():
    from bench.__main__ import autograd_leaves, forward_backward

    x = torch.randn(5, requires_grad=True)
    w = torch.randn(5, requires_grad=True)
    step = forward_backward(lambda: (x * w).exp())
    step()
    first = x.grad.clone()
    step()
    torch.testing.assert_close(x.grad, first)  # not 2 * first
    assert {id(t) for t in autograd_leaves((x * w).sum())} == {id(x), id(w)}


def test_autograd_leaves_finds_every_leaf_of_a_wide_graph():
    # Under torch 2.11 a graph node's Python object is freed once nothing holds it, and its id
    # comes back as another node's: a walk that kept only the ids it had seen found 0 of 40.
    from bench.__main__ import autograd_leaves

    weights = [torch.randn(3, requires_grad=True) for _ in range(40)]
    out = sum((w.exp() * i).tanh() for i, w in enumerate(weights))
    found = autograd_leaves(out)
    assert sorted(map(id, found)) == sorted(map(id, weights))


def test_peer_checkout_path_is_checked(tmp_path):
    from bench.peers import mamba_ssm_selective_scan, s4_minimal_kernel, spacetime_companion_kernels

    with pytest.raises(FileNotFoundError, match="models/s4/s4d.py"):
        s4_minimal_kernel(tmp_path, 4, 8, "cpu")
    with pytest.raises(FileNotFoundError, match="krylov.py"):
        spacetime_companion_kernels(tmp_path)
    with pytest.raises(FileNotFoundError, match="selective_scan_interface.py"):
        mamba_ssm_selective_scan(tmp_path, torch.device("cpu"))


def test_mamba_ssm_peer_loads_only_the_interface_module(tmp_path, monkeypatch):
    from bench.peers import mamba_ssm_selective_scan

    ops = tmp_path / "mamba_ssm" / "ops"
    ops.mkdir(parents=True)
    (tmp_path / "mamba_ssm" / "__init__.py").write_text("raise ImportError('the package init must not run')\n")
    (tmp_path / "built_in_place_ext.py").write_text("BUILT = True\n")  # as selective_scan_cuda*.so is
    (ops / "selective_scan_interface.py").write_text(
        "import built_in_place_ext\n"
        "selective_scan_cuda = None\n"
        "def selective_scan_fn(*args, **kwargs):\n    raise AssertionError('no CUDA here')\n"
        "def selective_scan_ref(u, *args, **kwargs):\n    return 2 * u\n"
    )
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    name, fn = mamba_ssm_selective_scan(tmp_path, torch.device("cpu"))  # the checkout root is importable
    assert name == "mamba_ssm selective_scan_ref" and torch.equal(fn(torch.ones(2)), torch.full((2,), 2.0))
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        monkeypatch.delitem(sys.modules, name)


ALLOW_CPU = [] if torch.cuda.is_available() else ["--allow-cpu"]


def record_suite_steps(monkeypatch) -> dict[str, list[str]]:
    """Replace the GPU suite's step runner by one that records each step's command by the
    step's name, runs nothing and reports success."""
    import bench.gpu_suite as gpu_suite

    commands = {}

    def step(name, command, *args):
        commands[name] = command
        return {"name": name, "rc": 0, "seconds": 0.0, "command": "", "last_line": ""}

    monkeypatch.setattr(gpu_suite, "step", step)
    return commands


def test_gpu_suite_without_a_gpu_stops_and_says_what_to_run_instead(tmp_path, capsys, monkeypatch):
    from bench.gpu_suite import main as suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        suite(["--out", str(tmp_path), "--ops", "cross_scan", "--no-tests"])
    assert stop.value.code == 2 and "no CUDA GPU is visible" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_gpu_suite_runs_each_step_and_writes_a_summary(tmp_path):
    from bench.gpu_suite import main as suite

    suite(["--out", str(tmp_path), "--ops", "cross_scan", "--no-tests", "--lengths", "16",
           "--backends", "torch", "--repeats", "1", *ALLOW_CPU])
    summaries = list(tmp_path.glob("*-gpu-suite.md"))
    assert len(summaries) == 1
    text = summaries[0].read_text()
    assert "| cross_scan | 0 |" in text and "--op cross_scan --lengths 16" in text
    rows = json.loads(next(tmp_path.glob("*-cross_scan.json")).read_text())["rows"]
    assert [r["backend"] for r in rows] == ["torch"]


def test_gpu_suite_reads_relative_paths_from_where_it_is_called(tmp_path, monkeypatch):
    import bench.gpu_suite as gpu_suite

    monkeypatch.chdir(tmp_path)
    gpu_suite.main(["--out", "here", "--ops", "cross_scan", "--no-tests", "--lengths", "16", "--backends", "torch",
                    "--repeats", "1", "--all-triton-tests", "--budget-s", "0", *ALLOW_CPU])
    summary = next((tmp_path / "here").glob("*-gpu-suite.md")).read_text()
    assert "| all Triton tests, compiled (tests -k triton) | not started (budget) |" in summary
    commands = record_suite_steps(monkeypatch)
    gpu_suite.main(["--out", "there", "--ops", "selective_scan", "s4d_kernel", "--no-tests", "--lengths", "16",
                    "--peer-mamba-ssm", "mamba", "--peer-s4", "s4", *ALLOW_CPU])  # the steps run in the repository root
    flat = [arg for command in commands.values() for arg in command]
    assert str(tmp_path / "mamba") in flat and str(tmp_path / "s4") in flat
    assert any(arg.startswith(str(tmp_path / "there")) for arg in flat)


MiB = 2**20


class _TemporaryInBackward(torch.autograd.Function):
    """Identity whose backward holds a 128 MiB temporary, to check backward is seen."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        scratch = torch.empty(32 * MiB)  # float32: 128 MiB
        return grad + scratch[: grad.numel()].view_as(grad).zero_()


def test_cpu_peak_memory_counts_live_bytes():
    from bench.timing import peak_memory

    cpu = torch.device("cpu")
    n = 16 * MiB  # float32 elements in 64 MiB

    def one():
        a = torch.empty(n)
        del a

    def two_at_once():
        a, b = torch.empty(n), torch.empty(n)
        del a, b

    def one_after_another():
        for _ in range(3):
            a = torch.empty(n)
            del a

    x = torch.zeros(4, requires_grad=True)
    big = torch.zeros(n, requires_grad=True)
    big.grad = torch.zeros(n)  # accumulated into, not allocated, by the backward below

    def custom_backward():
        _TemporaryInBackward.apply(x).sum().backward()

    def builtin_backward():
        big.exp().sum().backward()  # exp(big) is saved; backward allocates its product with the grad

    expected = [(one, 64), (two_at_once, 128), (one_after_another, 64), (custom_backward, 128),
                (builtin_backward, 128)]
    for fn, mib in expected:
        assert peak_memory(fn, cpu) == pytest.approx(mib * MiB, rel=0.03), fn.__name__


@pytest.mark.parametrize("L", [1, 600])
def test_every_2d_tiling_benchmarked_computes_the_same_scan(L):
    """The tile-shape sweep times the same function at each tiling: every run agrees with torch
    (on TRITON_DEVICE, as the Triton runs need)."""
    from bench.cases import selective_scan_2d_tiles_case

    torch.manual_seed(0)
    case = selective_scan_2d_tiles_case(1, 1, 2, L, device=torch.device(TRITON_DEVICE), backends=["torch"],
                                        peers={})
    expected = case.runs.pop("torch")()
    assert len(case.runs) >= 2  # the launcher's choice and at least one override
    for name, run in case.runs.items():
        torch.testing.assert_close(run(), expected, rtol=1e-4, atol=1e-4, msg=name)


def test_rows_show_the_spread_of_the_repeats_and_mark_unsteady_timings():
    from bench.__main__ import markdown, milliseconds, unsteady

    steady = dict(op="fftconv", shape="L=8", backend="torch", forward_s=1e-3, forward_min_s=0.9e-3,
                  forward_max_s=1.1e-3, forward_backward_s=3e-3, forward_backward_min_s=2.9e-3,
                  forward_backward_max_s=3.2e-3)
    assert milliseconds(steady, "forward") == "1.00 (0.90–1.10)" and not unsteady(steady)
    faster_backward = dict(steady, backend="reference", forward_backward_s=0.5e-3, forward_backward_min_s=0.4e-3,
                           forward_backward_max_s=0.6e-3)
    spread = dict(steady, backend="peer", forward_max_s=2e-3)
    assert unsteady(faster_backward) and unsteady(spread)
    table = markdown(dict(device="CPU", torch="x", date="d", rows=[steady, faster_backward, spread]))
    assert "| torch | 1.00 (0.90–1.10) |" in table and "| reference† |" in table and "| peer† |" in table
    assert "machine was busy" in table
    assert "machine was busy" not in markdown(dict(device="CPU", torch="x", date="d", rows=[steady]))


def test_triton_rows_on_cpu_say_they_ran_in_the_interpreter(tmp_path, monkeypatch):
    import bench.__main__ as entry

    original = entry.CASES["fftconv"]

    def with_a_triton_run(*args, **kwargs):
        case = original(*args, **kwargs)
        case.runs["triton"] = case.runs["torch"]  # a stand-in: only the label is checked
        return case

    monkeypatch.setitem(entry.CASES, "fftconv", with_a_triton_run)
    result = main(["--op", "fftconv", "--lengths", "8", "--channels", "2", "--batch", "1", "--repeats", "1",
                   "--device", "cpu", "--backends", "torch"])
    assert {r["backend"] for r in result["rows"]} == {"torch", "triton (interpreter)"}


def test_cpu_peak_memory_keeps_the_profilers_log_lines_off_stderr(capfd):
    from bench.timing import cpu_peak_memory

    assert cpu_peak_memory(lambda: torch.ones(1000)) >= 4000
    assert "profiler_st" not in capfd.readouterr().err


@pytest.mark.parametrize("timing", ["forward", "forward_backward"])
def test_a_spread_in_either_timing_marks_the_row_unsteady(timing):
    """Repeats 2x apart (min 2 ms, max 4 ms) make the row unsteady whichever timing they are in."""
    from bench.__main__ import unsteady

    row = dict(forward_s=1e-3, forward_min_s=1e-3, forward_max_s=1e-3, forward_backward_s=5e-3,
               forward_backward_min_s=5e-3, forward_backward_max_s=5e-3)
    assert not unsteady(row)
    row.update({f"{timing}_s": 3e-3 if timing == "forward" else 6e-3,
                f"{timing}_min_s": 2e-3 if timing == "forward" else 4e-3,
                f"{timing}_max_s": 4e-3 if timing == "forward" else 8e-3})
    assert unsteady(row)


def test_rows_take_median_min_and_max_of_each_timing(monkeypatch):
    """Each row carries the median, min and max of the forward's repeats and of the
    forward+backward's, each from its own timing."""
    import bench.__main__ as entry

    timings = iter([{"median": 2.0, "min": 1.0, "max": 3.0}, {"median": 20.0, "min": 10.0, "max": 30.0}])

    def fake_time_stats(fn, device, repeats):
        fn()
        return next(timings)

    monkeypatch.setattr(entry, "time_stats", fake_time_stats)
    result = main(["--op", "fftconv", "--lengths", "8", "--channels", "2", "--batch", "1", "--repeats", "3",
                   "--device", "cpu", "--backends", "torch"])
    (row,) = result["rows"]
    assert "error" not in row
    assert (row["forward_min_s"], row["forward_s"], row["forward_max_s"]) == (1.0, 2.0, 3.0)
    assert (row["forward_backward_min_s"], row["forward_backward_s"], row["forward_backward_max_s"]) == (10, 20, 30)


def test_measured_rows_have_min_below_median_below_max():
    """On real repeats the spread brackets the median for both timings."""
    result = main(["--op", "fftconv", "--lengths", "8", "--channels", "2", "--batch", "1", "--repeats", "5",
                   "--device", "cpu", "--backends", "torch"])
    for row in result["rows"]:
        for timing in ("forward", "forward_backward"):
            assert 0 < row[f"{timing}_min_s"] <= row[f"{timing}_s"] <= row[f"{timing}_max_s"], (row["backend"], timing)


class _Clock:
    """perf_counter for bench.timing whose time moves only when the timed call says so."""

    def __init__(self, durations):
        self.now, self.durations = 0.0, iter(durations)

    def perf_counter(self):
        return self.now

    def call(self):
        self.now += next(self.durations)


@pytest.mark.parametrize("durations, median", [([0.0, 0.0, 0.0, 0.0, 5.0], 0.0), ([3.0, 3.0, 3.0, 0.0, 1.0], 3.0),
                                               ([4.0, 1.0, 2.0], 2.0)])
def test_time_stats_reports_the_median_of_the_repeats(monkeypatch, durations, median):
    """One slow call moves the max, not the median (a mean would follow it); median_time is
    that median, not the fastest call."""
    import bench.timing as timing

    clock = _Clock([9.0, 9.0] + durations)  # two warm-up calls first
    monkeypatch.setattr(timing, "time", clock)
    stats = timing.time_stats(clock.call, torch.device("cpu"), warmup=2, repeats=len(durations))
    assert stats == {"median": median, "min": min(durations), "max": max(durations)}
    clock = _Clock(durations)
    monkeypatch.setattr(timing, "time", clock)
    assert timing.median_time(clock.call, torch.device("cpu"), warmup=0, repeats=len(durations)) == median


def test_cpu_peak_memory_gives_stderr_back(capfd):
    """Stderr is silenced only while the profiler runs: what is written to it afterwards shows."""
    from bench.timing import cpu_peak_memory

    cpu_peak_memory(lambda: torch.ones(10))
    os.write(2, b"after the profiler\n")
    print("and from python", file=sys.stderr)
    err = capfd.readouterr().err
    assert "after the profiler" in err and "and from python" in err


def test_the_decoding_step_is_timed_forward_only_and_checked_against_torch(tmp_path):
    """selective_state_update is an inference op: its rows time the forward (L decoding steps)
    and leave forward+backward out, in the JSON and as "-" in the table."""
    out = tmp_path / "decode.json"
    result = main(["--op", "selective_state_update", "--lengths", "3", "5", "--channels", "3", "--batch", "2",
                   "--state", "4", "--repeats", "1", "--device", "cpu", "--out", str(out)])
    rows = result["rows"]
    assert {r["backend"] for r in rows} == {"torch", "reference"} and not [r for r in rows if "error" in r]
    assert all(r["forward_s"] > 0 and r["peak_bytes"] >= 0 and "forward_backward_s" not in r for r in rows)
    assert all(r["max_rel_diff_vs_torch"] < 1e-6 for r in rows if r["backend"] == "reference")
    table = out.with_suffix(".md").read_text()
    assert "| selective_state_update | B=2 D=3 N=4 steps=5 | reference | " in table
    assert "†" not in table  # a missing forward+backward is not an unsteady row


def test_gpu_suite_runs_the_launch_wrapper_tests_and_each_file_contributes(tmp_path, monkeypatch):
    """The device guard, NaN, second-derivative and torch.compile tests of the Triton ops only
    mean something compiled on a GPU: the suite runs them, and its -k picks tests of each file."""
    import subprocess
    import sys

    import bench.gpu_suite as gpu_suite

    steps = record_suite_steps(monkeypatch)
    gpu_suite.main(["--out", str(tmp_path), "--ops", "cross_scan", "--lengths", "16", *ALLOW_CPU])
    command = steps["launch wrappers on the GPU"]
    files = [arg for arg in command if arg.endswith(".py")]
    assert len(files) == 3
    root = pathlib.Path(__file__).resolve().parents[1]
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                *files, "-k", command[command.index("-k") + 1]], cwd=root, capture_output=True,
                               text=True, timeout=300).stdout
    for file in files:
        assert f"{file}::" in collected, f"-k selects nothing in {file}"


def test_copy_bandwidth_counts_the_read_and_the_write_of_the_requested_bytes(monkeypatch):
    """A copy of n bytes reads n and writes n: bandwidth = 2 n / seconds, with n the size of
    the tensor actually copied."""
    import bench.timing as timing

    copied = []

    def fake_median_time(fn, device):
        copied.append(fn())  # the copy's destination
        return 0.5

    monkeypatch.setattr(timing, "median_time", fake_median_time)
    n_bytes = 4096
    assert timing.copy_bandwidth(torch.device("cpu"), n_bytes) == pytest.approx(2 * n_bytes / 0.5)
    (dst,) = copied
    assert dst.numel() * dst.element_size() == n_bytes


def test_bandwidth_fraction_is_the_forwards_bytes_per_second_over_a_copy_of_as_many_bytes(monkeypatch):
    """On CUDA a row's bandwidth fraction is (ideal bytes / forward time) / (bandwidth of a copy
    that moves those same bytes, i.e. of ideal_bytes / 2 read and written), the copy measured
    once per size in the run."""
    import bench.__main__ as entry
    from bench.cases import Case

    asked = []

    def fake_copy_bandwidth(device, n_bytes=1 << 28):
        asked.append(n_bytes)
        return 4e9  # bytes moved per second

    monkeypatch.setattr(entry, "copy_bandwidth", fake_copy_bandwidth)
    monkeypatch.setattr(entry, "time_stats", lambda fn, device, repeats: {"median": 1e-6, "min": 1e-6, "max": 1e-6})
    monkeypatch.setattr(entry, "peak_memory", lambda fn, device: 0)
    case = Case("op", "s", {"torch": lambda: torch.zeros(3)}, ideal_bytes=2000, forward_only=True)
    copies = {}
    rows = [entry.measure_run(case, "torch", case.runs["torch"], None, torch.device("cuda"), 1, copies)
            for _ in range(2)]
    for row in rows:
        assert "error" not in row, row
        assert row["bandwidth_fraction"] == pytest.approx((2000 / 1e-6) / 4e9)  # 2e9 B/s of 4e9: 0.5
    assert asked == [1000]  # a copy of 1000 bytes moves 2000; timed once, then reused


def test_cuda_peak_memory_is_the_peak_since_the_call_started_above_what_was_allocated(monkeypatch):
    """The peak is reset before the call (an earlier, larger peak does not count) and what
    was allocated before it is subtracted."""
    import bench.timing as timing

    class Allocator:
        allocated, peak = 100, 10_000  # 100 bytes live from before, a stale peak of an earlier call

        def alloc(self, n):
            self.allocated += n
            self.peak = max(self.peak, self.allocated)

        def reset(self, device=None):
            self.peak = self.allocated

    mem = Allocator()
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", mem.reset)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: mem.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: mem.peak)

    def fn():  # holds 50 + 30 bytes at once, then frees them
        mem.alloc(50)
        mem.alloc(30)
        mem.alloc(-80)

    assert timing.peak_memory(fn, torch.device("cuda")) == 80


def test_the_ratio_column_is_the_rows_forward_time_over_torchs():
    """fwd time / torch: a backend twice as fast as torch reads 0.50x; the bandwidth column is
    the fraction in percent."""
    import bench.__main__ as entry

    rows = [dict(op="o", shape="s", backend="torch", forward_s=2e-3),
            dict(op="o", shape="s", backend="fast", forward_s=1e-3, bandwidth_fraction=0.25)]
    table = entry.markdown({"device": "d", "torch": "x", "date": "t", "rows": rows})
    header = [c.strip() for c in entry.HEADER.strip("|").split("|")]
    cells = {line.split("|")[3].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
             for line in table.splitlines()[4:6]}
    assert cells["torch"][header.index("fwd time / torch")] == "1.00x"
    assert cells["fast"][header.index("fwd time / torch")] == "0.50x"
    assert cells["fast"][header.index("fwd % of copy BW")] == "25.0"


def test_our_reference_is_timed_up_to_and_including_its_length_cap(monkeypatch):
    import bench.__main__ as entry

    monkeypatch.setitem(entry.REFERENCE_MAX_L_BY_OP, "fftconv", 8)
    monkeypatch.setattr(entry, "time_stats", lambda fn, device, repeats: {"median": 1.0, "min": 1.0, "max": 1.0})
    result = main(["--op", "fftconv", "--lengths", "8", "12", "--channels", "2", "--batch", "1", "--repeats", "1",
                   "--device", "cpu", "--backends", "torch", "reference"])
    assert [(r["shape"].split()[-1], r["backend"]) for r in result["rows"]] == [
        ("L=8", "torch"), ("L=8", "reference"), ("L=12", "torch")]


def test_fftconv_ideal_bytes_are_its_inputs_read_and_its_output_written():
    """An ideal FFT convolution reads u (B, H, L) and k (H, L) and writes y (B, H, L) once
    (D's H values left out), in float32."""
    from bench.cases import fftconv_case

    case = fftconv_case(2, 3, 4, 16, device=torch.device("cpu"), backends=["torch"], peers={})
    u, k, _ = case.runs["torch"].args
    y = case.runs["torch"]()
    assert case.ideal_bytes == sum(t.numel() * t.element_size() for t in (u, k, y))


def test_selective_scan_ideal_bytes_read_five_inputs_and_write_the_output():
    """Read u, delta, z (B, D, L) and B, C (B, N, L), write y (B, D, L), all float32."""
    from bench.cases import selective_scan_case

    B, D, N, L = 2, 3, 4, 16
    case = selective_scan_case(B, D, N, L, device=torch.device("cpu"), backends=["torch"], peers={})
    y = case.runs["torch"]()
    assert y.shape == (B, D, L)
    per_channel_tensor, per_state_tensor = B * D * L * 4, B * N * L * 4
    assert case.ideal_bytes == 3 * per_channel_tensor + 2 * per_state_tensor + y.numel() * y.element_size()


def test_the_forward_backward_peak_is_measured_on_a_call_that_runs_backward(monkeypatch):
    """peak_bytes is one forward's and peak_bytes_forward_backward one forward+backward's."""
    import bench.__main__ as entry
    from bench.cases import Case

    x = torch.randn(4, requires_grad=True)
    monkeypatch.setattr(entry, "time_stats", lambda fn, device, repeats: {"median": 1.0, "min": 1.0, "max": 1.0})

    def fake_peak(fn, device):
        x.grad = None
        fn()
        return 0 if x.grad is None else 1  # 1: the call ran a backward

    monkeypatch.setattr(entry, "peak_memory", fake_peak)
    case = Case("op", "s", {"torch": lambda: (x * 2).exp()}, ideal_bytes=16)
    row = entry.measure_run(case, "torch", case.runs["torch"], None, torch.device("cpu"), 1, {})
    assert (row["peak_bytes"], row["peak_bytes_forward_backward"]) == (0, 1)


def test_sizes_not_given_take_the_ops_default_shape_for_the_device(monkeypatch, capsys):
    import bench.__main__ as entry
    from bench.cases import CASES
    from bench.shapes import CPU_SHAPES, GPU_SHAPES, default_shape

    assert set(CPU_SHAPES) == set(GPU_SHAPES) == set(CASES)
    seen = {}
    monkeypatch.setattr(entry, "measure", lambda args, on_length=None: seen.update(vars(args)) or
                        {"device": "-", "torch": "-", "date": "-", "rows": []})
    entry.main(["--op", "selective_scan_2d", "--device", "cpu", "--channels", "5"])
    lengths, batch, _, state = CPU_SHAPES["selective_scan_2d"]
    assert (seen["lengths"], seen["batch"], seen["channels"], seen["state"]) == (lengths, batch, 5, state)
    assert f"default shape: --lengths {' '.join(map(str, lengths))} --batch {batch} --state {state}" in \
        capsys.readouterr().out
    entry.main(["--op", "fftconv", "--device", "cpu", "--lengths", "9", "--batch", "1", "--channels", "2",
                "--state", "3"])
    assert (seen["lengths"], seen["batch"], seen["channels"], seen["state"]) == ([9], 1, 2, 3)
    assert "default shape" not in capsys.readouterr().out
    # a GPU gets the GPU suite's shapes, and the tables are copies: filling one run's args leaves them alone
    lengths, batch, channels, state = default_shape("mamba", "cuda")
    assert [lengths, batch, channels, state] == list(GPU_SHAPES["mamba"]) and lengths is not GPU_SHAPES["mamba"][0]
    assert default_shape("mamba", "cpu") == CPU_SHAPES["mamba"] != GPU_SHAPES["mamba"]


def test_gpu_suite_summary_is_written_after_each_step(tmp_path, monkeypatch):
    """A suite stopped part way (the machine's time limit) keeps the summary of the steps it ran."""
    import bench.gpu_suite as gpu_suite

    def step(name, command, *args):
        if name == "s5":
            raise KeyboardInterrupt  # as a kill would stop it
        return {"name": name, "rc": 0, "seconds": 1.0, "command": " ".join(command[1:4]), "last_line": "ok"}

    monkeypatch.setattr(gpu_suite, "step", step)
    with pytest.raises(KeyboardInterrupt):
        gpu_suite.main(["--out", str(tmp_path), "--ops", "cross_scan", "fftconv", "s5", "--no-tests", *ALLOW_CPU])
    summary = next(tmp_path.glob("*-gpu-suite.md")).read_text()
    assert "| cross_scan | 0 | 1 | ok |" in summary and "| fftconv | 0 | 1 | ok |" in summary
    assert "| s5 |" not in summary and f"torch {torch.__version__}" in summary


@pytest.mark.parametrize("workers", [0, 3])
def test_gpu_suite_spreads_its_test_steps_over_test_workers(tmp_path, monkeypatch, workers):
    import bench.gpu_suite as gpu_suite

    commands = record_suite_steps(monkeypatch)
    gpu_suite.main(["--out", str(tmp_path), "--ops", "cross_scan", "--all-triton-tests", "--test-workers", str(workers),
                    *ALLOW_CPU])
    tests = {name: command for name, command in commands.items() if "pytest" in command}
    assert len(tests) == 3 and "-n" not in commands["cross_scan"]
    for command in tests.values():  # pytest-xdist is in the dev install
        assert (command[command.index("-n") + 1] == str(workers)) if workers else "-n" not in command


def test_an_op_that_cannot_run_here_or_a_wrong_checkout_stops_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    small = ["--lengths", "8", "--batch", "1", "--channels", "2", "--state", "2", "--repeats", "1", "--device", "cpu"]
    for argv, message in [(["--op", "selective_scan_2d_tiles"], "run it on a CUDA device"),
                          (["--op", "s4d_kernel", "--peer-s4", str(tmp_path)], "expected a state-spaces/s4 checkout")]:
        with pytest.raises(SystemExit) as stop:
            main([*argv, *small])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith("python -m bench: ") and message in err
