"""Dual encoder for document matching (LRA Retrieval): one shared encoder for both documents,
pooled features combined as [a, b, a ⊙ b, a - b] and classified by a small MLP."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ssm.blocks import SequenceBackbone
from ssm.models.encoders import TokenEncoder
from ssm.models.pooling import pool


class RetrievalClassifier(nn.Module):
    """Classify pairs of token sequences with a shared SSM encoder.

    ``forward(x, lengths=None)`` takes x of shape (2, B, L) (the two documents, right-padded
    to one length) and lengths (2, B); both documents run through the backbone as one batch
    of 2B, are pooled to a, b of shape (B, d_model), and

        logits = W2 GELU(W1 [a, b, a ⊙ b, a - b] + b1) + b2      (B, d_output)

    Args:
        d_model, n_layers, layer, norm, prenorm, dropout: as in
            :class:`ssm.models.SequenceClassifier`.
        d_output: number of classes (2 for LRA Retrieval).
        n_tokens: vocabulary size of the token encoder.
        pooling: "mean" or "last".
        output: the block's gated output map ("glu", "half_glu1", "half_glu2", or "none" for full mixers such as Mamba).
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
    ) -> None:
        super().__init__()
        if n_tokens is None or d_input is not None:
            raise ValueError("RetrievalClassifier: token inputs only; give n_tokens and no d_input")
        if pooling not in ("mean", "last"):
            raise ValueError(f"RetrievalClassifier: pooling must be 'mean' or 'last', got {pooling!r}")
        self.encoder = TokenEncoder(n_tokens, d_model)
        self.backbone = SequenceBackbone(d_model, n_layers, layer, norm, prenorm, dropout, output)
        self.pooling = pooling
        self.head = nn.Sequential(nn.Linear(4 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_output))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (2, B, L) token ids, lengths (2, B) or None -> logits (B, d_output)."""
        if x.dim() != 3 or x.shape[0] != 2:
            raise ValueError(f"RetrievalClassifier: expected x of shape (2, batch, length), got {tuple(x.shape)}")
        _, B, L = x.shape
        if lengths is not None:
            if not torch.is_tensor(lengths) or lengths.shape != (2, B):
                shape = tuple(lengths.shape) if torch.is_tensor(lengths) else type(lengths).__name__
                raise ValueError(f"RetrievalClassifier: expected lengths of shape (2, {B}), got {shape}")
            lengths = lengths.reshape(2 * B)
        h = self.backbone(self.encoder(x.reshape(2 * B, L)), lengths)
        pooled = pool(h, lengths, self.pooling)
        a, b = pooled[:B], pooled[B:]
        return self.head(torch.cat([a, b, a * b, a - b], dim=-1))
