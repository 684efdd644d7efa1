"""A small hierarchical image backbone for the 2D mixers (SS2D, NSSMamba, Mamba2D): patch
embedding, stages of residual 2D blocks with downsampling between them, pooling, head."""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssm.blocks import make_norm
from ssm.layers._checks import check_input_dtype, check_positive_ints
from ssm.models.encoders import TokenEncoder
from ssm.padding import check_lengths


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability p and
    scale the survivors by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class ImageNorm(nn.Module):
    """A :func:`ssm.blocks.make_norm` norm ("layer", "batch", "none") on (B, H, W, C)."""

    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.norm = make_norm(kind, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        return self.norm(x.reshape(B, H * W, C)).view(B, H, W, C)


class ImageBlock(nn.Module):
    """Residual block on (B, Hgt, Wdt, C); pre-norm:

        x ← x + DropPath(Dropout(mixer(norm(x))))
        x ← x + DropPath(MLP(norm₂(x)))          (only with mlp_ratio > 0: Linear, GELU, Linear)

    post-norm: x ← norm(x + DropPath(Dropout(mixer(x)))), and likewise for the MLP.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 0.0, dropout: float = 0.0,
                 drop_path: float = 0.0, norm: str = "layer", prenorm: bool = True) -> None:
        super().__init__()
        self.prenorm = bool(prenorm)
        self.norm = ImageNorm(norm, dim)
        self.mixer = mixer
        self.dropout = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)
        hidden = int(round(dim * mlp_ratio))
        self.mlp = None
        if hidden > 0:
            self.mlp_norm = ImageNorm(norm, dim)
            self.mlp = nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
            )

    def _residual(self, x, branch, norm):
        if self.prenorm:
            return x + self.drop_path(branch(norm(x)))
        return norm(x + self.drop_path(branch(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, lambda h: self.dropout(self.mixer(h)), self.norm)
        if self.mlp is not None:
            x = self._residual(x, self.mlp, self.mlp_norm)
        return x


class Downsample(nn.Module):
    """(B, H, W, C) -> (B, ⌈H/2⌉, ⌈W/2⌉, C_out): a 2×2 convolution of stride 2 (zero padding at
    the bottom / right edge for odd sizes), then LayerNorm(C_out), as VMamba's current
    downsampling (``_make_downsample``) does."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 2, stride=2)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class ImageClassifier(nn.Module):
    """Classify images (or sequences that are flattened images) with a 2D mixer backbone.

    Input: features (B, Hgt·Wdt, d_input) or (B, Hgt, Wdt, d_input), or token ids
    (B, Hgt·Wdt) with ``n_tokens``; flattened inputs are row-major images of
    ``image_shape``. Then

        patch embedding: Conv2d(kernel = stride = patch_size) + LayerNorm -> (B, H', W', d_model)
        stage s (s = 0..len(depths)-1): depths[s] ImageBlocks of width d_model·2^s, with a
            Downsample (2×2, stride 2) before every stage but the first
        final norm (pre-norm), pooling over pixels, Linear head -> logits (B, d_output)

    The arguments shared with :class:`ssm.SequenceClassifier` (n_layers, norm, prenorm,
    dropout, pooling) mean the same, so an LRA experiment config drives either model.
    Every ``nn.Linear`` of the model (the mixers' in/out projections, the MLPs, the head)
    starts from a normal of std 0.02 truncated at ±2 and a zero bias, as VMamba's and MaIR's
    backbones re-initialize theirs (the selective-scan parameters keep their own inits).

    Args:
        d_model: width of the first stage.
        n_layers: blocks in all; one stage of n_layers blocks unless ``depths`` is given.
        depths: blocks per stage (hierarchical backbone); must sum to n_layers.
        layer: factory ``layer(dim) -> nn.Module`` on (B, H, W, dim), e.g.
            ``functools.partial(ssm.SS2D, d_state=16)``.
        d_output: classes.
        image_shape: (Hgt, Wdt) of flattened inputs.
        d_input / n_tokens: exactly one: channels of feature inputs, or the vocabulary of
            token inputs (embedded to d_model before the patch embedding).
        patch_size: side of the square patches of the embedding (1: one token per pixel).
        norm: "layer", "batch" or "none" in the blocks; prenorm: norm before the branches
            (True) or after the residual sums (False).
        dropout: on the mixer outputs and in the MLPs.
        pooling: "mean" over pixels or "last" (the last pixel in row-major order).
        mlp_ratio: hidden width of each block's MLP relative to dim (0: no MLP).
        drop_path: largest stochastic-depth rate, rising linearly from 0 over the blocks.
        alternate_shift: build every second block with ``layer(dim, shift=True)`` (MaIR's
            shifted stripes for :class:`ssm.NSSMamba`).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        layer: Callable[..., nn.Module],
        d_output: int,
        image_shape: Sequence[int],
        d_input: int | None = None,
        n_tokens: int | None = None,
        depths: Sequence[int] | None = None,
        patch_size: int = 1,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        pooling: str = "mean",
        mlp_ratio: float = 0.0,
        drop_path: float = 0.0,
        alternate_shift: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if (n_tokens is None) == (d_input is None):
            raise ValueError(f"{name}: give exactly one of n_tokens and d_input, got {n_tokens}, {d_input}")
        check_positive_ints(name, n_layers=n_layers)
        depths = [int(n_layers)] if depths is None else [int(d) for d in depths]
        if not depths or min(depths) < 1 or sum(depths) != n_layers:
            raise ValueError(f"{name}: depths must be positive block counts summing to n_layers = {n_layers}, got {depths}")
        if pooling not in ("mean", "last"):
            raise ValueError(f"{name}: pooling must be 'mean' or 'last', got {pooling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        self.pooling = pooling
        if len(tuple(image_shape)) != 2 or min(image_shape) < 1:
            raise ValueError(f"{name}: image_shape must be (height, width) >= 1, got {image_shape}")
        check_positive_ints(name, patch_size=patch_size)
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"{name}: drop_path must be in [0, 1), got {drop_path}")
        if alternate_shift and "shift" not in inspect.signature(layer).parameters:
            raise ValueError(f"{name}: alternate_shift needs a layer with a `shift` argument (ssm.NSSMamba)")
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.d_input = d_input
        self.token_encoder = TokenEncoder(n_tokens, d_model) if n_tokens else None
        channels_in = d_model if n_tokens else int(d_input)
        self.patch_size = int(patch_size)
        self.patch_embed = nn.Conv2d(channels_in, d_model, self.patch_size, stride=self.patch_size)
        self.patch_norm = nn.LayerNorm(d_model)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        index = 0
        dim = d_model
        for s, depth in enumerate(depths):
            stage = nn.Sequential()
            if s > 0:
                stage.append(Downsample(dim, 2 * dim))
                dim *= 2
            for _ in range(depth):
                mixer = layer(dim, shift=index % 2 == 1) if alternate_shift else layer(dim)
                stage.append(ImageBlock(dim, mixer, mlp_ratio, dropout, rates[index], norm, prenorm))
                index += 1
            self.stages.append(stage)
        self.norm = ImageNorm(norm, dim) if prenorm else nn.Identity()
        self.head = nn.Linear(dim, d_output)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _as_image(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs -> (B, H, W, channels_in)."""
        name = type(self).__name__
        H, W = self.image_shape
        if self.token_encoder is not None:
            if x.dim() == 3 and x.shape[1:] == (H, W):
                x = x.reshape(x.shape[0], H * W)
            if x.dim() != 2 or x.shape[1] != H * W:
                raise ValueError(f"{name}: expected token ids (B, {H * W}) or (B, {H}, {W}), got {tuple(x.shape)}")
            return self.token_encoder(x).view(x.shape[0], H, W, -1)
        if not x.is_floating_point():
            raise TypeError(f"{name}: expected floating-point features (d_input={self.d_input}), got {x.dtype}")
        check_input_dtype(x, self, name)
        if x.dim() == 3 and x.shape[1] == H * W and x.shape[2] == self.d_input:
            return x.reshape(x.shape[0], H, W, self.d_input)
        if x.dim() == 4 and x.shape[1:] == (H, W, self.d_input):
            return x
        raise ValueError(
            f"{name}: expected x of shape (B, {H * W}, {self.d_input}) or (B, {H}, {W}, {self.d_input}), "
            f"got {tuple(x.shape)}"
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x as described above -> logits (B, d_output). ``lengths`` must be None or full:
        images have no padding."""
        if lengths is not None:
            batch = x.shape[0] if torch.is_tensor(x) else None
            check_lengths(lengths, batch, self.image_shape[0] * self.image_shape[1], type(self).__name__)
            if bool((lengths != self.image_shape[0] * self.image_shape[1]).any()):
                raise ValueError(f"{type(self).__name__}: images cannot be padded, got lengths {lengths.tolist()}")
        x = self._as_image(x).permute(0, 3, 1, 2)
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[-1] % p, 0, -x.shape[-2] % p))
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        for stage in self.stages:
            x = stage(x)
        x = self.norm(x)
        return self.head(x.mean(dim=(1, 2)) if self.pooling == "mean" else x[:, -1, -1])
