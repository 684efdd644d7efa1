"""Orders in which a 2D scan visits the pixels of an Hgt × Wdt image.

An order is a permutation ``perm``, a LongTensor (Hgt·Wdt,), of row-major pixel indices:
``perm[k]`` is the row-major index i·Wdt + j of the k-th pixel visited. A (..., Hgt·Wdt)
row-major tensor is flattened in that order by ``apply(x, perm)`` (``x[..., perm]``) and
brought back by ``undo(y, perm)`` (``y[..., inverse(perm)]``).

Orders: ``row_major``, ``column_major``, ``reverse`` (any order walked backwards), and MaIR's
nested S-shaped order ``nss`` (Li et al., CVPR 2025) with its four directions
``nss_directions``. Every function accepts any Hgt, Wdt >= 1 (and any stripe >= 1); the
index tables are built once per arguments (cached) and every call returns a fresh tensor,
so callers may modify what they get.
"""

from __future__ import annotations

import torch

from kernels._compile import cached_outside_compile


def _check_positive(name: str, **values) -> None:
    for arg, value in values.items():
        if isinstance(value, bool) or not _integral(value) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive integer, got {value!r}")


def _integral(value) -> bool:
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def _check_perm(name: str, perm: torch.Tensor) -> None:
    if not torch.is_tensor(perm) or perm.dtype != torch.long or perm.dim() < 1:
        got = f"{perm.dtype} of shape {tuple(perm.shape)}" if torch.is_tensor(perm) else type(perm).__name__
        raise TypeError(f"{name}: expected a LongTensor permutation of shape (..., n), got {got}")


def row_major(H: int, W: int) -> torch.Tensor:
    """Rows top to bottom, each left to right: the identity, LongTensor (Hgt·Wdt,)."""
    _check_positive("row_major", Hgt=H, Wdt=W)
    return torch.arange(int(H) * int(W))


def column_major(H: int, W: int) -> torch.Tensor:
    """Columns left to right, each top to bottom, LongTensor (Hgt·Wdt,):
    perm[j·Hgt + i] = i·Wdt + j."""
    _check_positive("column_major", Hgt=H, Wdt=W)
    H, W = int(H), int(W)
    return torch.arange(H * W).view(H, W).t().reshape(-1)


def reverse(perm: torch.Tensor) -> torch.Tensor:
    """The same order walked backwards: (..., n) -> (..., n), flipped along the last dim."""
    _check_perm("reverse", perm)
    return perm.flip(-1)


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes ``perm`` (its argsort), same shape (..., n):
    ``inverse(perm)[..., perm[..., k]] = k``. Leading dims hold independent permutations,
    e.g. the (4, Hgt·Wdt) output of :func:`nss_directions`. That each row is a permutation is
    checked in eager mode; under ``torch.compile`` the check (a data-dependent branch) is left
    out, so a compiled graph has no break here."""
    _check_perm("inverse", perm)
    n = perm.shape[-1]
    steps = torch.arange(n, device=perm.device).expand_as(perm)
    if not torch.compiler.is_compiling() and not torch.equal(perm.sort(dim=-1).values, steps):
        got = perm.tolist() if perm.numel() <= 16 else "repeated or out-of-range indices"
        raise ValueError(f"inverse: expected permutations of 0 .. {n - 1} along the last dim "
                         f"(each index exactly once), got {got}")
    return torch.empty_like(perm).scatter_(-1, perm, steps)


def apply(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x (..., Hgt·Wdt) in row-major order -> (..., Hgt·Wdt) in the order ``perm`` (n,)."""
    _check_perm("apply", perm)
    if perm.dim() != 1 or x.shape[-1] != perm.numel():
        raise ValueError(f"apply: expected x of shape (..., {perm.numel()}) and perm of shape (n,), "
                         f"got x {tuple(x.shape)} and perm {tuple(perm.shape)}")
    return x.index_select(-1, perm.to(x.device))


