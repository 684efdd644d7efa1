"""The benchmark entry point runs end to end on tiny shapes and writes its table and JSON."""

import json

import pytest
import torch

from bench.__main__ import main


@pytest.mark.parametrize("op", ["vandermonde", "fftconv", "s4d", "s4d_kernel", "linear_scan", "s5", "selective_scan", "mamba",
                                "selective_scan_2d", "cross_scan", "companion_kernel"])
def test_bench_writes_table_and_json(op, tmp_path):
    out = tmp_path / "result.json"
    result = main(["--op", op, "--lengths", "8", "17", "--channels", "3", "--batch", "2",
                   "--state", "4", "--repeats", "1", "--device", "cpu", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and len(result["rows"]) >= 2
    assert all(r["forward_s"] > 0 and r["forward_backward_s"] > 0 for r in result["rows"])
    assert all(r["peak_bytes"] > 0 and r["peak_bytes_forward_backward"] > 0 for r in result["rows"])
    table = out.with_suffix(".md").read_text()
    assert "| fwd ms |" in table and "| fwd peak MiB | fwd+bwd peak MiB |" in table


def test_peer_checkout_path_is_checked(tmp_path):
    from bench.peers import s4_minimal_kernel, spacetime_companion_kernels

    with pytest.raises(FileNotFoundError, match="models/s4/s4d.py"):
        s4_minimal_kernel(tmp_path, 4, 8, "cpu")
    with pytest.raises(FileNotFoundError, match="krylov.py"):
        spacetime_companion_kernels(tmp_path)


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
