"""Mamba2D: a Mamba block whose scan is the row-then-column 2D selective scan (Zhang et al.,
"2DMamba: Efficient State Space Model for Image Representation", 2025)."""

from __future__ import annotations

import torch

from kernels import selective_scan_2d

from ssm.layers._image_mixer import ImageMixer
from ssm.layers.diagonal import widen


class Mamba2D(ImageMixer):
    """2D selective SSM on (B, Hgt, Wdt, d_model) images (E = expand · d_model):

        [x, z] = in_proj(u),  x = SiLU(DWConv_{3×3}(x))                    (B, E, Hgt, Wdt)
        [δ, B, C] = x_proj(x) per pixel,  Δ = softplus(W_dt δ + b_dt)
        Ā[i, j] = exp(Δ[i, j] A)
        g[i, j] = Ā[i, j] g[i, j-1] + Δ[i, j] B[i, j] x[i, j]              (along each row)
        h[i, j] = Ā[i, j] h[i-1, j] + g[i, j]                              (down each column)
        y = C h + D x,  out = out_proj(norm(y) ⊙ SiLU(z))

    ``kernels.selective_scan_2d``: each pixel aggregates its upper-left quadrant, every
    source along one path (right along its row, then down), with the decays of the pixels
    passed. Initialization is the Mamba paper's; ``out_norm`` is off by default (the gate
    follows the scan directly, as in Mamba).

    With ``bidirectional=True`` a second 2D scan with its own parameters runs over the image
    rotated by 180° (each pixel then also aggregates its lower-right quadrant) and the two
    outputs are added. Default off, as in 2DMamba.

    Args: as :class:`ssm.SS2D`; defaults ``bidirectional=False``, ``out_norm="none"``.
    """

    directions = (1, 2)
    default_bidirectional = False
    default_out_norm = "none"

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        B, E, H, W = x.shape
        K = self.ssm.k
        xs = torch.stack([x, x.flip(-2, -1)][:K], dim=1)  # (B, K, E, H, W): the second one rotated 180°
        delta, Bs, Cs = self.ssm.project(xs.reshape(B, K, E, H * W))
        A, D, bias = self.ssm.A(), widen(self.ssm.Ds), widen(self.ssm.dt_projs_bias)
        y = 0
        for k in range(K):
            rows = slice(k * E, (k + 1) * E)
            yk = selective_scan_2d(
                xs[:, k], delta[:, k].view(B, E, H, W), A[rows], Bs[:, k].view(B, Bs.shape[-2], H, W),
                Cs[:, k].view(B, Cs.shape[-2], H, W), D[rows], delta_bias=bias[k], delta_softplus=True,
            )
            y = y + (yk.flip(-2, -1) if k else yk)
        return y.permute(0, 2, 3, 1)
