"""Sequence classifier: encoder -> residual SSM backbone -> pooling -> linear head."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ssm.blocks import SequenceBackbone
from ssm.layers._checks import check_positive_ints
from ssm.models.encoders import LinearEncoder, TokenEncoder
from ssm.models.pooling import POOLINGS, pool


class SequenceClassifier(nn.Module):
    """Classify whole sequences.

    Exactly one of ``n_tokens`` (token ids (B, L) -> embedding) and ``d_input`` (features
    (B, L, d_input) -> linear) selects the encoder. ``forward(x, lengths=None)`` returns
    logits (B, d_output); ``lengths`` (B,) marks right padding: the pooling skips it and
    every layer sees it as zeros, so a padded sequence gets the logits it gets alone
    (bidirectional layers included; BatchNorm's training statistics leave the padding out).

    Args:
        d_model: width H of the backbone.
        n_layers: residual blocks.
        layer: factory ``layer(d_model) -> nn.Module`` (e.g. ``partial(ssm.S4D, d_state=64)``).
        d_output: number of classes.
        n_tokens / d_input: the encoder (see above).
        norm, prenorm, dropout: block options (see :class:`ssm.blocks.ResidualBlock`).
        pooling: "mean", "last" or "last_k" (logits at each of the last ``n_predict``
            positions: (B, n_predict, d_output), e.g. for selective copying).
        n_predict: positions predicted with pooling="last_k".
        output: the block's output map ("glu", "half_glu1", "half_glu2", or "none" for full mixers such as Mamba).
        residual: the blocks' residual connections (False: a plain stack).
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        layer: Callable[[int], nn.Module],
        d_output: int,
        n_tokens: int | None = None,
        d_input: int | None = None,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        pooling: str = "mean",
        output: str = "glu",
        n_predict: int = 1,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(n_predict, bool) or int(n_predict) != n_predict or n_predict < 1:
            raise ValueError(f"SequenceClassifier: n_predict must be a positive integer, got {n_predict!r}")
        self.n_predict = int(n_predict)
        if (n_tokens is None) == (d_input is None):
            raise ValueError(
                "SequenceClassifier: give exactly one of n_tokens (token inputs) and d_input "
                f"(feature inputs), got n_tokens={n_tokens}, d_input={d_input}"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"SequenceClassifier: pooling must be one of {POOLINGS}, got {pooling!r}")
        size = {"n_tokens": n_tokens} if n_tokens is not None else {"d_input": d_input}
        check_positive_ints("SequenceClassifier", d_model=d_model, n_layers=n_layers, d_output=d_output, **size)
        self.encoder = TokenEncoder(n_tokens, d_model) if n_tokens else LinearEncoder(d_input, d_model)
        self.backbone = SequenceBackbone(d_model, n_layers, layer, norm, prenorm, dropout, output, residual)
        self.pooling = pooling
        self.head = nn.Linear(d_model, d_output)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L) token ids or (B, L, d_input) features -> logits (B, d_output), or
        (B, n_predict, d_output) with pooling="last_k"."""
        h = self.backbone(self.encoder(x), lengths)
        return self.head(pool(h, lengths, self.pooling, self.n_predict))
