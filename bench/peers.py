"""Peer implementations timed side by side with ours, loaded from a local checkout.

Nothing of a peer is vendored: pass the path of a checkout (``--peer-s4 PATH`` for
state-spaces/s4) and its module is imported from there at benchmark time.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import torch


def s4_minimal_kernel(checkout: str | pathlib.Path, H: int, N: int, device: torch.device):
    """state-spaces/s4's minimal ``S4DKernel(H, N)`` (models/s4/s4d.py): a callable L -> (H, L).

    It materializes the (H, N/2, L) tensor of powers, the naive Vandermonde product.
    """
    root = pathlib.Path(checkout).expanduser().resolve()
    path = root / "models" / "s4" / "s4d.py"
    if not path.is_file():
        raise FileNotFoundError(f"--peer-s4 {root}: expected a state-spaces/s4 checkout with {path}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the file imports src.models.nn from its checkout
    spec = importlib.util.spec_from_file_location("peer_s4_s4d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.S4DKernel(H, N=N).to(device)


def s5_pytorch_layer(H: int, P: int, device: torch.device):
    """The ``s5-pytorch`` package's ``S5SSM`` (P states, HiPPO-N init, associative scan) as a
    callable x (B, L, H) -> (B, L, H), or None when the package is not installed."""
    try:
        from s5.s5_model import S5SSM
    except ImportError:
        return None
    from ssm.layers.s5 import block_eigenbasis

    Lam, V, Vinv = (t.to(torch.complex64) for t in block_eigenbasis("hippo_n", P, conj_sym=False))
    layer = S5SSM(Lam, V, Vinv, H, P, 1e-3, 1e-1, bcInit="dense").to(device)
    return torch.vmap(layer)


def mambapy_selective_scan():
    """mambapy's selective scan around its parallel scan ``pscan`` (the ``mambapy`` package),
    as a callable (x, delta, A, B, C, D, z, delta_bias) -> (B, L, D), or None when the package
    is not installed. Layouts are mambapy's: x, delta, z (B, L, D); B, C (B, L, N); A (D, N).

    The step is softplus(delta + delta_bias), then deltaA = exp(Δ A), BX = Δ B x,
    hs = pscan(deltaA, BX) (all states (B, L, D, N) materialized, L padded to a power of two
    inside), y = hs C + D x, gated by silu(z): the same function as ``kernels.selective_scan``
    with delta_softplus, D, z and delta_bias.
    """
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def run(x, delta, A, B, C, D, z, delta_bias):
        dt = torch.nn.functional.softplus(delta + delta_bias)
        deltaA = torch.exp(dt.unsqueeze(-1) * A)
        BX = dt.unsqueeze(-1) * B.unsqueeze(2) * x.unsqueeze(-1)
        hs = pscan(deltaA, BX)
        y = (hs @ C.unsqueeze(-1)).squeeze(3) + D * x
        return y * torch.nn.functional.silu(z)

    return run


def mamba_ssm_selective_scan(checkout: str | pathlib.Path | None, device: torch.device):
    """state-spaces/mamba's selective scan, as ``(name, fn)`` with fn taking
    ``kernels.selective_scan``'s arguments (same layouts), or None when there is neither an
    installed ``mamba_ssm`` nor a checkout.

    On CUDA, when its compiled extension ``selective_scan_cuda`` imports, fn is
    ``selective_scan_fn`` (the CUDA kernel); otherwise it is ``selective_scan_ref``, its
    PyTorch reference (a Python loop over L that materializes exp(Δ A) and Δ B u as
    (B, D, L, N) tensors). From a checkout (``--peer-mamba-ssm PATH``) only the interface
    module and what it imports are loaded, not the package's ``__init__`` (which pulls in
    the whole model zoo and its dependencies).
    """
    try:
        if checkout is None:
            from mamba_ssm.ops import selective_scan_interface as interface
        else:
            root = pathlib.Path(checkout).expanduser().resolve()
            package = root / "mamba_ssm"
            if not (package / "ops" / "selective_scan_interface.py").is_file():
                raise FileNotFoundError(
                    f"--peer-mamba-ssm {root}: expected a state-spaces/mamba checkout with "
                    f"{package / 'ops' / 'selective_scan_interface.py'}"
                )
            if str(root) not in sys.path:  # an extension built in place (selective_scan_cuda*.so) lies in the root
                sys.path.insert(0, str(root))
            if "mamba_ssm" not in sys.modules:
                stub = types.ModuleType("mamba_ssm")
                stub.__path__ = [str(package)]
                sys.modules["mamba_ssm"] = stub
            interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except ImportError:
        return None
    if device.type == "cuda" and getattr(interface, "selective_scan_cuda", None) is not None:
        return "mamba_ssm selective_scan_fn (CUDA)", interface.selective_scan_fn
    return "mamba_ssm selective_scan_ref", interface.selective_scan_ref


def mambapy_block(layer: torch.nn.Module, device: torch.device):
    """mambapy's ``MambaBlock`` (its parallel-scan setting) with the weights of our
    ``ssm.Mamba`` ``layer`` copied in (the parameter names match), or None when the package
    is not installed. Takes and returns (B, L, d_model)."""
    try:
        from mambapy.mamba import MambaBlock, MambaConfig
    except ImportError:
        return None
    config = MambaConfig(d_model=layer.d_model, n_layers=1, d_state=layer.d_state, expand_factor=layer.expand,
                         d_conv=layer.d_conv, dt_rank=layer.dt_rank, pscan=True)
    block = MambaBlock(config).to(device)
    block.load_state_dict(layer.state_dict())
    return block


def spacetime_companion_kernels(checkout: str | pathlib.Path) -> dict:
    """HazyResearch/spacetime's kernel functions from a checkout, as callables
    (a, b, c, L) -> (n, L) for a, b, c (n, d):

    - ``krylov`` (model/functional/krylov.py): Krylov by repeated squaring of the dense A,
      what its layers run;
    - ``companion_krylov`` (model/functional/companion_krylov.py): the generating-function
      algorithm, given c (it then forms c̃ with torch.linalg.matrix_power(A, L)).
    """
    root = pathlib.Path(checkout).expanduser().resolve()
    paths = {name: root / "model" / "functional" / f"{name}.py" for name in ("krylov", "companion_krylov")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"--peer-spacetime {root}: expected a HazyResearch/spacetime checkout with {missing}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # krylov.py imports model.functional.toeplitz from its checkout
    modules = {}
    for name, path in paths.items():
        spec = importlib.util.spec_from_file_location(f"peer_spacetime_{name}", path)
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    companion_from_p = modules["companion_krylov"].companion_from_p
    return {
        "krylov": lambda a, b, c, L: modules["krylov"].krylov(L, companion_from_p(a), b, c),
        "companion_krylov": lambda a, b, c, L: modules["companion_krylov"].companion_krylov(L, a, b, c=c),
    }