def undo(y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """y (..., Hgt·Wdt) in the order ``perm`` (n,) -> row-major order (undoes :func:`apply`)."""
    _check_perm("undo", perm)
    if perm.dim() != 1 or y.shape[-1] != perm.numel():
        raise ValueError(f"undo: expected y of shape (..., {perm.numel()}) and perm of shape (n,), "
                         f"got y {tuple(y.shape)} and perm {tuple(perm.shape)}")
    return y.index_select(-1, inverse(perm).to(y.device))


def stripes(W: int, stripe: int, shift: bool = False) -> list[tuple[int, int]]:
    """The vertical stripes of the nested S-shaped order, left to right, as (first column,
    width): a first stripe of ``stripe // 2`` columns when ``shift`` (and 0 < stripe // 2 <
    Wdt), then stripes of ``stripe`` columns, the last one narrower when they do not fill
    the width (the remainder stripe)."""
    _check_positive("stripes", Wdt=W, stripe=stripe)
    W, stripe = int(W), int(stripe)
    bounds = []
    start = 0
    half = stripe // 2
    if shift and 0 < half < W:
        bounds.append((0, half))
        start = half
    while start < W:
        width = min(stripe, W - start)
        bounds.append((start, width))
        start += width
    return bounds


@cached_outside_compile(maxsize=256)
def _nss(H: int, W: int, stripe: int, shift: bool) -> torch.Tensor:
    if shift and stripe // 2 > W:  # MaIR's double flip (see nss)
        return torch.arange(H * W)
    index = torch.arange(H * W).view(H, W)
    parts = []
    for s, (c0, width) in enumerate(stripes(W, stripe, shift)):
        block = index[:, c0 : c0 + width]
        if s % 2 == 1:  # odd stripes, the remainder included, are walked bottom to top
            block = block.flip(0)
        block = block.clone()
        block[1::2] = block[1::2].flip(1)  # every second row of the walk runs right to left
        parts.append(block.reshape(-1))
    return torch.cat(parts)


def nss(H: int, W: int, stripe: int, shift: bool = False) -> torch.Tensor:
    """MaIR's nested S-shaped order, LongTensor (Hgt·Wdt,) of row-major indices.

    1. The width is cut into vertical stripes of ``stripe`` columns (:func:`stripes`).
    2. Stripes are visited left to right; odd-numbered ones (0-based) are walked bottom to
       top, so a stripe starts on the row (top or bottom) where the previous one ended.
    3. Inside a stripe the walk goes row by row, every second row (counted along the walk)
       right to left (boustrophedon), so consecutive pixels inside a stripe are neighbours.
    4. ``shift`` (MaIR's shifted variant, used on every second block): the first stripe is
       ``stripe // 2`` columns wide and the regular stripes follow from there, so the
       stripe borders move by half a stripe. ``stripe == 1`` has nothing to shift.

    For Hgt = 4, Wdt = 8, stripe = 4 the step at which each pixel is visited is::

         0  1  2  3 31 30 29 28
         7  6  5  4 24 25 26 27
         8  9 10 11 23 22 21 20
        15 14 13 12 16 17 18 19

    Where the walk is not between neighbouring pixels (inherited from MaIR, kept for
    compatibility with its trained weights):

    - With even Hgt every hand-over between stripes jumps: a stripe's last row runs right
      to left and ends at its left column, and the next stripe starts at its own left
      column, the previous stripe's width away (15 at (3, 0) -> 16 at (3, 4) above). With odd Hgt the
      last row runs left to right and every hand-over is to a neighbour.
    - The remainder stripe (the last one, narrower, when the stripes do not fill the width)
      takes part in the same alternation as the others: MaIR's index generator flips it
      vertically when its number is odd. It is therefore walked top to bottom, without the
      vertical flip, only when its number is even — as in the shifted order of a width that
      is an even multiple of ``stripe`` (4 × 8, stripe 4: widths 2, 4, 2, the last walked
      down), and bottom to top otherwise (4 × 12, stripe 4, shifted: widths 2, 4, 4, 2).
      Entering it is to a neighbour or a jump exactly as for the other stripes, by the
      parity of Hgt; only its rows are shorter.

    One stripe covering the width, ``stripe >= Wdt`` (with ``shift``: ``stripe // 2 ==
    Wdt``), gives a plain boustrophedon over the whole image; ``stripe == 1`` a snake along
    the columns. With ``shift`` and ``stripe // 2 > Wdt`` (e.g. stripe 8 on a 3-wide map of
    a late stage) MaIR's generator flips the odd rows twice (once as the shifted first stripe,
    once as the remainder, whose width it computes from the negative ``Wdt - stripe // 2``)
    and returns the plain row-major order; so does this function, for its trained weights.

    Args:
        H, W: image height and width, >= 1.
        stripe: stripe width in columns, >= 1 (MaIR's ``scan_len``: 4 or 8).
        shift: the shifted variant.
    """
    _check_positive("nss", Hgt=H, Wdt=W, stripe=stripe)
    return _nss(int(H), int(W), int(stripe), bool(shift)).clone()


@cached_outside_compile(maxsize=256)
def _nss_directions(H: int, W: int, stripe: int, shift: bool) -> torch.Tensor:
    index = torch.arange(H * W).view(H, W)
    rot = index.flip(0, 1)
    images = (index, rot, index.t(), rot.t())  # x, rot180 x, xᵀ, (rot180 x)ᵀ
    return torch.stack([img.reshape(-1)[_nss(*img.shape, stripe, shift)] for img in images])


def nss_directions(H: int, W: int, stripe: int, shift: bool = False) -> torch.Tensor:
    """MaIR's K = 4 sequences as permutations of the original row-major indices, LongTensor
    (4, Hgt·Wdt): NSS(x), NSS(rot180 x), NSS(xᵀ), NSS((rot180 x)ᵀ).

    The first two use the nss order of an Hgt × Wdt image, the transposed two that of a
    Wdt × Hgt image (the stripes then cut the original height, and ``shift`` shifts them
    too). Row k gathers sequence k from a row-major (..., Hgt·Wdt) tensor:
    ``x[..., perms[k]]``; ``inverse(perms)`` undoes all four at once.
    """
    _check_positive("nss_directions", Hgt=H, Wdt=W, stripe=stripe)
    return _nss_directions(int(H), int(W), int(stripe), bool(shift)).clone()


__all__ = ["apply", "column_major", "inverse", "nss", "nss_directions", "reverse", "row_major", "stripes", "undo"]
