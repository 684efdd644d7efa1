"""The part every Mamba-style 2D mixer shares (VMamba's SS2D block): the input branch

    [x, z] = in_proj(u)                                  (C -> 2E per pixel)
    x = SiLU(depthwise Conv2d_{k×k}(x))                  (same padding)

and the output ``out_proj(norm(y) ⊙ SiLU(z))``, with the selective-SSM parameters of the
scans (``self.ssm``, K sets). Subclasses set ``directions`` (K without and with
``bidirectional``), their defaults of ``bidirectional`` and ``out_norm``, and implement
``mix(x) -> y`` on (B, E, Hgt, Wdt)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssm.layers._checks import NoRecurrentStep, check_image, check_positive_ints, resolve_dt_rank
from ssm.layers._empty import zeros_in_graph
from ssm.layers.diagonal import to_default_dtype
from ssm.layers.selective import SelectiveProjections


class ImageMixer(NoRecurrentStep, nn.Module):
    """Base of the 2D selective-scan layers: (B, Hgt, Wdt, d_model) -> same shape.

    Args:
        d_model: channels C of the input and output.
        d_state: N, the SSM state size per channel.
        d_conv: kernel size of the depthwise 2D convolution (odd, "same" padding; 1 is a
            per-channel scale and shift).
        expand: E = expand · d_model inner channels.
        dt_rank: rank of the Δ projection, "auto" = ceil(d_model / 16).
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor, lr: the Δ initialization and the
            optimizer hint of the SSM tensors, as in :class:`ssm.Mamba`.
        conv_bias, bias: biases of the convolution and of in_proj / out_proj.
        out_norm: LayerNorm over E before the gate ("layer": VMamba, MaIR) or none ("none");
            None takes the layer's default (``default_out_norm``).
        dropout: on the output.
        bidirectional: scan with ``directions[1]`` sets of parameters instead of
            ``directions[0]``; None takes the layer's default (``default_bidirectional``).
    """

    directions: tuple[int, int] = (1, 2)
    default_bidirectional: bool = False
    default_out_norm: str = "layer"
    no_step_reason = "it scans the whole image, along more than one axis"

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        out_norm: str | None = None,
        dropout: float = 0.0,
        bidirectional: bool | None = None,
        lr: float | None | dict = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        out_norm = self.default_out_norm if out_norm is None else out_norm
        bidirectional = self.default_bidirectional if bidirectional is None else bidirectional
        check_positive_ints(name, d_model=d_model, d_state=d_state, expand=expand)
        if isinstance(d_conv, bool) or int(d_conv) != d_conv or d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"{name}: d_conv must be a positive odd integer (same padding), got {d_conv!r}")
        dt_rank = resolve_dt_rank(dt_rank, d_model, name)
        if out_norm not in ("layer", "none"):
            raise ValueError(f"{name}: out_norm must be 'layer' or 'none', got {out_norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        self.d_model, self.d_state, self.d_conv = int(d_model), int(d_state), int(d_conv)
        self.expand, self.dt_rank = int(expand), int(dt_rank)
        self.d_inner = E = self.expand * self.d_model
        self.in_proj = nn.Linear(self.d_model, 2 * E, bias=bias)
        self.conv2d = nn.Conv2d(E, E, self.d_conv, padding=self.d_conv // 2, groups=E, bias=conv_bias)
        self.out_norm = nn.LayerNorm(E) if out_norm == "layer" else nn.Identity()
        self.out_proj = nn.Linear(E, self.d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.bidirectional = bool(bidirectional)
        self.ssm = SelectiveProjections(
            E, self.d_state, self.dt_rank, self.directions[self.bidirectional], dt_min, dt_max, dt_init, dt_scale,
            dt_init_floor, lr,
        )
        to_default_dtype(self)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """(B, E, Hgt, Wdt) -> (B, Hgt, Wdt, E), before the norm and the gate."""
        raise NotImplementedError

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(B, Hgt, Wdt, d_model) -> (B, Hgt, Wdt, d_model)."""
        check_image(u, self.d_model, type(self).__name__, self)
        if u.shape[1] == 0 or u.shape[2] == 0:
            return zeros_in_graph(u, self)
        x, z = self.in_proj(u.to(self.in_proj.weight.dtype)).chunk(2, dim=-1)  # (B, H, W, E) each
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # (B, E, H, W)
        y = self.out_norm(self.mix(x).to(z.dtype)) * F.silu(z)
        return self.dropout(self.out_proj(y)).to(u.dtype)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
                f"bidirectional={self.bidirectional}")
