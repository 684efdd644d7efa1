"""Right padding: checks of a batch's valid ``lengths`` and the mask they define."""

from __future__ import annotations

import torch

from ssm.layers._checks import require


def check_lengths(lengths, batch: int, L: int, name: str) -> None:
    """Require None or an integer tensor of shape (batch,) with values in [1, L]. A float
    or bool tensor would index or divide silently wrong."""
    if lengths is None:
        return
    if not torch.is_tensor(lengths) or lengths.dtype == torch.bool or lengths.is_floating_point() \
            or lengths.is_complex():
        kind = lengths.dtype if torch.is_tensor(lengths) else type(lengths).__name__
        raise TypeError(f"{name}: lengths must be an integer tensor of shape ({batch},), got {kind}")
    message = f"{name}: expected lengths of shape ({batch},) with values in [1, {L}], got shape {tuple(lengths.shape)}"
    if lengths.shape != (batch,):
        raise ValueError(message)
    if batch:
        require(((lengths >= 1) & (lengths <= L)).all(), ValueError, message)


def padding_mask(lengths: torch.Tensor | None, L: int, device) -> torch.Tensor | None:
    """(B, L, 1) mask, 1 at the first ``lengths[b]`` steps and 0 on the right padding."""
    if lengths is None:
        return None
    return (torch.arange(L, device=device)[None, :] < lengths.to(device)[:, None]).unsqueeze(-1)


def check_mask(mask, batch: int, L: int, name: str) -> torch.Tensor | None:
    """Require None or a (batch, L, 1) padding mask of 0s and 1s (bool, integer or float).
    A (batch, L) mask would broadcast along the wrong axes, and other values would scale the
    input instead of selecting it."""
    if mask is None:
        return None
    if not torch.is_tensor(mask) or tuple(mask.shape) != (batch, L, 1):
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise ValueError(f"{name}: expected a padding mask of shape ({batch}, {L}, 1), got {shape}")
    if mask.dtype != torch.bool:
        require(((mask == 0) | (mask == 1)).all(), ValueError,
                f"{name}: the padding mask must hold only 0 and 1 (1 on valid steps)")
    return mask


def check_layer_mask(mask, batch: int, L: int, name: str) -> torch.Tensor | None:
    """:func:`check_mask` for a layer's own ``mask`` argument, which also takes the (batch, L)
    form a direct caller writes (the layer knows its time axis): returns (batch, L, 1)."""
    if torch.is_tensor(mask) and mask.dim() == 2:
        mask = mask.unsqueeze(-1)
    return check_mask(mask, batch, L, name)
