"""Reference Vandermonde kernel: powers built by repeated multiplication, no chunking."""

import torch

from kernels._empty import with_zero_grads


def vandermonde_reference(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """K[..., h, l] = 2 Re sum_n v[..., h, n] z[h, n]^l with z = exp(x), powers by a running product.

    Materializes (H, N, L); meant for tests (use complex128 inputs for an exact oracle).
    """
    z = torch.exp(x)
    powers = [torch.ones_like(z)]
    for _ in range(1, L):
        powers.append(powers[-1] * z)
    if L == 0:  # empty, but in the graph: zero gradients for v and x
        return with_zero_grads(torch.zeros(*v.shape[:-1], 0, dtype=v.real.dtype, device=v.device), v, x)
    zl = torch.stack(powers, dim=-1)  # (H, N, L)
    return 2 * (v.unsqueeze(-1) * zl).sum(dim=-2).real
