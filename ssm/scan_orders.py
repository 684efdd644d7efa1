"""Orders in which a 2D scan visits the pixels of an Hgt × Wdt image.

An order is a permutation ``perm``, a LongTensor (Hgt·Wdt,), of row-major pixel indices:
``perm[k]`` is the row-major index i·Wdt + j of the k-th pixel visited. A (B, C, Hgt·Wdt)
row-major tensor is flattened in that order by ``apply(x, perm)`` (``x[..., perm]``) and
brought back by ``undo(y, perm)`` (``y[..., inverse(perm)]``).

Orders: ``row_major``, ``column_major``, ``reverse`` (any order backwards), and MaIR's nested
S-shaped order ``nss`` (Li et al., CVPR 2025) with its four directions ``nss_directions``.
Every function accepts any Hgt, Wdt >= 1; results are cached per arguments and returned as
fresh tensors.
"""

from __future__ import annotations

import functools

import torch


def _check_size(H: int, W: int, name: str) -> None:
    for arg, value in (("Hgt", H), ("Wdt", W)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")


def row_major(H: int, W: int) -> torch.Tensor:
    """Rows top to bottom, each left to right: the identity permutation."""
    _check_size(H, W, "row_major")
    return torch.arange(H * W)


def column_major(H: int, W: int) -> torch.Tensor:
    """Columns left to right, each top to bottom: perm[j·H + i] = i·W + j."""
    _check_size(H, W, "column_major")
    return torch.arange(H * W).view(H, W).t().reshape(-1)


def reverse(perm: torch.Tensor) -> torch.Tensor:
    """The same order walked backwards."""
    return perm.flip(0)


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes ``perm``: inverse(perm)[perm[k]] = k."""
    if perm.dim() != 1:
        raise ValueError(f"inverse: expected a 1D permutation, got shape {tuple(perm.shape)}")
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def apply(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x (..., Hgt·Wdt) in row-major order -> (..., Hgt·Wdt) in the order ``perm``."""
    return x[..., perm.to(x.device)]


def undo(y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """y (..., Hgt·Wdt) in the order ``perm`` -> row-major order (undoes :func:`apply`)."""
    return y[..., inverse(perm).to(y.device)]


def _stripes(W: int, stripe: int, shift: bool) -> list[tuple[int, int, bool]]:
    """(first column, width, full) of the vertical stripes, left to right."""
    bounds = []
    start = 0
    if shift and stripe // 2 > 0 and stripe // 2 < W:
        bounds.append((0, stripe // 2, True))  # the shifted first stripe counts as a regular one
        start = stripe // 2
    while start < W:
        width = min(stripe, W - start)
        bounds.append((start, width, width == stripe or start == 0))
        start += width
    return bounds


@functools.lru_cache(maxsize=128)
def _nss(H: int, W: int, stripe: int, shift: bool) -> torch.Tensor:
    index = torch.arange(H * W).view(H, W)
    parts = []
    for s, (c0, width, full) in enumerate(_stripes(W, stripe, shift)):
        block = index[:, c0 : c0 + width]
        if full and s % 2 == 1:  # odd stripes are walked bottom to top
            block = block.flip(0)
        block = block.clone()
        block[1::2] = block[1::2].flip(1)  # boustrophedon: every second row right to left
        parts.append(block.reshape(-1))
    return torch.cat(parts)


def nss(H: int, W: int, stripe: int, shift: bool = False) -> torch.Tensor:
    """MaIR's nested S-shaped order.

    The width is cut into vertical stripes of ``stripe`` columns; stripes are visited left
    to right, each row by row, and inside a stripe every second row (counted along the walk)
    runs right to left, so consecutive pixels are neighbours. Odd-numbered stripes are
    walked bottom to top, so that a stripe starts on the row where the previous one ended.
    With ``shift`` (MaIR's shifted variant, used on every second block) the first stripe is
    ``stripe // 2`` wide and the rest follow at the regular width.

    Where the walk still jumps (inherited from MaIR, documented rather than hidden):
    - with even Hgt, a stripe ends at its left column (its last row ran right to left) and
      the next begins at its own left column, ``stripe`` pixels away, e.g. 15 at (3, 0) ->
      16 at (3, 4) for 4 × 8 with stripe 4; with odd Hgt the hand-over is adjacent;
    - a narrower remainder stripe at the right edge (Wdt - offset not a multiple of
      ``stripe``) is walked top to bottom whatever its index, so it starts away from
      where the previous stripe ended.

    ``stripe >= Wdt`` gives a plain boustrophedon over the whole image.
    """
    _check_size(H, W, "nss")
    if isinstance(stripe, bool) or int(stripe) != stripe or stripe < 1:
        raise ValueError(f"nss: stripe must be a positive integer, got {stripe!r}")
    return _nss(int(H), int(W), int(stripe), bool(shift)).clone()


@functools.lru_cache(maxsize=128)
def _nss_directions(H: int, W: int, stripe: int, shift: bool) -> torch.Tensor:
    index = torch.arange(H * W).view(H, W)
    images = (index, index.flip(0, 1), index.t(), index.flip(0, 1).t())  # x, rot180 x, xᵀ, (rot180 x)ᵀ
    return torch.stack([img.reshape(-1)[_nss(*img.shape, stripe, shift)] for img in images])


def nss_directions(H: int, W: int, stripe: int, shift: bool = False) -> torch.Tensor:
    """MaIR's four sequences as permutations of the original row-major indices, (4, Hgt·Wdt):
    NSS(x), NSS(rot180 x), NSS(xᵀ), NSS((rot180 x)ᵀ) (the transposed ones use the NSS order of
    a Wdt × Hgt image)."""
    _check_size(H, W, "nss_directions")
    if isinstance(stripe, bool) or int(stripe) != stripe or stripe < 1:
        raise ValueError(f"nss_directions: stripe must be a positive integer, got {stripe!r}")
    return _nss_directions(int(H), int(W), int(stripe), bool(shift)).clone()


__all__ = ["apply", "column_major", "inverse", "nss", "nss_directions", "reverse", "row_major", "undo"]
