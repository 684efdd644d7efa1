"""Drawing of Long Range Arena Pathfinder images: dashed snakes and two round markers.

An image holds two target snakes, a few shorter distractor snakes and two
filled circles ("markers").  Its label is 1 when both markers sit on the tips
of the same target snake and 0 when they sit on tips of different ones.

A snake is a chain of ``n`` paddles, short bars ``paddle_length`` long and
``paddle_thickness`` thick.  Consecutive paddles are separated by a gap of
``paddle_margin`` pixels along the path, so a snake looks like a dashed curve.
The snake starts at its origin tip; each step turns by an angle drawn from
the triangular distribution on ``[-continuity * TURN_UNIT, continuity *
TURN_UNIT]`` peaked at 0 (straight on), crosses the gap and lays the next
paddle; a step that finds no room takes the last paddle back.  The "stroke"
of a snake is the path with its gaps filled in; a new piece of stroke (gap +
paddle) is rejected when it leaves the ``padding`` border or touches earlier
content dilated by the margin (a square of ``2 * margin + 1`` output
pixels), its own two latest pieces excepted.  Collisions are judged on output
pixels with any coverage, so distinct snakes and markers are never
8-neighbours in the final image.

Per image: draw the label (unless given) and a margin from
``paddle_margins``; grow the two targets (origin tips at least
``seed_distance`` apart), each accepted only with room for a marker disk at
both tips, and these four disks are blocked at once; a stuck snake gets new
origins and the image starts over when the targets cannot be placed.  Then
paint two markers (origin tip of snake ``i``; terminal tip of snake ``i`` for
label 1, of snake ``1 - i`` for label 0) and grow
``params.num_distractor_snakes(contour_length)`` distractors of
``contour_length // 3`` paddles, leaving out one that still
fails after ``SNAKE_TRIES`` origins (at 32x32 on the hard set about 1 in 15
is left out; ``meta["n_distractors"]`` says how many were drawn).
Targets and reserved disks do not depend on the label, so the snakes carry no
information about it.

Everything is drawn hard-edged at ``antialias_scale`` times the resolution,
at intensity ``min(1, snake_contrast * paddle_contrast)``, and downsampled by
area averaging to 8-bit grayscale.

``PARAMS`` is our best reconstruction of the generator settings documented for
the LRA release (values not given there fall back to the generator's
defaults: paddle length 5, paddle contrast 1, and at 256 padding 22 and seed distance
27; single paddles are off, as in the
wrapper's own run, although its ``Args`` default turns them on: which applied to
the release is not documented):

====  =======  =======  ======  =========  ======  ====  ==========  ==============  ========
res   margin   padding  paddle  thickness  marker  seed  continuity  distractors     contrast
====  =======  =======  ======  =========  ======  ====  ==========  ==============  ========
32    1        1        2       0.5        1.5     7     1.0         20 // (c // 3)  2 x 0.75
64    1        1        5       1          2.5     12    1.8         22 // (c // 3)  0.8 x 1
128   2 or 3   1        5       1.5        3       20    1.8         35 // (c // 3)  0.9 x 1
256   3        22       5       2          5       27    1.8         30 // (c // 3)  1 x 1
====  =======  =======  ======  =========  ======  ====  ==========  ==============  ========

The distractor count is the documented budget over the distractor length c // 3 for the
contour length c of the difficulty (hard, c = 14: 5, 5 and 8 snakes; easy, c = 6: 10, 11,
17). At 64 and 128 the settings write c / 3, a float; the generator (Python 2 code) divides
integers there, and its drawing loop ``while n < count`` would round a float count up
anyway, so 22 / 4.67 and 35 / 4.67 draw 5 and 8 snakes either way.

``TURN_UNIT`` (how ``continuity`` maps to an angle) is our choice, made so that
the curves look like the release's.  Lengths are in output pixels; points are
``(x, y)`` = (column, row) with pixel ``(r, c)`` covering ``[c, c+1) x [r, r+1)``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

RESOLUTIONS = (32, 64, 128, 256)
DIFFICULTIES = {
    "easy": ("curv_baseline", 6),
    "intermediate": ("curv_contour_length_9", 9),
    "hard": ("curv_contour_length_14", 14),
}
TURN_UNIT = math.pi / 4  # radians of the largest turn per unit of continuity
TURN_TRIES = 8  # headings tried for a step before taking the last paddle back
HEADINGS_PER_PADDLE = 8  # a snake gives up after this many headings per paddle
SNAKE_TRIES = 20  # origins tried for each snake
IMAGE_TRIES = 200  # fresh starts of one image before giving up
SEED_TRIES = 100  # origin draws for one far enough from the other target's
OWN_LAG = 2  # a new piece may touch this many latest pieces of its own snake


@dataclasses.dataclass(frozen=True)
class PathfinderParams:
    """Generator settings of one resolution (lengths in output pixels)."""

    paddle_margins: tuple[int, ...]  # gap between paddles and collision margin, drawn per image
    padding: int  # border that paddles keep clear of
    paddle_length: float
    paddle_thickness: float
    marker_radius: float
    seed_distance: float  # least distance between the origin tips of the targets
    continuity: float  # largest turn per paddle, in units of TURN_UNIT
    distractor_budget: int  # the numerator of the distractor count (see the table)
    snake_contrast: float
    paddle_contrast: float
    antialias_scale: int = 2

    def num_distractor_snakes(self, contour_length: int) -> int:
        """Distractor snakes for targets of ``contour_length`` paddles: the budget over the
        distractor length, both integers (see the table)."""
        return self.distractor_budget // (contour_length // 3)

    @property
    def intensity(self) -> float:
        """Brightness of paddles and markers in [0, 1]."""
        return min(1.0, self.snake_contrast * self.paddle_contrast)


PARAMS: dict[int, PathfinderParams] = {
    32: PathfinderParams((1,), 1, 2.0, 0.5, 1.5, 7.0, 1.0, 20, 2.0, 0.75),
    64: PathfinderParams((1,), 1, 5.0, 1.0, 2.5, 12.0, 1.8, 22, 0.8, 1.0),
    128: PathfinderParams((2, 3), 1, 5.0, 1.5, 3.0, 20.0, 1.8, 35, 0.9, 1.0),
    256: PathfinderParams((3,), 22, 5.0, 2.0, 5.0, 27.0, 1.8, 30, 1.0, 1.0),  # padding, seed distance: defaults
}


def check_resolution(resolution: int) -> None:
    """Raise ValueError unless ``resolution`` is one of ``RESOLUTIONS``."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown Pathfinder resolution {resolution!r}; "
                         f"expected one of {RESOLUTIONS}")


