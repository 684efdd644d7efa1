"""ssm.S5 against the independent s5-pytorch package (PyPI ``s5-pytorch``) as a peer oracle.

s5-pytorch stores every state (no conjugate symmetry) and computes y = Re(C x + D u) with
an associative scan; a bidirectional layer concatenates the forward and backward states
before one C of width 2P. Our ``conj_sym=False`` layer has the same conventions, so with the
parameters copied across both must agree. Skipped where s5-pytorch is not installed (it is
not a dependency).
"""

import pytest
import torch
from tolerances import assert_close

import ssm

s5_peer = pytest.importorskip("s5.s5_model", reason="the s5-pytorch package is not installed")

H, P = 4, 8


def peer_with_our_parameters(layer: ssm.S5) -> torch.nn.Module:
    dt, Lam, B, C = (t.detach() for t in layer.continuous())
    peer = s5_peer.S5SSM(
        Lam.to(torch.complex64), torch.eye(P, dtype=torch.complex64), torch.eye(P, dtype=torch.complex64),
        H, P, 1e-3, 1e-1, discretization=layer.disc, bcInit="dense", bidir=layer.bidirectional,
    )
    with torch.no_grad():
        peer.B.copy_(torch.view_as_real(B))
        peer.C.copy_(torch.cat(list(C), dim=-1))
        peer.D.copy_(layer.D.detach())
        peer.log_step.copy_(torch.log(dt))
    return peer


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("init", ["hippo_n", "ptd"])
def test_s5_matches_s5_pytorch(disc, bidirectional, init):
    torch.manual_seed(0)
    layer = ssm.S5(H, d_state=P, blocks=2, init=init, conj_sym=False, disc=disc, bidirectional=bidirectional)
    peer = peer_with_our_parameters(layer)
    x = torch.randn(3, 50, H)
    with torch.no_grad():
        expected = torch.stack([peer(x[b]) for b in range(x.shape[0])])
        assert_close(layer(x), expected, dtype=torch.float32)
