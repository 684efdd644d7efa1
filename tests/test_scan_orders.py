"""ssm.scan_orders: every order is a permutation, inverses round-trip, MaIR's documented NSS
table and hand-worked shifted / remainder examples are reproduced exactly, the walk jumps
only where documented, and the four NSS directions are NSS on the rotated / transposed
images."""

import pytest
import torch

from ssm import scan_orders as so

SIZES = [(1, 1), (1, 5), (4, 1), (2, 3), (3, 5), (4, 8), (7, 4), (6, 9), (5, 12)]
STRIPES = [1, 2, 3, 4, 8]


def visit_grid(perm, H, W):
    """grid[i, j] = the step at which pixel (i, j) is visited."""
    grid = torch.empty(H * W, dtype=torch.long)
    grid[perm] = torch.arange(H * W)
    return grid.view(H, W)


def is_permutation(perm, n):
    return perm.dtype == torch.long and perm.shape == (n,) and torch.equal(perm.sort().values, torch.arange(n))


def walk(H, W, stripe, shift):
    """The nested S-shaped walk step by step: stripes left to right (the first one
    stripe // 2 wide when shifted), stripe s from the top when s is even and from the bottom
    when odd, the t-th row of a stripe's walk left to right when t is even; shifted with
    stripe // 2 > W, MaIR's row-major order."""
    if shift and stripe // 2 > W:
        return torch.arange(H * W)
    widths = []
    if shift and 0 < stripe // 2 < W:
        widths.append(stripe // 2)
    while sum(widths) < W:
        widths.append(min(stripe, W - sum(widths)))
    order, c0 = [], 0
    for s, width in enumerate(widths):
        rows = range(H) if s % 2 == 0 else range(H - 1, -1, -1)
        for t, i in enumerate(rows):
            cols = range(c0, c0 + width) if t % 2 == 0 else range(c0 + width - 1, c0 - 1, -1)
            order += [i * W + j for j in cols]
        c0 += width
    return torch.tensor(order)


def steps(perm, W):
    """Manhattan distance between consecutive pixels of the walk."""
    i, j = perm // W, perm % W
    return (i.diff().abs() + j.diff().abs()).tolist()


def test_mair_table_h4_w8_stripe4():
    expected = torch.tensor([
        [0, 1, 2, 3, 31, 30, 29, 28],
        [7, 6, 5, 4, 24, 25, 26, 27],
        [8, 9, 10, 11, 23, 22, 21, 20],
        [15, 14, 13, 12, 16, 17, 18, 19],
    ])
    assert torch.equal(visit_grid(so.nss(4, 8, 4), 4, 8), expected)


def test_shifted_4x8_by_hand():
    # widths 2 (cols 0-1, down), 4 (cols 2-5, stripe 1: up), remainder 2 (cols 6-7, stripe 2:
    # down, no vertical flip)
    expected = torch.tensor([
        [0, 1, 23, 22, 21, 20, 24, 25],
        [3, 2, 16, 17, 18, 19, 27, 26],
        [4, 5, 15, 14, 13, 12, 28, 29],
        [7, 6, 8, 9, 10, 11, 31, 30],
    ])
    assert torch.equal(visit_grid(so.nss(4, 8, 4, shift=True), 4, 8), expected)


def test_shifted_4x12_odd_numbered_remainder_is_walked_up():
    # widths 2, 4, 4, 2: the remainder is stripe 3, odd, so (as in MaIR) bottom to top
    expected = torch.tensor([
        [0, 1, 23, 22, 21, 20, 24, 25, 26, 27, 47, 46],
        [3, 2, 16, 17, 18, 19, 31, 30, 29, 28, 44, 45],
        [4, 5, 15, 14, 13, 12, 32, 33, 34, 35, 43, 42],
        [7, 6, 8, 9, 10, 11, 39, 38, 37, 36, 40, 41],
    ])
    assert torch.equal(visit_grid(so.nss(4, 12, 4, shift=True), 4, 12), expected)


def test_unshifted_remainder_takes_part_in_the_alternation():
    # 3 x 6, stripe 4: a 4-wide stripe, then a 2-wide remainder (stripe 1, walked up); with
    # odd Hgt the whole walk moves between neighbours
    expected = torch.tensor([
        [0, 1, 2, 3, 16, 17],
        [7, 6, 5, 4, 15, 14],
        [8, 9, 10, 11, 12, 13],
    ])
    assert torch.equal(visit_grid(so.nss(3, 6, 4), 3, 6), expected)


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("stripe", STRIPES)
@pytest.mark.parametrize("shift", [False, True])
def test_nss_is_the_step_by_step_walk_and_a_permutation(H, W, stripe, shift):
    perm = so.nss(H, W, stripe, shift)
    assert is_permutation(perm, H * W)
    assert torch.equal(perm, walk(H, W, stripe, shift))
    assert torch.equal(perm[so.inverse(perm)], torch.arange(H * W))
    assert torch.equal(so.inverse(perm)[perm], torch.arange(H * W))
    assert sum(w for _, w in so.stripes(W, stripe, shift)) == W


@pytest.mark.parametrize("H", [1, 3, 5, 7])
@pytest.mark.parametrize("W, stripe, shift", [(8, 4, False), (6, 4, False), (12, 4, True), (9, 2, True), (5, 3, True)])
def test_odd_height_walk_moves_between_neighbours_only(H, W, stripe, shift):
    assert set(steps(so.nss(H, W, stripe, shift), W)) == {1} or H * W == 1


@pytest.mark.parametrize("H", [2, 4, 6])
@pytest.mark.parametrize("W, stripe, shift", [(8, 4, False), (6, 4, False), (12, 4, True), (9, 2, True), (5, 3, True)])
def test_even_height_walk_jumps_exactly_at_stripe_hand_overs(H, W, stripe, shift):
    # the hand-over into stripe s jumps by the width of stripe s - 1 along the edge row
    bounds = so.stripes(W, stripe, shift)
    hand_overs, jumps, seen = {}, {}, 0
    for _, width in bounds[:-1]:
        seen += H * width
        hand_overs[seen - 1] = width
    for k, d in enumerate(steps(so.nss(H, W, stripe, shift), W)):
        if d != 1:
            jumps[k] = d
    assert jumps == {k: w for k, w in hand_overs.items() if w != 1}


def test_even_height_hand_over_of_the_table():
    perm = so.nss(4, 8, 4)
    assert perm[15].item() == 3 * 8 + 0 and perm[16].item() == 3 * 8 + 4


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("shift", [False, True])
def test_stripe_at_least_the_width_is_a_plain_boustrophedon(H, W, shift):
    expected = torch.arange(H * W).view(H, W).clone()
    expected[1::2] = expected[1::2].flip(1)
    # shifted: the half stripe must cover the width exactly (wider: MaIR's row-major order)
    for stripe in (2 * W, 2 * W + 1) if shift else (W, W + 1, 3 * W + 2):
        assert torch.equal(so.nss(H, W, stripe, shift), expected.reshape(-1))


@pytest.mark.parametrize("H, W", SIZES)
def test_stripe_one_is_a_column_snake(H, W):
    expected = torch.arange(H * W).view(H, W).t().clone()  # column j is row j here
    expected[1::2] = expected[1::2].flip(1)
    assert torch.equal(so.nss(H, W, 1), expected.reshape(-1))
    assert torch.equal(so.nss(H, W, 1, shift=True), expected.reshape(-1))


@pytest.mark.parametrize("H, W", SIZES)
def test_row_major_column_major_and_reverse(H, W):
    x = torch.randn(2, 3, H, W)
    flat = x.reshape(2, 3, H * W)
    assert torch.equal(so.row_major(H, W), torch.arange(H * W))
    assert torch.equal(so.apply(flat, so.row_major(H, W)), flat)
    assert torch.equal(so.apply(flat, so.column_major(H, W)), x.transpose(2, 3).reshape(2, 3, H * W))
    assert torch.equal(so.apply(flat, so.reverse(so.row_major(H, W))), flat.flip(-1))
    assert torch.equal(so.apply(flat, so.reverse(so.column_major(H, W))), x.transpose(2, 3).reshape(2, 3, -1).flip(-1))
    for perm in (so.row_major(H, W), so.column_major(H, W), so.nss(H, W, 2), so.nss(H, W, 3, True)):
        assert is_permutation(perm, H * W)
        assert torch.equal(so.undo(so.apply(flat, perm), perm), flat)
        assert torch.equal(so.apply(so.undo(flat, perm), perm), flat)
        assert torch.equal(so.inverse(so.inverse(perm)), perm)


@pytest.mark.parametrize("H, W", SIZES)
@pytest.mark.parametrize("stripe", [2, 3])
@pytest.mark.parametrize("shift", [False, True])
def test_nss_directions_are_nss_of_rotated_and_transposed_images(H, W, stripe, shift):
    x = torch.randn(H, W)
    dirs = so.nss_directions(H, W, stripe, shift)
    assert dirs.shape == (4, H * W) and dirs.dtype == torch.long
    images = (x, x.rot90(2), x.t(), x.rot90(2).t())
    for k, img in enumerate(images):
        h, w = img.shape
        assert torch.equal(x.reshape(-1)[dirs[k]], img.reshape(-1)[so.nss(h, w, stripe, shift)])
        assert is_permutation(dirs[k], H * W)
    inv = so.inverse(dirs)  # all four at once
    assert torch.equal(torch.gather(dirs, 1, inv), torch.arange(H * W).expand(4, -1))


def test_results_are_fresh_tensors():
    for make in (lambda: so.nss(4, 8, 4), lambda: so.nss_directions(4, 8, 4)):
        a = make()
        a.view(-1)[0] = 99
        assert make().view(-1)[0].item() == 0


@pytest.mark.parametrize("args", [(0, 4, 2), (4, -1, 2), (4, 4, 0), (4, 4, 1.5), (True, 4, 2), (4, None, 2), (4, "4", 2)])
def test_bad_sizes_raise_value_error(args):
    with pytest.raises(ValueError, match="must be a positive integer"):
        so.nss(*args)
    with pytest.raises(ValueError, match="must be a positive integer"):
        so.nss_directions(*args)


def test_bad_permutations():
    with pytest.raises(TypeError, match="LongTensor permutation"):
        so.inverse(torch.arange(4.0))
    for not_a_permutation in (torch.tensor([0, 0, 1]), torch.tensor([0, 1, 3]), torch.tensor([[0, 1], [1, 1]])):
        with pytest.raises(ValueError, match="each index exactly once"):
            so.inverse(not_a_permutation)
    with pytest.raises(ValueError, match="each index exactly once"):
        so.undo(torch.randn(2, 3), torch.tensor([2, 0, 2]))
    with pytest.raises(TypeError, match="LongTensor permutation"):
        so.apply(torch.randn(2, 4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., 4\)"):
        so.apply(torch.randn(2, 5), torch.arange(4))
    with pytest.raises(ValueError, match="expected y of shape"):
        so.undo(torch.randn(2, 4), torch.arange(4).view(2, 2))
    with pytest.raises(ValueError, match="must be a positive integer"):
        so.row_major(0, 3)
    with pytest.raises(ValueError, match="must be a positive integer"):
        so.column_major(3, 2.5)


def test_shifted_order_narrower_than_half_a_stripe_is_mairs_row_major():
    """MaIR flips the odd rows of such a map twice (shifted first stripe, then the remainder
    from a negative width) and returns row-major order; at half a stripe exactly it is the
    plain boustrophedon."""
    assert so.nss(2, 2, 8, True).tolist() == [0, 1, 2, 3]
    assert so.nss(3, 3, 8, True).tolist() == list(range(9))
    assert so.nss(4, 2, 8, True).tolist() == list(range(8))
    assert so.nss(2, 4, 8, True).tolist() == [0, 1, 2, 3, 7, 6, 5, 4]
    assert so.nss(2, 3, 8, False).tolist() == [0, 1, 2, 5, 4, 3]  # unshifted: one stripe, boustrophedon
    directions = so.nss_directions(2, 4, 8, True)  # the transposed directions see a 4 x 2 map
    assert directions[2].tolist() == torch.arange(8).view(2, 4).t().reshape(-1).tolist()


def test_reverse_flips_each_row_of_a_batch_of_permutations():
    """Guards reverse on (..., n): every permutation walked backwards along the last dim, not the rows reordered."""
    dirs = so.nss_directions(3, 5, 2)
    rev = so.reverse(dirs)
    assert rev.shape == (4, 15)
    for k in range(4):
        assert rev[k].tolist() == dirs[k].tolist()[::-1]
