"""Every Triton kernel compiles for sm_90 (H100 / H200) at the specializations its launcher
picks, with shared memory and grids within the hardware's limits, checked without a GPU
(``bench.gpu_compile`` in compile-only mode: ptxas builds each cubin, nothing runs)."""

import importlib.util
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

from bench.gpu_compile import GRID_LIMIT, SHARED_LIMIT, Compiled, problems

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ptxas_available() -> bool:
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return False
    return (pathlib.Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "ptxas").exists()


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    if not _ptxas_available():
        pytest.skip("triton's NVIDIA backend (ptxas) is not installed")
    out = tmp_path_factory.mktemp("compile") / "sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out.parent / "triton-cache")  # compile for real, not from a cache
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_compile", "--arch", "90", "--quick", "--json", str(out),
         "--ttir", str(out.parent / "ttir")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    result["ttir_dir"] = str(out.parent / "ttir")  # where --ttir wrote each specialization's IR
    return done, result


def test_every_kernel_compiles_for_sm90_within_limits(quick_sweep):
    done, result = quick_sweep
    assert result["failures"] == [], result["failures"]
    assert result["problems"] == [], result["problems"]
    assert result["not_launched"] == []
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # all fifteen launched kernels of the package were found and compiled
    assert len(result["kernels"]) == 15
    assert {r["kernel"] for r in result["compiled"]} == set(result["kernels"])


def test_resource_usage_is_read_from_each_cubin(quick_sweep):
    _, result = quick_sweep
    for r in result["compiled"]:
        assert r["registers"] is not None and 0 < r["registers"] <= 255, r
        assert r["local"] is not None and r["local"] >= 0, r
        assert 0 <= r["shared"] <= SHARED_LIMIT[90], r
        assert r["num_warps"] in (1, 2, 4, 8, 16, 32), r
        assert all(g >= 1 for g in r["max_grid"]), r


def test_the_launchers_specializations_are_recorded(quick_sweep):
    _, result = quick_sweep
    scans = [r for r in result["compiled"] if r["kernel"] == "selective_scan._selective_scan_fwd_kernel"]
    assert any("HAS_Z=True" in r["constexprs"] for r in scans)
    assert any("HAS_Z=False" in r["constexprs"] for r in scans)
    # the width-tiled 2D scan: one row per band, 256-column tiles for a 700-wide image at N = 16
    wide = [r for r in result["compiled"] if r["kernel"] == "selective_scan_2d._fwd_kernel" and "40x700" in r["case"]]
    assert wide and all("BLOCK_W=256" in r["constexprs"] for r in wide)
    # with and without a backward to save carries for (two band-carry slots without)
    assert {"SAVE=True", "SAVE=False"} <= {m for r in wide for m in re.findall(r"SAVE=\w+", r["constexprs"])}
    # fftconv shares the DFT matrices among rows when there are enough rows for the H100's SMs
    rows = [r for r in result["compiled"] if r["kernel"] == "fftconv._conv_kernel" and "H=256" in r["case"]]
    assert rows and all("ROWS=8" in r["constexprs"] for r in rows)


def test_batches_beyond_65535_rows_launch_within_the_grid_limits(quick_sweep):
    # B = 70000 batch rows (tiny other dimensions): more than grid dimensions 1 and 2 hold
    # (65535), so these kernels must not give the batch a dimension of its own
    _, result = quick_sweep
    for kernel in ("selective_scan._selective_scan_fwd_kernel", "selective_scan._selective_scan_bwd_kernel",
                   "selective_scan_2d._fwd_kernel", "selective_scan_2d._bwd_kernel",
                   "selective_state_update._selective_state_update_kernel"):
        grids = [r["max_grid"] for r in result["compiled"] if r["kernel"] == kernel]
        assert any(math.prod(g) >= 70000 for g in grids), (kernel, grids)
        assert all(size <= cap for g in grids for size, cap in zip(g, GRID_LIMIT)), (kernel, grids)


def _products(ttir: str) -> list[tuple[str, str]]:
    """(result name, integer type) of every arith.muli in a TTIR module whose operands are both
    runtime values (a product with a constant, such as BLOCK sizes, is left out)."""
    constants = set(re.findall(r"^\s*(%[\w.]+) = arith\.constant", ttir, re.M))
    found = []
    for name, a, b, ty in re.findall(r"^\s*(%[\w.]+) = arith\.muli (%[\w.#]+), (%[\w.#]+)[^:]*: (\S+)", ttir, re.M):
        if a not in constants and b not in constants:
            found.append((name[1:], re.findall(r"i\d+", ty)[-1]))
    return found


# Offsets that are products of sizes or strides, which pass 2^31 on large tensors: kernels all
# of whose runtime products must be 64-bit (None), or the named values whose products must be
WIDE_PRODUCTS = {
    "companion_kernel._combine_fwd_kernel": None,  # plane = n·F, then 3·plane
    "companion_kernel._combine_bwd_kernel": None,
    "vandermonde._vandermonde_fwd_kernel": None,
    "vandermonde._vandermonde_bwd_kernel": None,  # C·H·N·2
    "linear_scan._linear_scan_kernel": None,  # channel index times channel stride
    "selective_state_update._selective_state_update_kernel": None,  # the same
    # N·H·W into B / C; the strides N·W, N·H between band and row carries, and their offsets
    "selective_scan_2d._fwd_kernel": ("offs3", "NW", "NH", "carry_offs", "row_offs"),
    "selective_scan_2d._bwd_kernel": ("offs3", "NW", "NH", "carry_offs", "row_offs"),
}


def test_offset_products_are_64_bit(quick_sweep):
    # read from the Triton IR of every specialization the quick sweep compiled
    ttir_dir = pathlib.Path(quick_sweep[1]["ttir_dir"])
    narrow, unchecked = [], []
    for kernel, names in WIDE_PRODUCTS.items():
        products = [p for f in sorted(ttir_dir.glob(f"{kernel}.*.ttir")) for p in _products(f.read_text())]
        products = [(n, ty) for n, ty in products if names is None or re.sub(r"_\d+$", "", n) in names]
        found = {re.sub(r"_\d+$", "", n) for n, _ in products}
        unchecked += [kernel] if not products else [f"{kernel}: {n}" for n in names or () if n not in found]
        narrow += [f"{kernel}: %{n} is an {ty} product" for n, ty in products if ty != "i64"]
    assert not narrow, "\n".join(narrow)
    assert not unchecked, f"no products found in {unchecked}"


def test_problems_flags_shared_memory_and_grids_beyond_the_limits():
    fits = Compiled("k", "case", "", 4, SHARED_LIMIT[90], 32, 0, (GRID_LIMIT[0], 65535, 1))
    too_much = Compiled("k", "case", "", 4, SHARED_LIMIT[90] + 1, 32, 0, (1, 1, 1))
    too_wide = Compiled("k", "case", "", 4, 0, 32, 0, (1, 65536, 1))
    assert problems([fits], 90) == []
    assert "shared memory" in problems([too_much], 90)[0]
    assert "grid dim 1 = 65536" in problems([too_wide], 90)[0]
    assert problems([too_much], 80) and not problems([fits], 999)