def check_difficulty(difficulty: str) -> None:
    """Raise ValueError unless ``difficulty`` is a key of ``DIFFICULTIES``."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}; "
                         f"expected one of {tuple(DIFFICULTIES)}")


# -------------------------------------------------------------- stamps ---


@dataclasses.dataclass
class Stamp:
    """A shape drawn hard-edged on the fine grid.

    ``fine`` is a bool mask of shape ``(h * scale, w * scale)`` whose top-left
    corner is output pixel ``(row, col)``; ``coarse`` is the ``(h, w)`` mask of
    output pixels with any coverage.
    """

    row: int
    col: int
    fine: np.ndarray
    coarse: np.ndarray


def pixel_box(low: tuple[float, float], high: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(row, col, height, width)`` of the output pixels meeting box ``[low, high]``."""
    col, row = math.floor(low[0]), math.floor(low[1])
    return row, col, math.floor(high[1]) + 1 - row, math.floor(high[0]) + 1 - col


def segment_box(p: np.ndarray, q: np.ndarray, thickness: float) -> tuple[int, int, int, int]:
    """``pixel_box`` of the bar of ``thickness`` along ``p -> q``."""
    half = thickness / 2
    (px, py), (qx, qy) = p.tolist(), q.tolist()
    return pixel_box((min(px, qx) - half, min(py, qy) - half),
                     (max(px, qx) + half, max(py, qy) + half))


def _fine_offsets(box: tuple[int, int, int, int], scale: int, x: float, y: float):
    """Fine-pixel centres of ``box`` relative to ``(x, y)``: ``(1, W)`` and ``(H, 1)`` arrays."""
    row, col, height, width = box
    dx = (np.arange(width * scale) + 0.5) / scale + (col - x)
    dy = (np.arange(height * scale) + 0.5) / scale + (row - y)
    return dx[None, :], dy[:, None]


def _make_stamp(box: tuple[int, int, int, int], scale: int, fine: np.ndarray) -> Stamp:
    """Stamp of the fine mask of ``box``, with its coarse mask."""
    row, col, height, width = box
    return Stamp(row, col, fine, fine.reshape(height, scale, width, scale).any(axis=(1, 3)))


