"""The backend rule shared by every op: tensors on several devices, or meta tensors sent to
the Triton backend, raise a clear ValueError before any kernel runs; meta tensors run
shape-only through the torch path."""

import os
import subprocess
import sys

import pytest
import torch
from compile_counting import CountingBackend

import kernels
from kernels._dispatch import INTERPRETER_PROBLEM

META = torch.device("meta")


def op_calls(device_of):
    """(name, call) for each op, with the tensors placed by ``device_of(argument name)``."""
    def t(name, *shape, dtype=torch.float32):
        return torch.randn(*shape, dtype=dtype).to(device_of(name))

    return [
        ("vandermonde", lambda **kw: kernels.vandermonde(t("v", 4, 3, dtype=torch.cfloat), t("x", 4, 3, dtype=torch.cfloat), 8, **kw)),
        ("fftconv", lambda **kw: kernels.fftconv(t("u", 2, 4, 8), t("k", 4, 8), t("D", 4), **kw)),
        ("companion_kernel", lambda **kw: kernels.companion_kernel(t("a", 3, 4), t("b", 3, 4), t("c", 3, 4), 5, **kw)),
        ("linear_scan", lambda **kw: kernels.linear_scan(t("a", 2, 8, 4), t("b", 2, 8, 4), **kw)),
        ("selective_scan", lambda **kw: kernels.selective_scan(t("u", 2, 4, 6), t("delta", 2, 4, 6), t("A", 4, 3),
                                                                t("B", 4, 3), t("C", 4, 3), **kw)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_tensors_on_two_devices_raise_a_clear_error(index):
    name, call = op_calls(lambda arg: META if arg in ("x", "D", "b", "C") else "cpu")[index]
    with pytest.raises(ValueError, match="(one device|same device|on one device|device)"):
        call(backend="torch")


@pytest.mark.parametrize("index", range(5))
def test_meta_tensors_go_through_the_torch_path_and_not_triton(index):
    name, call = op_calls(lambda arg: META)[index]
    out = call(backend="torch")
    assert (out[0] if isinstance(out, tuple) else out).device == META
    with pytest.raises(ValueError, match="meta tensors"):
        call(backend="triton")


def test_selective_scan_rejects_an_integer_h0():
    u = torch.randn(2, 4, 6)
    with pytest.raises(TypeError, match="h0 must be a floating-point"):
        kernels.selective_scan(u, torch.rand(2, 4, 6), -torch.rand(4, 3), torch.randn(4, 3), torch.randn(4, 3),
                               h0=torch.zeros(2, 4, 3, dtype=torch.long))


def test_selective_scan_reference_computes_half_z_and_delta_in_u_precision():
    torch.manual_seed(0)
    u, delta = torch.randn(1, 2, 5, dtype=torch.float64), torch.rand(1, 2, 5, dtype=torch.float64)
    A, B, C = -torch.rand(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    z = torch.randn(1, 2, 5).half()
    for backend in ("reference", "torch"):
        half = kernels.selective_scan(u, delta.half(), A, B, C, z=z, backend=backend)
        wide = kernels.selective_scan(u, delta.half().double(), A, B, C, z=z.double(), backend=backend)
        torch.testing.assert_close(half, wide, rtol=0, atol=0)



def run_fresh_python(script: str) -> None:
    """Run ``script`` in a new interpreter without TRITON_INTERPRET (as a user's script
    starts), and require it to succeed."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(bool(INTERPRETER_PROBLEM), reason=f"{INTERPRETER_PROBLEM}")
def test_importing_the_library_does_not_import_triton_so_the_interpreter_can_still_be_chosen():
    """The Triton kernel modules read TRITON_INTERPRET when their kernels are decorated, so
    ``import ssm`` / ``import kernels`` must not import them: a script may set the variable
    after importing the library and before its first Triton call."""
    script = (
        "import os, sys, torch\n"
        "import ssm, kernels\n"
        "assert 'triton' not in sys.modules, sorted(m for m in sys.modules if 'triton' in m)\n"
        "os.environ['TRITON_INTERPRET'] = '1'\n"
        "u, k = torch.randn(2, 3, 20), torch.randn(3, 20)\n"
        "y = kernels.fftconv(u, k, backend='triton')\n"
        "torch.testing.assert_close(y, kernels.fftconv(u, k, backend='torch'), rtol=1e-4, atol=1e-4)\n"
        "v, x = torch.randn(3, 4, dtype=torch.cfloat), -torch.rand(3, 4) + 1j * torch.randn(3, 4)\n"
        "torch.testing.assert_close(kernels.vandermonde(v, x, 9, backend='triton'),\n"
        "                           kernels.vandermonde(v, x, 9, backend='torch'), rtol=1e-4, atol=1e-4)\n"
    )
    run_fresh_python(script)


def test_without_triton_fftconv_offers_no_triton_backend():
    """fftconv registers its Triton backend only where triton can be imported: elsewhere
    backend="triton" is the dispatcher's clear ValueError, not a failed import on first use."""
    script = (
        "import importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a, **k: None if name.split('.')[0] == 'triton' else real(name, *a, **k)\n"
        "import torch, kernels, importlib\n"
        "assert 'triton' not in importlib.import_module('kernels.fftconv')._IMPLEMENTATIONS\n"
        "u, k = torch.randn(2, 3, 20), torch.randn(3, 20)\n"
        "try:\n"
        "    kernels.fftconv(u, k, backend='triton')\n"
        "except ValueError as err:\n"
        "    assert 'not available' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('backend=triton ran without triton')\n"
        "torch.testing.assert_close(kernels.fftconv(u, k), kernels.fftconv(u, k, backend='reference'), rtol=1e-4, atol=1e-4)\n"
    )
    run_fresh_python(script)


class _ReportsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA: the device rule reads only ``is_cuda``."""

    @property
    def is_cuda(self):
        return True


def test_cuda_tensors_take_the_torch_path_when_the_op_has_no_fused_kernel():
    """backend=None sends CUDA tensors to the Triton backend where the op offers one (triton
    installed) and to "torch" otherwise (a CUDA machine without triton); CPU tensors always to
    "torch"."""
    on_cuda = torch.randn(3).as_subclass(_ReportsCuda)
    with_triton = {"triton": max, "torch": len, "reference": abs}
    without_triton = {"torch": len, "reference": abs}
    assert kernels.select_backend("op", with_triton, None, on_cuda) is max
    assert kernels.select_backend("op", without_triton, None, on_cuda) is len
    assert kernels.select_backend("op", with_triton, None, torch.randn(3)) is len


def test_nested_use_backend_restores_the_enclosing_choice():
    """Leaving an inner ``use_backend`` block brings back the enclosing block's backend, not
    the device rule; ``use_backend(None)`` inside a block restores the device rule for its own
    extent only."""
    impl = {"torch": len, "reference": abs}
    t = torch.randn(3)
    with kernels.use_backend("reference"):
        with kernels.use_backend("torch"):
            assert kernels.select_backend("op", impl, None, t) is len
        assert kernels.select_backend("op", impl, None, t) is abs
        with kernels.use_backend(None):
            assert kernels.select_backend("op", impl, None, t) is len
        assert kernels.select_backend("op", impl, None, t) is abs
    assert kernels.select_backend("op", impl, None, t) is len


def test_use_backend_is_per_thread():
    """A block in one thread does not reach ops that another thread runs meanwhile."""
    import threading

    impl = {"torch": len, "reference": abs}
    t = torch.randn(3)
    seen = []
    with kernels.use_backend("reference"):
        worker = threading.Thread(target=lambda: seen.append(kernels.select_backend("op", impl, None, t)))
        worker.start()
        worker.join()
        assert kernels.select_backend("op", impl, None, t) is abs
    assert seen == [len]


def test_compiled_code_follows_use_backend_blocks_and_recompiles_for_them():
    """Compiled code reads the block's backend while tracing and guards on it: the same
    compiled function, called inside a block, is traced again for that backend (the
    reference loop, many ops, instead of the torch path's one op) and outside it reuses the
    first graph. Traced without graph breaks (fullgraph) either way. Run in a new thread, where
    no block has set the thread's backend yet, as for code compiled before a process's first
    block (wherever this test falls in the run)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as fresh_thread:
        fresh_thread.submit(_compile_then_enter_a_block).result()


def _compile_then_enter_a_block():
    counter = CountingBackend()
    torch._dynamo.reset()
    scan = torch.compile(lambda a, b: kernels.linear_scan(a, b), backend=counter, fullgraph=True)
    a, b = torch.rand(2, 6, 3), torch.randn(2, 6, 3)
    expected = kernels.linear_scan(a, b, backend="reference")
    assert torch.allclose(scan(a, b), expected, atol=1e-6)
    with kernels.use_backend("reference"):
        assert torch.allclose(scan(a, b), expected, atol=1e-6)
    assert torch.allclose(scan(a, b), expected, atol=1e-6)
    torch._dynamo.reset()
    assert len(counter.sizes) == 2 and counter.sizes[1] > counter.sizes[0]


@pytest.mark.parametrize("triton_version, numpy_version, refused", [
    ("3.6.0", "2.4.6", True),   # seen: every kernel with a loop over L failed in the interpreter
    ("3.2.0", "2.4.0rc1", True),
    ("3.6.0", "2.3.5", False),  # seen: the full suite passed (numpy only warns)
    ("3.7.0", "2.4.6", False),  # the interpreter squeezes the array first from 3.7 on
    ("3.10.0", "2.5.0", False),
    (None, "2.4.6", False),     # triton not installed under that name: nothing to say
])
def test_interpreter_problem_names_the_releases_that_cannot_work_together(triton_version, numpy_version, refused):
    from kernels._dispatch import interpreter_problem

    problem = interpreter_problem(triton_version, numpy_version)
    assert (problem is not None) == refused
    if refused:
        assert f"triton {triton_version}" in problem and f"numpy {numpy_version}" in problem
        assert "triton>=3.7 or numpy<2.4" in problem


@pytest.mark.parametrize("index", range(5))
def test_the_triton_backend_on_cpu_refuses_an_interpreter_that_cannot_run_it(index, monkeypatch):
    import kernels._dispatch as dispatch

    monkeypatch.setattr(dispatch, "INTERPRETER_PROBLEM", "the Triton interpreter of triton 3.6.0 cannot run")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    name, call = op_calls(lambda arg: "cpu")[index]
    with pytest.raises(RuntimeError, match=f"{name}: backend='triton' on CPU tensors: the Triton interpreter"):
        call(backend="triton")
    call(backend="torch")  # the other backends are not affected
