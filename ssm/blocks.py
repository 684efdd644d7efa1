"""Residual block around a sequence layer: norm, SSM, GELU, dropout, GLU output projection
(or nothing after the layer, for full mixers such as Mamba)."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ssm.layers._checks import check_choice, check_sequence
from ssm.padding import check_lengths, check_mask, padding_mask

NORMS = ("layer", "batch", "none")


class SequenceBatchNorm(nn.Module):
    """BatchNorm over the channels of a (batch, length, channels) tensor: ``bn``, an
    ``nn.BatchNorm1d(num_features)``, on the transposed input.

    The BatchNorm is a child module rather than the base class, so that converting a model
    for DDP (``SyncBatchNorm.convert_sync_batchnorm``, what ``trainer=ddp`` does on GPUs)
    replaces ``bn`` and keeps the transpose; a subclass was replaced whole, and the new
    SyncBatchNorm then normalized over the length axis. Checkpoints of the earlier layout
    (``norm.weight`` rather than ``norm.bn.weight``) still load. ``forward(x, mask)`` leaves
    right padding out of the batch statistics.
    """

    _STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, **kwargs)
        self._register_load_state_dict_pre_hook(self._from_flat_keys)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, C) -> (B, L, C). With a (B, L, 1) padding ``mask`` (1 on valid steps) and
        batch statistics in use (training, or no running statistics), the mean and variance
        are taken over the valid steps only, so the amount of padding in a batch changes
        neither the valid outputs nor the running statistics; padded steps come out as 0.
        In eval mode every step is normalized by the running statistics, with or without it."""
        if mask is None or not (self.bn.training or self.bn.running_mean is None):
            return self.bn(x.transpose(1, 2)).transpose(1, 2)
        valid = mask.reshape(x.shape[:2]).bool()
        out = x.new_zeros(x.shape)
        out[valid] = self.bn(x[valid])  # (steps, C): the statistics of the valid steps
        return out

    @classmethod
    def _from_flat_keys(cls, state_dict, prefix, *args) -> None:
        for name in cls._STATE:
            if prefix + name in state_dict and prefix + "bn." + name not in state_dict:
                state_dict[prefix + "bn." + name] = state_dict.pop(prefix + name)


def apply_norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``norm(x)``, handing the padding ``mask`` to a norm whose statistics span the batch
    (:class:`SequenceBatchNorm`); per-step norms (LayerNorm) need no mask."""
    return norm(x, mask) if isinstance(norm, SequenceBatchNorm) else norm(x)


def make_norm(kind: str, d_model: int) -> nn.Module:
    """``layer`` -> LayerNorm, ``batch`` -> BatchNorm over channels, ``none`` -> identity."""
    check_choice(kind, NORMS, "norm", "make_norm")
    if kind == "layer":
        return nn.LayerNorm(d_model)
    if kind == "batch":
        return SequenceBatchNorm(d_model)
    return nn.Identity()


OUTPUTS = ("glu", "half_glu1", "half_glu2", "none")


class ResidualBlock(nn.Module):
    """One residual block on (batch, length, d_model), with y = layer(x̃) and
    g = Dropout(GELU(y)):

        output="glu":        z = W₁g ⊙ σ(W₂g)     (one Linear to 2·d_model, then GLU)
        output="half_glu1":  z = g ⊙ σ(W g)       (S5's half_glu1)
        output="half_glu2":  z = y ⊙ σ(W g)       (S5's half_glu2)
        output="none":       z = y                (no activation, no projection: for a layer
                                                   that is a full mixer with its own
                                                   projections, e.g. ssm.Mamba)
        out = x + Dropout(z)        (out = Dropout(z) with residual=False)

    with x̃ = norm(x) for pre-norm, or x̃ = x and out ← norm(out) for post-norm.

    ``forward(x, mask)`` with a (B, L, 1) padding mask (1 on valid steps) zeroes x̃ on the
    padding before the layer (and hands ``mask`` to a layer whose forward takes one, e.g.
    ``ssm.Mamba``), so that a layer that looks ahead (bidirectional) sees a padded sequence
    exactly as the unpadded one.

    Args:
        d_model: channels.
        layer: a module (B, L, d_model) -> (B, L, d_model), e.g. ``ssm.S4D(d_model)``.
        norm: "layer", "batch" or "none".
        prenorm: normalize before the layer (True) or after the residual sum (False).
        dropout: dropout probability after the activation and on the residual branch.
        output: the gated output map, one of ``OUTPUTS``; "none" adds the layer's output
            to the residual directly (pre-norm: the Mamba block x + Mamba(norm(x))).
        residual: add the block's input to its output (False: a plain stack, as in the
            S4-PTD robustness protocol).
    """

    def __init__(
        self,
        d_model: int,
        layer: nn.Module,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        output: str = "glu",
        residual: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResidualBlock: dropout must be in [0, 1), got {dropout}")
        self.residual = bool(residual)
        self.output_kind = check_choice(output, OUTPUTS, "output", "ResidualBlock")
        self.d_model = d_model
        self.layer = layer
        self._layer_takes_mask = "mask" in inspect.signature(layer.forward).parameters
        self.norm = make_norm(norm, d_model)
        self.prenorm = prenorm
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        if output == "glu":
            self.output = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))
        elif output == "none":
            self.output = nn.Identity()
        else:
            self.output = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_sequence(x, self.d_model, "ResidualBlock", self)
        mask = check_mask(mask, x.shape[0], x.shape[1], "ResidualBlock")
        z = apply_norm(self.norm, x, mask) if self.prenorm else x
        if mask is None:
            y = self.layer(z)
        else:
            z = z * mask.to(z.dtype)
            y = self.layer(z, mask=mask) if self._layer_takes_mask else self.layer(z)
        if self.output_kind == "none":
            z = y
        else:
            g = self.dropout(self.activation(y))
            if self.output_kind == "glu":
                z = self.output(g)
            else:
                gate = torch.sigmoid(self.output(g))
                z = (g if self.output_kind == "half_glu1" else y) * gate
        x = x + self.dropout(z) if self.residual else self.dropout(z)
        return x if self.prenorm else apply_norm(self.norm, x, mask)


class SequenceBackbone(nn.Module):
    """A stack of ``n_layers`` residual blocks, with a final norm when pre-norm.

    Args:
        d_model: channels.
        n_layers: number of blocks.
        layer: factory ``layer(d_model) -> nn.Module``, e.g. ``functools.partial(ssm.S4D, d_state=64)``.
        norm, prenorm, dropout, output, residual: as in :class:`ResidualBlock`.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        layer: Callable[[int], nn.Module],
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        output: str = "glu",
        residual: bool = True,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"SequenceBackbone: n_layers must be >= 1, got {n_layers}")
        if not callable(layer):
            raise TypeError("SequenceBackbone: layer must be a factory layer(d_model) -> nn.Module")
        self.d_model = d_model
        self.blocks = nn.ModuleList(
            ResidualBlock(d_model, layer(d_model), norm, prenorm, dropout, output, residual) for _ in range(n_layers)
        )
        self.final_norm = make_norm(norm, d_model) if prenorm else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model); ``lengths`` (B,) marks right padding, which no
        valid step then depends on (see :class:`ResidualBlock`)."""
        mask = None
        if lengths is not None:
            check_lengths(lengths, x.shape[0], x.shape[1], "SequenceBackbone")
            mask = padding_mask(lengths, x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, mask)
        return apply_norm(self.final_norm, x, mask)
