"""Long Range Arena Pathfinder: generation, release layout, metadata and a torch dataset.

An image shows dashed curves and two round markers; its label is 1 when the
markers lie on the same curve.  Drawing is in ``ssm.data.pathfinder_draw``.

Layout of the release (and of what ``generate_pathfinder`` writes)::

    <root>/pathfinder{32,64,128,256}/{curv_baseline,curv_contour_length_9,curv_contour_length_14}/
        imgs/<k>/sample_<i>.png   8-bit grayscale
        metadata/<k>.npy          one line per image, see read_metadata

``find_pathfinder`` also looks under ``<root>/pathfinder/``,
``<root>/lra_release/`` and ``<root>/lra_release/lra_release/``.

Generation is deterministic by seed whatever the number of worker
processes: image ``i`` is drawn from an RNG seeded by ``SeedSequence([seed,
i])`` (each image is its own chunk); workers draw ``CHUNK_SIZE`` images per
job and the metadata is merged in image order.  Images go to
``imgs/<i // images_per_batch>/sample_<i % images_per_batch>.png``.

Samples are encoded as pixels / 255 centred to [-1, 1], flattened row-major
to ``(res * res, 1)`` float32, or as integer tokens 0..255 with
``tokenize=True``.  S4 and S5 split the hard set 80/10/10 at random with seed
42: see ``split_indices``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ssm.data.pathfinder_draw import (
    DIFFICULTIES,
    PARAMS,
    RESOLUTIONS,
    PathfinderParams,
    check_difficulty,
    check_resolution,
    draw_sample,
)
from ssm.data.progress import progress_bar

__all__ = [
    "BLACKLIST", "DIFFICULTIES", "PARAMS", "RESOLUTIONS", "PathfinderDataset", "PathfinderParams",
    "draw_sample", "encode_image", "find_pathfinder", "generate_pathfinder", "list_samples",
    "prepare_pathfinder", "read_metadata", "split_indices",
]

RELEASE_PREFIXES = ((), ("pathfinder",), ("lra_release",), ("lra_release", "lra_release"))
BLACKLIST = frozenset({"pathfinder32/curv_baseline/imgs/0/sample_172.png"})  # empty in the release
NUMPY_MAGIC = b"\x93NUMPY"
EMPTY_SUSPECT_BYTES = 200  # all-zero PNGs up to 256x256 are smaller; only such files are decoded
CHUNK_SIZE = 50  # images per worker job; does not change the output
GENERATION_RECORD = "generation.json"  # written next to metadata/ by generate_pathfinder
# Bumped when the drawing changes what a seed gives; 2: 64/128 draw 5 and 8 hard-set distractors, not 4 and 7
GENERATOR_VERSION = 2
RELEASE_IMAGES = 200_000  # images per difficulty in the LRA release
GET_IT = ("download lra_release.gz from the Long Range Arena repository "
          "(github.com/google-research/long-range-arena) and unpack it under the data root, "
          "or let prepare_pathfinder generate the images")


# ------------------------------------------------------------- layout ---


def difficulty_dir(data_root: str | os.PathLike, resolution: int, difficulty: str) -> pathlib.Path:
    """``data_root/pathfinder{resolution}/<difficulty folder>`` (official layout)."""
    check_resolution(resolution)
    check_difficulty(difficulty)
    return pathlib.Path(data_root) / f"pathfinder{resolution}" / DIFFICULTIES[difficulty][0]


def metadata_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """``directory/metadata/*.npy`` in batch order (numeric names first, by value)."""
    files = [f for f in (directory / "metadata").glob("*.npy") if f.is_file()]
    numeric = [f for f in files if f.stem.isdigit()]
    others = [f for f in files if not f.stem.isdigit()]
    return sorted(numeric, key=lambda f: int(f.stem)) + sorted(others)


def find_pathfinder(data_root: str | os.PathLike, resolution: int = 32,
                    difficulty: str = "hard") -> pathlib.Path | None:
    """First difficulty folder holding ``metadata/*.npy`` under ``data_root``, else None.

    Looks in ``<root>``, ``<root>/pathfinder``, ``<root>/lra_release`` and
    ``<root>/lra_release/lra_release``, each followed by
    ``pathfinder{resolution}/<difficulty folder>``.
    """
    relative = difficulty_dir("", resolution, difficulty)
    root = pathlib.Path(data_root)
    candidates = (root.joinpath(*prefix) / relative for prefix in RELEASE_PREFIXES)
    return next((c for c in candidates if metadata_files(c)), None)


# ----------------------------------------------------------- metadata ---


def _metadata_rows(path: pathlib.Path) -> list[list[str]]:
    """Whitespace-separated fields of each metadata line, from text or an ``np.save`` file."""
    data = path.read_bytes()
    if not data.startswith(NUMPY_MAGIC):
        return [line.split() for line in data.decode("utf-8").splitlines() if line.strip()]
    array = np.load(io.BytesIO(data), allow_pickle=False).astype(str)
    if array.ndim == 1:  # one whole line per element
        return [line.split() for line in array.tolist() if line.strip()]
    if array.ndim == 2:
        return array.tolist()
    raise ValueError(f"{path}: expected a 1-D or 2-D string array, got shape {array.shape}")


def read_metadata(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Rows ``(relative image path "imgs/<k>/sample_<i>.png", label)`` of a metadata file.

    A line is ``imgs/<k> sample_<i>.png <nimg> <label> <continuity>
    <contour_length> <distractor_length> <paddle_length> <paddle_thickness>
    <paddle_margin> <n_contrasts>``; only fields 0, 1 and 3 are read.  The
    file is plain text (the release, despite the ``.npy`` name) or a string
    array saved with ``np.save`` (the original generator).
    """
    path = pathlib.Path(path)
    rows = []
    for number, fields in enumerate(_metadata_rows(path), start=1):
        try:
            rows.append((posixpath.join(fields[0], fields[1]), int(fields[3])))
        except (IndexError, ValueError):
            raise ValueError(f"{path}: row {number}: expected '<dir> <file> <nimg> <label> ...', "
                             f"got {' '.join(fields)[:80]!r}") from None
    return rows


def metadata_line(batch: int, index: int, label: int, meta: dict) -> str:
    """Metadata line of image ``index`` of ``batch`` in the release's field order."""
    fields = ("continuity", "contour_length", "distractor_length", "paddle_length",
              "paddle_thickness", "paddle_margin", "n_contrasts")
    values = " ".join(f"{meta[name]:g}" for name in fields)
    return f"imgs/{batch} sample_{index}.png {index} {label} {values}\n"


# --------------------------------------------------------- generation ---


@dataclasses.dataclass(frozen=True)
class _Job:
    """Images ``start..stop-1`` of a run, written as PNGs under ``out_dir``."""

    out_dir: str
    seed: int
    resolution: int
    difficulty: str
    images_per_batch: int
    start: int
    stop: int


def _generate_chunk(job: _Job) -> list[tuple[int, str]]:
    """Draw and save the job's images; returns ``(batch, metadata line)`` per image in order."""
    rows = []
    for i in range(job.start, job.stop):
        rng = np.random.default_rng(np.random.SeedSequence([job.seed, i]))
        image, label, meta = draw_sample(rng, job.resolution, job.difficulty)
        batch, index = divmod(i, job.images_per_batch)
        folder = pathlib.Path(job.out_dir) / "imgs" / str(batch)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"sample_{index}.png")
        rows.append((batch, metadata_line(batch, index, label, meta)))
    return rows


def _draw_all(jobs: list[_Job], workers: int,
              advance: Callable[[int], object]) -> dict[int, list[str]]:
    """Run ``jobs`` (in a process pool when ``workers > 1``); metadata lines per batch."""
    lines: dict[int, list[str]] = {}
    with contextlib.ExitStack() as stack:
        mapper = map
        if workers > 1 and len(jobs) > 1:
            mapper = stack.enter_context(concurrent.futures.ProcessPoolExecutor(workers)).map
        for job, rows in zip(jobs, mapper(_generate_chunk, jobs)):
            for batch, line in rows:
                lines.setdefault(batch, []).append(line)
            advance(job.stop - job.start)
    return lines


def _check_positive(**values: int | None) -> None:
    """Raise ValueError unless every value (None allowed) is an int >= 1."""
    for name, value in values.items():
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def generate_pathfinder(
    data_root: str | os.PathLike, resolution: int = 32, difficulty: str = "hard",
    n_images: int = 2000, *, seed: int = 0, images_per_batch: int = 1000,
    workers: int | None = None, progress: bool = True, log: Callable[[str], object] = print,
) -> pathlib.Path:
    """Draw ``n_images`` images in the release layout; returns the difficulty folder.

    Writes ``data_root/pathfinder{resolution}/<difficulty folder>`` with
    ``imgs/<k>/sample_<i>.png``, plain-text ``metadata/<k>.npy`` and a
    ``generation.json`` record of the run and its parameters.  Everything is
    written into a temporary sibling folder renamed into place at the end, so
    the folder exists only when complete.  ``workers`` (None: all CPU cores)
    and ``progress`` do not change the output.
    """
    out_dir = difficulty_dir(data_root, resolution, difficulty)
    _check_positive(n_images=n_images, images_per_batch=images_per_batch, workers=workers)
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; delete it to generate again, "
                              "or call prepare_pathfinder to reuse it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial",
                                            dir=out_dir.parent))
    jobs = [_Job(str(tmp_dir), seed, resolution, difficulty, images_per_batch,
                 start, min(start + CHUNK_SIZE, n_images))
            for start in range(0, n_images, CHUNK_SIZE)]
    description = f"generating Pathfinder{resolution} {difficulty}"
    try:
        with progress_bar(n_images, progress, description) as advance:
            lines = _draw_all(jobs, workers or os.cpu_count() or 1, advance)
        (tmp_dir / "metadata").mkdir()
        for batch, batch_lines in lines.items():
            (tmp_dir / "metadata" / f"{batch}.npy").write_text("".join(batch_lines), "utf-8")
        record = dict(generator_version=GENERATOR_VERSION, resolution=resolution, difficulty=difficulty,
                      n_images=n_images, seed=seed,
                      images_per_batch=images_per_batch,
                      params=dataclasses.asdict(PARAMS[resolution]))
        (tmp_dir / GENERATION_RECORD).write_text(json.dumps(record, indent=2) + "\n", "utf-8")
        os.rename(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log(f"wrote {n_images} Pathfinder{resolution} {difficulty} images (seed {seed}) to {out_dir}")
    return out_dir


def prepare_pathfinder(
    data_root: str | os.PathLike, resolution: int = 32, difficulty: str = "hard",
    n_images: int = RELEASE_IMAGES, seed: int = 0, workers: int | None = None,
    progress: bool = True, log: Callable[[str], object] = print,
    warn: Callable[[str], object] | None = None,
) -> pathlib.Path:
    """Difficulty folder of the release or of an earlier generation, else a new generation.

    Whatever ``find_pathfinder`` finds is used as is (a generated folder is
    reused even when its seed or size differ from the request, which is reported
    through ``warn``, ``log`` when None); otherwise ``n_images`` images are
    generated with ``seed``.
    """
    found = find_pathfinder(data_root, resolution, difficulty)
    if found is not None and not (found / GENERATION_RECORD).is_file():
        log(f"using the Pathfinder release in {found}")
        return found
    if found is not None:
        record = json.loads((found / GENERATION_RECORD).read_text(encoding="utf-8"))
        message = (f"reusing generated Pathfinder images in {found} "
                   f"({record.get('n_images')} images, seed {record.get('seed')})")
        if record.get("generator_version", 1) != GENERATOR_VERSION:
            (warn or log)(f"{message}, drawn by an earlier version of the generator (version "
                          f"{record.get('generator_version', 1)}, now {GENERATOR_VERSION}; e.g. fewer distractors "
                          "at 64 and 128): delete the folder to generate them anew")
        elif (record.get("n_images"), record.get("seed")) == (n_images, seed):
            log(message)
        else:
            (warn or log)(f"{message}, not the {n_images} images with seed {seed} asked for: "
                          "delete the folder to generate those")
        return found
    expected = difficulty_dir(data_root, resolution, difficulty)
    log(f"no Pathfinder release found under {data_root} (expected {expected / 'metadata'}/*.npy "
        f"and {expected / 'imgs'}/, or the same under pathfinder/, lra_release/ or "
        f"lra_release/lra_release/); generating {n_images} images with seed {seed}")
    return generate_pathfinder(data_root, resolution, difficulty, n_images, seed=seed,
                               workers=workers, progress=progress, log=log)


# ------------------------------------------------------------ dataset ---


def _is_empty_image(path: pathlib.Path) -> bool:
    """Whether a suspiciously small image file is all zero or does not decode."""
    if path.stat().st_size >= EMPTY_SUSPECT_BYTES:
        return False
    try:
        with Image.open(path) as image:
            return not np.asarray(image.convert("L")).any()
    except OSError:
        return True


def list_samples(directory: str | os.PathLike) -> list[tuple[pathlib.Path, int]]:
    """Image paths and labels ``(path, label)`` of a difficulty folder, in metadata order.

    Drops ``BLACKLIST`` entries and empty images: a file smaller than
    ``EMPTY_SUSPECT_BYTES`` is decoded at this point and dropped when all zero
    or unreadable; larger files are not opened here.  A folder without
    ``metadata/*.npy`` raises FileNotFoundError saying how to get the data.
    """
    directory = pathlib.Path(directory)
    files = metadata_files(directory)
    if not files:
        raise FileNotFoundError(f"no Pathfinder metadata: expected {directory / 'metadata'}/*.npy "
                                f"(with the images under {directory / 'imgs'}/); {GET_IT}")
    release_key = f"{directory.parent.name}/{directory.name}"
    samples = []
    for file in files:
        for relative, label in read_metadata(file):
            path = directory / relative
            if f"{release_key}/{relative}" in BLACKLIST:
                continue
            try:
                empty = _is_empty_image(path)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"Pathfinder image {path} is listed in {file} but missing: the folder looks partly "
                    f"unpacked; unpack the release again, or delete {directory} to have a set generated"
                ) from None
            if not empty:
                samples.append((path, label))
    return samples


def encode_image(pixels: np.ndarray, tokenize: bool = False) -> torch.Tensor:
    """Sequence of a uint8 ``(H, W)`` image, row-major.

    ``tokenize``: LongTensor ``(H * W,)`` of values 0..255; otherwise float32
    ``(H * W, 1)`` of ``(pixels / 255 - 0.5) / 0.5`` in [-1, 1].
    """
    flat = torch.from_numpy(np.array(pixels, dtype=np.uint8).reshape(-1))  # a writable copy
    if tokenize:
        return flat.long()
    return ((flat.float() / 255.0 - 0.5) / 0.5).unsqueeze(-1)


class PathfinderDataset(torch.utils.data.Dataset):
    """Pathfinder images of a difficulty folder; item ``i`` is ``(encode_image(...), label)``.

    Samples come from ``list_samples`` (blacklisted and empty images dropped
    when the dataset is built), or from ``samples`` when the caller already
    listed them (so several splits of one folder scan its metadata once);
    ``indices`` keeps those samples, in that order.  Images are read from disk
    on access.
    """

    def __init__(self, directory: str | os.PathLike, tokenize: bool = False,
                 indices: Sequence[int] | None = None,
                 samples: Sequence[tuple[pathlib.Path, int]] | None = None):
        samples = list_samples(directory) if samples is None else list(samples)
        if indices is not None:
            samples = [samples[i] for i in indices]
        self.directory, self.tokenize = pathlib.Path(directory), tokenize
        self.paths = [path for path, _ in samples]
        self.labels = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            pixels = np.asarray(image.convert("L"))
        return encode_image(pixels, self.tokenize), self.labels[index]


def split_indices(n: int, seed: int = 42, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  ) -> tuple[list[int], list[int], list[int]]:
    """Disjoint ``(train, val, test)`` indices of ``range(n)``: S4's and S5's split, i.e.
    ``torch.utils.data.random_split`` with lengths ``[train, val, test]`` and a generator
    seeded with ``seed`` (one ``torch.randperm``, cut in that order).

    val and test get ``floor(n * fraction)`` indices, train the rest.
    """
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = (math.floor(n * f + 1e-9) for f in fractions[1:])
    n_train = n - n_val - n_test
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
