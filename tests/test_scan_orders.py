"""ssm.scan_orders: every order is a permutation, inverses round-trip, MaIR's documented
NSS table is reproduced exactly, and the four NSS directions are NSS on the rotated /
transposed images."""

import pytest
import torch

from ssm import scan_orders as so

SIZES = [(1, 1), (1, 5), (4, 1), (3, 5), (4, 8), (7, 4), (6, 9)]


def _visit_grid(perm, H, W):
    """grid[i, j] = the step at which pixel (i, j) is visited."""
    grid = torch.empty(H * W, dtype=torch.long)
    grid[perm] = torch.arange(H * W)
    return grid.view(H, W)


def _is_permutation(perm, n):
    return perm.dtype == torch.long and perm.shape == (n,) and torch.equal(perm.sort().values, torch.arange(n))


def test_mair_table_h4_w8_stripe4():
    expected = torch.tensor([
        [0, 1, 2, 3, 31, 30, 29, 28],
        [7, 6, 5, 4, 24, 25, 26, 27],
        [8, 9, 10, 11, 23, 22, 21, 20],
        [15, 14, 13, 12, 16, 17, 18, 19],
    ])
    assert torch.equal(_visit_grid(so.nss(4, 8, 4), 4, 8), expected)


def test_shifted_variant_by_hand():
    # stripes: width 2 (cols 0-1, walked down), width 4 (cols 2-5, odd: walked up), remainder
    # width 2 (cols 6-7, walked down without the flip)
    expected = torch.tensor([
        [0, 1, 23, 22, 21, 20, 24, 25],
        [3, 2, 16, 17, 18, 19, 27, 26],
        [4, 5, 15, 14, 13, 12, 28, 29],
        [7, 6, 8, 9, 10, 11, 31, 30],
    ])
    assert torch.equal(_visit_grid(so.nss(4, 8, 4, shift=True), 4, 8), expected)


def test_remainder_stripe_is_walked_top_down():
    # W = 6, stripe 4: stripe 0 (4 wide) then a remainder of 2 columns, walked from the top
    grid = _visit_grid(so.nss(3, 6, 4), 3, 6)
    assert grid[0, 4] == 12 and grid[0, 5] == 13 and grid[1, 5] == 14 and grid[2, 4] == 16


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("stripe", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shift", [False, True])
def test_nss_is_a_permutation_of_neighbour_steps_inside_stripes(H, W, stripe, shift):
    perm = so.nss(H, W, stripe, shift)
    assert _is_permutation(perm, H * W)
    assert torch.equal(perm[so.inverse(perm)], torch.arange(H * W))
    # a move between two consecutive pixels of the same row-run is one column; a row change
    # inside a stripe keeps the column (boustrophedon): every step is to a 4-neighbour or a
    # jump between stripes
    i, j = perm // W, perm % W
    steps = (i[1:] - i[:-1]).abs() + (j[1:] - j[:-1]).abs()
    jumps = int((steps != 1).sum())
    n_stripes = len(so._stripes(W, stripe, shift))
    assert jumps <= n_stripes - 1


@pytest.mark.parametrize("H", [3, 5])
def test_odd_height_hands_over_between_stripes_adjacently(H):
    perm = so.nss(H, 8, 4)
    i, j = perm // 8, perm % 8
    steps = (i[1:] - i[:-1]).abs() + (j[1:] - j[:-1]).abs()
    assert bool((steps == 1).all())


def test_even_height_hand_over_jumps_as_documented():
    perm = so.nss(4, 8, 4)
    assert perm[15].item() == 3 * 8 + 0 and perm[16].item() == 3 * 8 + 4


@pytest.mark.parametrize("H, W", SIZES)
def test_wide_stripe_is_a_plain_boustrophedon(H, W):
    expected = torch.arange(H * W).view(H, W).clone()
    expected[1::2] = expected[1::2].flip(1)
    assert torch.equal(so.nss(H, W, max(W, 1) + 3), expected.reshape(-1))


@pytest.mark.parametrize("H, W", SIZES)
def test_row_column_major_and_reverse(H, W):
    x = torch.randn(2, 3, H, W)
    flat = x.reshape(2, 3, H * W)
    assert torch.equal(so.apply(flat, so.row_major(H, W)), flat)
    assert torch.equal(so.apply(flat, so.column_major(H, W)), x.transpose(2, 3).reshape(2, 3, H * W))
    assert torch.equal(so.apply(flat, so.reverse(so.row_major(H, W))), flat.flip(-1))
    for perm in (so.row_major(H, W), so.column_major(H, W), so.nss(H, W, 2)):
        assert torch.equal(so.undo(so.apply(flat, perm), perm), flat)


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("shift", [False, True])
def test_nss_directions_are_nss_of_rotated_and_transposed_images(H, W, shift):
    x = torch.randn(H, W)
    dirs = so.nss_directions(H, W, 2, shift)
    assert dirs.shape == (4, H * W)
    images = (x, x.rot90(2), x.t(), x.rot90(2).t())
    for k, img in enumerate(images):
        h, w = img.shape
        expected = img.reshape(-1)[so.nss(h, w, 2, shift)]
        assert torch.equal(x.reshape(-1)[dirs[k]], expected)
        assert _is_permutation(dirs[k], H * W)


def test_results_are_fresh_tensors():
    a = so.nss(4, 8, 4)
    a[0] = 99
    assert so.nss(4, 8, 4)[0] == 0


@pytest.mark.parametrize("args", [(0, 4, 2), (4, -1, 2), (4, 4, 0), (4, 4, 1.5), (True, 4, 2)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        so.nss(*args)
