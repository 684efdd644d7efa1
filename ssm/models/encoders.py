"""Input encoders: token ids or real features -> (batch, length, d_model)."""

from __future__ import annotations

import torch
from torch import nn

from ssm.layers._checks import check_input_dtype, require


class TokenEncoder(nn.Embedding):
    """Token ids (B, L) -> embeddings (B, L, d_model)."""

    def __init__(self, n_tokens: int, d_model: int) -> None:
        super().__init__(n_tokens, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"TokenEncoder: expected integer token ids of shape (batch, length), "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        if x.numel():
            require(((x >= 0) & (x < self.num_embeddings)).all(), ValueError,
                    f"TokenEncoder: token ids must lie in [0, {self.num_embeddings})",
                    lambda: f"got range [{int(x.min())}, {int(x.max())}]")
        return super().forward(x)


class LinearEncoder(nn.Linear):
    """Features (B, L, d_input) -> (B, L, d_model)."""

    def __init__(self, d_input: int, d_model: int) -> None:
        super().__init__(d_input, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_features or not x.is_floating_point():
            raise ValueError(
                f"LinearEncoder: expected float x of shape (batch, length, {self.in_features}), "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        check_input_dtype(x, self, "LinearEncoder")
        return super().forward(x)
