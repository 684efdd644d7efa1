"""The benchmark entry point runs end to end on tiny shapes and writes its table and JSON."""

import json

import pytest

from bench.__main__ import main


@pytest.mark.parametrize("op", ["vandermonde", "fftconv", "s4d", "s4d_kernel"])
def test_bench_writes_table_and_json(op, tmp_path):
    out = tmp_path / "result.json"
    result = main(["--op", op, "--lengths", "8", "17", "--channels", "3", "--batch", "2",
                   "--state", "4", "--repeats", "1", "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and len(result["rows"]) >= 2
    assert all(r["forward_s"] > 0 and r["forward_backward_s"] > 0 for r in result["rows"])
    assert "| fwd ms |" in out.with_suffix(".md").read_text()


def test_peer_checkout_path_is_checked(tmp_path):
    from bench.peers import s4_minimal_kernel

    with pytest.raises(FileNotFoundError, match="models/s4/s4d.py"):
        s4_minimal_kernel(tmp_path, 4, 8, "cpu")
