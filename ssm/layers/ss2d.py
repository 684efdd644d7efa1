"""SS2D: VMamba's four-direction cross-scan selective SSM (Liu et al., "VMamba: Visual State
Space Model", 2024)."""

from __future__ import annotations

import torch

from kernels import cross_merge, cross_scan

from ssm.layers._image_mixer import ImageMixer


class SS2D(ImageMixer):
    """Cross-scan Mamba on (B, Hgt, Wdt, d_model) images, E = expand · d_model:

        [x, z] = in_proj(u),  x = SiLU(DWConv_{3×3}(x))                (B, E, Hgt, Wdt)
        xs = cross_scan(x)                                            (B, 4, E, Hgt·Wdt):
             row-major, column-major, and both reversed
        ys_k = selective_scan(xs_k; Δ_k, B_k, C_k from xs_k with direction k's own
               x_proj / dt_proj, A_k = -exp(A_log_k), D_k)             (one grouped scan)
        y = cross_merge(ys)                                           (the adjoint: each
             pixel sums its four outputs)
        out = out_proj(LayerNorm(y) ⊙ SiLU(z))

    Every pixel then sees the whole image: each direction covers the pixels before it in its
    order. With ``bidirectional=False`` only the two forward orders (row-major and
    column-major) are scanned: pixel (i, j) sees the earlier rows and row i up to column j
    (row-major), and the earlier columns and column j up to row i (column-major). That is
    not causal in raster order (the pixels below and to the left come later in it), and the
    3×3 convolution mixes in each pixel's neighbours before any scan.
    Initialization is the Mamba paper's per direction (see
    :class:`ssm.layers.selective.SelectiveProjections`).

    Args: as :class:`ssm.layers._image_mixer.ImageMixer`, plus dt_min, dt_max, dt_init,
    dt_scale, dt_init_floor and ``lr`` as in :class:`ssm.Mamba`, and ``bidirectional``
    (default True, VMamba's four directions: also scan both orders reversed).
    """

    directions = (2, 4)
    default_bidirectional = True

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        xs = cross_scan(x)  # (B, 4, E, H·W)
        if not self.bidirectional:
            xs = xs[:, :2].contiguous()
        ys = self.ssm.scan(xs)
        if not self.bidirectional:  # the reversed directions contribute nothing
            ys = torch.cat([ys, torch.zeros_like(ys)], dim=1)
        return cross_merge(ys, H, W).permute(0, 2, 3, 1)
