"""NSSMamba: MaIR's nested S-shaped scan with sequence-shuffle attention (Li et al., "MaIR:
A Locality- and Continuity-Preserving Mamba for Image Restoration", CVPR 2025)."""

from __future__ import annotations

import torch
from torch import nn

from ssm import scan_orders
from ssm.layers._image_mixer import ImageMixer
from ssm.layers._checks import check_positive_ints


class SequenceShuffleAttention(nn.Module):
    """Mixes K scan outputs per channel (MaIR's SSA): for ys (B, K, E, Hgt, Wdt)

        s[b, k, e] = mean over pixels of ys[b, k, e]
        w[b, :, e] = σ(M_e s[b, :, e] + c_e)          (a K×K mix per channel e: the grouped
                                                       1×1 convolution on channel-shuffled
                                                       channels e·K + k, groups = E)
        y[b, e] = Σ_k w[b, k, e] ys[b, k, e]

    Returns (B, E, Hgt, Wdt)."""

    def __init__(self, d_inner: int, k: int = 4) -> None:
        super().__init__()
        self.k = int(k)
        self.mix = nn.Conv1d(d_inner * self.k, d_inner * self.k, 1, groups=d_inner)

    def forward(self, ys: torch.Tensor) -> torch.Tensor:
        B, K, E = ys.shape[:3]
        pooled = ys.mean(dim=(-2, -1))  # (B, K, E)
        shuffled = pooled.transpose(1, 2).reshape(B, E * K, 1)  # channel e·K + k
        weights = torch.sigmoid(self.mix(shuffled)).view(B, E, K).transpose(1, 2)  # (B, K, E)
        return (ys * weights[..., None, None]).sum(1)


class NSSMamba(ImageMixer):
    """Mamba over four nested S-shaped scans, merged by sequence-shuffle attention, on
    (B, Hgt, Wdt, d_model) images (E = expand · d_model):

        [x, z] = in_proj(u),  x = SiLU(DWConv_{3×3}(x))                  (B, E, Hgt, Wdt)
        xs_k = x flattened in order π_k, k = 0..3: NSS(x), NSS(rot180 x), NSS(xᵀ),
               NSS((rot180 x)ᵀ) (``ssm.scan_orders.nss_directions``)
        ys_k = selective_scan(xs_k; Δ_k, B_k, C_k, A_k, D_k), brought back to row-major
               order by π_k⁻¹
        y = SSA(ys_0..3),  out = out_proj(LayerNorm(y) ⊙ SiLU(z))

    The nested S-shaped order cuts the width into vertical stripes of ``stripe`` columns and
    walks each stripe row by row in a boustrophedon, so consecutive tokens are neighbouring
    pixels (see ``ssm.scan_orders.nss`` for where the walk still jumps). MaIR alternates
    ``shift=False`` and ``shift=True`` (stripes offset by stripe // 2) between blocks;
    :class:`ssm.models.ImageClassifier` does this with ``alternate_shift=True``.

    With ``bidirectional=False`` only NSS(x) and NSS(xᵀ) are scanned (K = 2).

    Args: as :class:`ssm.SS2D` (after ``stripe`` and ``shift``, by keyword only), plus
        stripe: stripe width (MaIR's scan_len: 4 or 8 depending on the task).
        shift: use the shifted stripes.
    """

    directions = (2, 4)
    # Rows of ``nss_directions`` scanned for each K: NSS(x) and NSS(xᵀ) when unidirectional,
    # all four (adding the walks of the 180°-rotated image, rows 1 and 3) otherwise.
    _kept_rows = {2: (0, 2), 4: (0, 1, 2, 3)}

    default_bidirectional = True

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2,
                 dt_rank: int | str = "auto", stripe: int = 4, shift: bool = False, **kwargs) -> None:
        check_positive_ints("NSSMamba", stripe=stripe)
        super().__init__(d_model, d_state, d_conv, expand, dt_rank, **kwargs)
        self.stripe, self.shift = int(stripe), bool(shift)
        self.attention = SequenceShuffleAttention(self.d_inner, self.ssm.k)
        self._orders: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def orders(self, H: int, W: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(π (K, H·W), π⁻¹ (K, H·W)) on ``device``, the K scanned rows of
        ``nss_directions``; built once per (H, W, stripe, shift, device) and kept (a few at
        most), so a forward pass neither rebuilds nor copies them. They are built outside
        inference mode even within it: an inference tensor could not index a later forward
        that is differentiated."""
        key = (int(H), int(W), self.stripe, self.shift, torch.device(device))
        if key not in self._orders:
            with torch.inference_mode(False):
                rows = list(self._kept_rows[self.ssm.k])
                perms = scan_orders.nss_directions(H, W, self.stripe, self.shift)[rows]
                if len(self._orders) >= 8:
                    self._orders.pop(next(iter(self._orders)))
                self._orders[key] = perms.to(device), scan_orders.inverse(perms).to(device)
        return self._orders[key]

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        B, E, H, W = x.shape
        K = self.ssm.k
        perms, inverse = self.orders(H, W, x.device)
        xs = x.reshape(B, E, H * W)[..., perms].transpose(1, 2)  # (B, K, E, H·W)
        ys = self.ssm.scan(xs.contiguous())
        ys = ys.gather(-1, inverse[None, :, None, :].expand_as(ys)).view(B, K, E, H, W)
        return self.attention(ys).permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stripe={self.stripe}, shift={self.shift}"
