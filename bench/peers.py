"""Peer implementations timed side by side with ours, loaded from a local checkout.

Nothing of a peer is vendored: pass the path of a checkout (``--peer-s4 PATH`` for
state-spaces/s4) and its module is imported from there at benchmark time.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

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