def segment_stamp(p: np.ndarray, q: np.ndarray, thickness: float, scale: int) -> Stamp:
    """Bar of ``thickness`` along segment ``p -> q`` (points ``(x, y)``), round-ended."""
    half = thickness / 2
    (px, py), (qx, qy) = p.tolist(), q.tolist()
    dx, dy = qx - px, qy - py
    length2 = max(dx * dx + dy * dy, 1e-12)
    box = segment_box(p, q, thickness)
    rx, ry = _fine_offsets(box, scale, px, py)
    t = rx * (dx / length2) + ry * (dy / length2)  # position of the nearest point on p -> q
    np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)
    ex, ey = rx - t * dx, ry - t * dy
    return _make_stamp(box, scale, ex * ex + ey * ey <= half * half)


def disk_stamp(center: np.ndarray, radius: float, scale: int) -> Stamp:
    """Filled circle of ``radius`` around ``center`` ``(x, y)``."""
    x, y = center.tolist()
    box = pixel_box((x - radius, y - radius), (x + radius, y + radius))
    rx, ry = _fine_offsets(box, scale, x, y)
    return _make_stamp(box, scale, rx * rx + ry * ry <= radius * radius)


def _window(grid: np.ndarray, row: int, col: int, shape: tuple[int, int]):
    """Slices of ``grid`` and of a patch at ``(row, col)`` of ``shape`` where they overlap."""
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + shape[0], grid.shape[0]), min(col + shape[1], grid.shape[1])
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))


def hits(grid: np.ndarray, row: int, col: int, patch: np.ndarray) -> bool:
    """Whether bool ``patch`` placed at ``(row, col)`` overlaps True cells of ``grid``."""
    on_grid, on_patch = _window(grid, row, col, patch.shape)
    return bool((grid[on_grid] & patch[on_patch]).any())


def stamp_into(grid: np.ndarray, row: int, col: int, patch: np.ndarray) -> None:
    """Set ``grid`` to its maximum with ``patch`` placed at ``(row, col)``, clipped."""
    on_grid, on_patch = _window(grid, row, col, patch.shape)
    np.maximum(grid[on_grid], patch[on_patch], out=grid[on_grid])


def dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """Square dilation: ``(h + 2m, w + 2m)`` mask, True within ``margin`` cells of ``mask``."""
    height, width = mask.shape
    padded = np.zeros((height + 2 * margin, width + 2 * margin), dtype=bool)
    padded[margin:margin + height, margin:margin + width] = mask
    rows = padded.copy()
    for shift in range(1, margin + 1):
        rows[shift:] |= padded[:-shift]
        rows[:-shift] |= padded[shift:]
    out = rows.copy()
    for shift in range(1, margin + 1):
        out[:, shift:] |= rows[:, :-shift]
        out[:, :-shift] |= rows[:, shift:]
    return out


def block_stamp(grid: np.ndarray, stamp: Stamp, margin: int) -> None:
    """Mark in bool ``grid`` the output pixels within ``margin`` of ``stamp``."""
    stamp_into(grid, stamp.row - margin, stamp.col - margin, dilate(stamp.coarse, margin))


# -------------------------------------------------------------- snakes ---


@dataclasses.dataclass
class Snake:
    """A grown snake: tips ``(x, y)``, stroke pieces (gap + paddle), paddles and,
    for a target, marker disks ``[origin, terminal]`` reserved at its tips."""

    origin: np.ndarray
    terminal: np.ndarray
    pieces: list[Stamp]
    paddles: list[Stamp]
    markers: list[Stamp] = dataclasses.field(default_factory=list)


class Canvas:
    """Drawing state of one image.

    ``blocked`` (res, res) bool: output pixels that new content must avoid;
    ``fine`` (res * scale, res * scale) float: drawn intensity.
    """

    def __init__(self, resolution: int, params: PathfinderParams, margin: int):
        self.resolution, self.params, self.margin = resolution, params, margin
        self.scale = params.antialias_scale
        self.blocked = np.zeros((resolution, resolution), dtype=bool)
        self.fine = np.zeros((resolution * self.scale,) * 2, dtype=np.float32)

    def within(self, box: tuple[int, int, int, int], border: int) -> bool:
        """Whether ``box`` (see ``pixel_box``) keeps ``border`` pixels clear of the edges."""
        row, col, height, width = box
        high = self.resolution - border
        return row >= border and col >= border and row + height <= high and col + width <= high

    def stroke_piece(self, p: np.ndarray, q: np.ndarray, own_blocked: np.ndarray) -> Stamp | None:
        """Stamp of the stroke ``p -> q`` if it keeps inside the padding and off the
        ``blocked`` and ``own_blocked`` pixels, else None."""
        thickness = self.params.paddle_thickness
        if not self.within(segment_box(p, q, thickness), self.params.padding):
            return None
        piece = segment_stamp(p, q, thickness, self.scale)
        if (hits(self.blocked, piece.row, piece.col, piece.coarse)
                or hits(own_blocked, piece.row, piece.col, piece.coarse)):
            return None
        return piece

    def tip_disk(self, tip: np.ndarray) -> Stamp | None:
        """Marker disk at ``tip`` if it lies inside the image and off blocked pixels."""
        disk = disk_stamp(tip, self.params.marker_radius, self.scale)
        inside = self.within((disk.row, disk.col, *disk.coarse.shape), 0)
        return disk if inside and not hits(self.blocked, disk.row, disk.col, disk.coarse) else None

    def block(self, stamps: list[Stamp]) -> None:
        """Block the pixels within the margin of ``stamps``."""
        for stamp in stamps:
            block_stamp(self.blocked, stamp, self.margin)

    def paint(self, stamps: list[Stamp]) -> None:
        """Draw ``stamps`` at the drawing intensity."""
        scale, intensity = self.scale, np.float32(self.params.intensity)
        for stamp in stamps:
            stamp_into(self.fine, stamp.row * scale, stamp.col * scale, stamp.fine * intensity)

    def image(self) -> np.ndarray:
        """uint8 ``(res, res)`` image: fine intensities area-averaged, times 255."""
        n, s = self.resolution, self.scale
        coverage = self.fine.reshape(n, s, n, s).mean(axis=(1, 3))
        return np.round(coverage * 255).astype(np.uint8)


def _heading(theta: float) -> np.ndarray:
    """Unit vector ``(x, y)`` of direction ``theta`` radians."""
    return np.array([math.cos(theta), math.sin(theta)])


@dataclasses.dataclass
class _Step:
    """One laid paddle of a growing snake, and what the next step starts from."""

    piece: Stamp  # stroke: gap + paddle
    paddle: Stamp
    heading: float  # radians
    end: np.ndarray  # far end of the paddle (x, y)
    own_blocked: np.ndarray  # (res, res) pixels of this snake the next piece must avoid
    failures: int = 0  # headings of the next step tried in vain


def _extend(rng: np.random.Generator, canvas: Canvas, steps: list[_Step],
            n_new: int) -> list[_Step] | None:
    """Lay ``n_new`` more paddles after ``steps[-1]``; the chain, or None when stuck.

    Each step tries up to ``TURN_TRIES`` headings; when all fail the latest
    new paddle is taken back and its step tried again, within a budget of
    ``HEADINGS_PER_PADDLE * n_new`` headings.  The given steps stay.
    """
    params, margin = canvas.params, canvas.margin
    length, max_turn = params.paddle_length, params.continuity * TURN_UNIT
    fixed, wanted = len(steps), len(steps) + n_new
    for _ in range(HEADINGS_PER_PADDLE * n_new):
        if len(steps) == wanted:
            break
        last = steps[-1]
        heading = last.heading + rng.triangular(-max_turn, 0.0, max_turn)
        end = last.end + (margin + length) * _heading(heading)
        piece = canvas.stroke_piece(last.end, end, last.own_blocked)
        if piece is None:
            last.failures += 1
            if last.failures >= TURN_TRIES:
                if len(steps) == fixed:
                    return None
                steps.pop()
            continue
        start = last.end + margin * _heading(heading)
        paddle = segment_stamp(start, end, params.paddle_thickness, canvas.scale)
        own_blocked = last.own_blocked.copy()
        if len(steps) >= OWN_LAG:
            block_stamp(own_blocked, steps[-OWN_LAG].piece, margin)
        steps.append(_Step(piece, paddle, heading, end, own_blocked))
    return steps if len(steps) == wanted else None


def grow_snake(rng: np.random.Generator, canvas: Canvas, origin: np.ndarray,
               n_paddles: int) -> Snake | None:
    """Grow ``n_paddles`` paddles from ``origin`` (the first in a uniform direction),
    or None when it finds no room."""
    heading = rng.uniform(0.0, 2 * math.pi)
    end = origin + canvas.params.paddle_length * _heading(heading)
    first = canvas.stroke_piece(origin, end, np.zeros_like(canvas.blocked))
    if first is None:
        return None
    start = [_Step(first, first, heading, end, np.zeros_like(canvas.blocked))]
    steps = _extend(rng, canvas, start, n_paddles - 1)
    if steps is None:
        return None
    return Snake(origin, steps[-1].end, [s.piece for s in steps], [s.paddle for s in steps])


def place_snake(rng: np.random.Generator, canvas: Canvas, n_paddles: int, *,
                target: bool = False, away_from: np.ndarray | None = None) -> Snake | None:
    """Grow a snake from up to ``SNAKE_TRIES`` origins and commit it; None when all fail.

    A ``target`` also needs room for marker disks at both tips, which are
    blocked with it (and painted later, if chosen).  With ``away_from``,
    origins lie at least ``seed_distance`` from that point.
    """
    params = canvas.params
    low, high = params.padding, canvas.resolution - params.padding
    for _ in range(SNAKE_TRIES):
        for _ in range(SEED_TRIES):
            origin = rng.uniform(low, high, size=2)  # (x, y) inside the padding
            if away_from is None or np.hypot(*(origin - away_from)) >= params.seed_distance:
                break
        else:
            return None
        if target and canvas.tip_disk(origin) is None:
            continue
        snake = grow_snake(rng, canvas, origin, n_paddles)
        if snake is not None and target:
            snake.markers = [canvas.tip_disk(origin), canvas.tip_disk(snake.terminal)]
        if snake is not None and None not in snake.markers:
            canvas.block(snake.pieces + snake.markers)
            canvas.paint(snake.paddles)
            return snake
    return None


def stroke_mask(snake: Snake, resolution: int) -> np.ndarray:
    """Bool ``(res, res)``: output pixels covered by the snake with its gaps filled in."""
    mask = np.zeros((resolution, resolution), dtype=bool)
    for piece in snake.pieces:
        stamp_into(mask, piece.row, piece.col, piece.coarse)
    return mask


def draw_targets(rng: np.random.Generator, canvas: Canvas, n_paddles: int) -> list[Snake] | None:
    """Two committed target snakes with marker room at their tips, or None when stuck."""
    first = place_snake(rng, canvas, n_paddles, target=True)
    if first is None:
        return None
    second = place_snake(rng, canvas, n_paddles, target=True, away_from=first.origin)
    return None if second is None else [first, second]


def draw_sample(rng: np.random.Generator, resolution: int, difficulty: str,
                label: int | None = None) -> tuple[np.ndarray, int, dict]:
    """Draw one Pathfinder image; returns ``(image, label, meta)``.

    ``image`` is uint8 ``(resolution, resolution)``; ``label`` is 1 when the
    markers are connected (drawn from U{0,1} unless given).  ``meta`` holds
    the metadata fields (``continuity``, ``contour_length``,
    ``distractor_length``, ``paddle_length``, ``paddle_thickness``,
    ``paddle_margin``, ``n_contrasts``) and, for inspection: ``markers``,
    the two marker centres ``(row, col)``; ``paths``, the two target strokes
    as bool ``(res, res)`` masks (gaps filled in); ``n_paddles`` of each
    target; ``n_distractors`` drawn; ``origin_snake``, the target whose origin
    carries a marker.
    """
    check_resolution(resolution)
    check_difficulty(difficulty)
    if label is not None and label not in (0, 1):
        raise ValueError(f"label must be 0, 1 or None, got {label!r}")
    params, contour_length = PARAMS[resolution], DIFFICULTIES[difficulty][1]
    label = int(rng.integers(2)) if label is None else int(label)
    margin = int(rng.choice(params.paddle_margins))
    for _ in range(IMAGE_TRIES):
        canvas = Canvas(resolution, params, margin)
        targets = draw_targets(rng, canvas, contour_length)
        if targets is not None:
            break
    else:
        raise RuntimeError(f"could not place two {contour_length}-paddle snakes on a "
                           f"{resolution}x{resolution} image in {IMAGE_TRIES} tries")
    origin_snake = int(rng.integers(2))
    ends = [targets[origin_snake], targets[origin_snake if label else 1 - origin_snake]]
    canvas.paint([ends[0].markers[0], ends[1].markers[1]])
    distractor_length = contour_length // 3
    n_distractors = sum(place_snake(rng, canvas, distractor_length) is not None
                        for _ in range(params.num_distractor_snakes(contour_length)))
    tips = [ends[0].origin, ends[1].terminal]
    meta = dict(
        continuity=params.continuity, contour_length=contour_length,
        distractor_length=distractor_length, paddle_length=params.paddle_length,
        paddle_thickness=params.paddle_thickness, paddle_margin=margin, n_contrasts=1,
        markers=tuple((float(y), float(x)) for x, y in tips),
        paths=tuple(stroke_mask(snake, resolution) for snake in targets),
        n_paddles=tuple(len(snake.paddles) for snake in targets),
        n_distractors=n_distractors, origin_snake=origin_snake,
    )
    return canvas.image(), label, meta
