"""Tests for ssm.data.pathfinder: drawing, label semantics, files, layouts, dataset and splits."""

import collections
import functools
import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from ssm.data.pathfinder import (
    BLACKLIST,
    DIFFICULTIES,
    PARAMS,
    RESOLUTIONS,
    PathfinderDataset,
    draw_sample,
    find_pathfinder,
    generate_pathfinder,
    list_samples,
    prepare_pathfinder,
    read_metadata,
    split_indices,
)

QUIET = dict(progress=False, log=lambda message: None)
SMALL_RUN = dict(resolution=32, difficulty="easy", n_images=60, images_per_batch=25, **QUIET)


def _draw(resolution, difficulty, label, seed):
    return draw_sample(np.random.default_rng(seed), resolution, difficulty, label)


@functools.lru_cache(maxsize=None)
def _labelled_samples(resolution, label, count):
    return [_draw(resolution, "hard", label, seed) for seed in range(count)]


def _components(mask):
    """8-connected component id of every True cell of a bool (H, W) mask (-1 elsewhere)."""
    ids = np.full(mask.shape, -1)
    for start in zip(*np.nonzero(mask)):
        if ids[start] >= 0:
            continue
        ids[start], queue = ids.max() + 1, collections.deque([start])
        while queue:
            r, c = queue.popleft()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    inside = 0 <= rr < mask.shape[0] and 0 <= cc < mask.shape[1]
                    if inside and mask[rr, cc] and ids[rr, cc] < 0:
                        ids[rr, cc] = ids[start]
                        queue.append((rr, cc))
    return ids


def _files(directory):
    """Relative path -> bytes of every file under ``directory``."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def _write_release(directory, names_labels, blank=()):
    """A fake release folder: drawn images (all-zero ones for names in ``blank``), text metadata."""
    lines = []
    for i, (name, label) in enumerate(names_labels):
        pixels = np.zeros((32, 32)) if name in blank else np.full((32, 32), 10 + i)
        _write_png(directory / "imgs" / "0" / name, pixels)
        lines.append(f"imgs/0 {name} {i} {label} 1 14 4 2 0.5 1 1\n")
    (directory / "metadata").mkdir(parents=True, exist_ok=True)
    (directory / "metadata" / "0.npy").write_text("".join(lines))
    return directory


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return generate_pathfinder(tmp_path_factory.mktemp("run"), workers=1, **SMALL_RUN)


# ------------------------------------------------------------ drawing ---


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_images_are_uint8_squares_of_the_resolution(resolution):
    image, label, meta = _draw(resolution, "hard", None, 0)
    assert image.shape == (resolution, resolution) and image.dtype == np.uint8
    assert image.any() and label in (0, 1)
    assert meta["paddle_thickness"] == PARAMS[resolution].paddle_thickness


@pytest.mark.parametrize(("resolution", "count"), [(32, 20), (64, 3)])
@pytest.mark.parametrize("label", [0, 1])
def test_markers_share_a_path_exactly_when_the_label_is_1(resolution, label, count):
    # Snakes are dashed, so the raw image is not connected along a path; the dash
    # gaps are filled with the drawn target strokes (meta["paths"]) and components
    # are found on the image's nonzero pixels plus those strokes.  Distractors and
    # markers stay in the test, so a distractor bridging the targets would fail it.
    for image, drawn_label, meta in _labelled_samples(resolution, label, count):
        assert drawn_label == label
        ids = _components((image > 0) | meta["paths"][0] | meta["paths"][1])
        (r0, c0), (r1, c1) = (tuple(int(v) for v in marker) for marker in meta["markers"])
        assert image[r0, c0] > 0 and image[r1, c1] > 0
        assert (ids[r0, c0] == ids[r1, c1]) == bool(label)


def test_target_paths_lengthen_with_difficulty():
    mean_pixels = []
    for name, (_, contour_length) in DIFFICULTIES.items():
        samples = [_draw(32, name, None, seed) for seed in range(4)]
        for _, _, meta in samples:
            assert meta["n_paddles"] == (contour_length, contour_length)
            assert meta["contour_length"] == contour_length
            assert meta["distractor_length"] == contour_length // 3
        mean_pixels.append(np.mean([meta["paths"][0].sum() for _, _, meta in samples]))
    assert mean_pixels == sorted(mean_pixels) and mean_pixels[0] < mean_pixels[-1]


def test_given_label_is_kept_and_bad_labels_rejected():
    assert _draw(32, "easy", 0, 1)[1] == 0 and _draw(32, "easy", 1, 1)[1] == 1
    with pytest.raises(ValueError, match="label"):
        _draw(32, "easy", 2, 1)


# --------------------------------------------------------- generation ---


def test_generated_labels_are_balanced(tmp_path):
    directory = generate_pathfinder(tmp_path, 32, "easy", 200, workers=2, **QUIET)
    labels = [label for file in sorted((directory / "metadata").iterdir())
              for _, label in read_metadata(file)]
    assert len(labels) == 200 and 0.35 <= np.mean(labels) <= 0.65


def test_generation_is_deterministic_whatever_the_workers(small_run, tmp_path):
    reference = _files(small_run)
    again = generate_pathfinder(tmp_path / "two", workers=2, **SMALL_RUN)
    assert _files(again) == reference
    other_seed = generate_pathfinder(tmp_path / "seed", workers=1, seed=1, **SMALL_RUN)
    other = _files(other_seed)
    assert other.keys() == reference.keys()
    assert any(other[name] != reference[name] for name in reference if name.endswith(".png"))


def test_generated_layout_is_the_release_layout(small_run):
    assert small_run.parts[-2:] == ("pathfinder32", "curv_baseline")
    images = [f"imgs/{i // 25}/sample_{i % 25}.png" for i in range(60)]
    metadata = {f"metadata/{k}.npy" for k in range(3)}
    assert set(_files(small_run)) == set(images) | metadata | {"generation.json"}
    first = (small_run / "metadata" / "0.npy").read_bytes()
    assert not first.startswith(b"\x93NUMPY")  # plain text, like the release
    fields = first.decode().splitlines()[0].split()
    assert fields[:3] == ["imgs/0", "sample_0.png", "0"] and len(fields) == 11
    assert fields[4:] == ["1", "6", "2", "2", "0.5", "1", "1"]
    rows = [row for k in range(3) for row in read_metadata(small_run / "metadata" / f"{k}.npy")]
    assert [path for path, _ in rows] == images


def test_generating_over_an_existing_folder_fails(small_run):
    with pytest.raises(FileExistsError, match="already exists"):
        generate_pathfinder(small_run.parents[1], workers=1, **SMALL_RUN)


def test_metadata_reads_the_text_form_and_the_np_save_form(small_run, tmp_path):
    text_file = small_run / "metadata" / "1.npy"
    rows = read_metadata(text_file)
    lines = [line.split() for line in text_file.read_text().splitlines()]
    assert rows == [(f"{f[0]}/{f[1]}", int(f[3])) for f in lines] and len(rows) == 25
    with open(tmp_path / "table.npy", "wb") as f:  # the original generator's form
        np.save(f, np.array(lines))
    with open(tmp_path / "lines.npy", "wb") as f:
        np.save(f, np.array([" ".join(fields) for fields in lines]))
    assert read_metadata(tmp_path / "table.npy") == rows
    assert read_metadata(tmp_path / "lines.npy") == rows


def test_malformed_metadata_names_the_file(tmp_path):
    (tmp_path / "0.npy").write_text("imgs/0 sample_0.png 0\n")
    with pytest.raises(ValueError, match="0.npy"):
        read_metadata(tmp_path / "0.npy")


# ------------------------------------------------------------ layouts ---


@pytest.mark.parametrize("prefix", ["", "pathfinder", "lra_release", "lra_release/lra_release"])
def test_find_pathfinder_finds_every_known_layout(tmp_path, prefix):
    directory = tmp_path / prefix / "pathfinder64" / "curv_contour_length_9"
    _write_release(directory, [("sample_0.png", 1)])
    assert find_pathfinder(tmp_path, 64, "intermediate") == directory
    assert find_pathfinder(tmp_path, 64, "hard") is None
    assert find_pathfinder(tmp_path, 32, "intermediate") is None


def test_prepare_generates_then_reuses(tmp_path):
    messages = []
    first = prepare_pathfinder(tmp_path, 32, "easy", n_images=12, seed=3, workers=1,
                               progress=False, log=messages.append)
    assert first == tmp_path / "pathfinder32" / "curv_baseline"
    assert "no Pathfinder release found under" in messages[0]
    assert "metadata" in messages[0] and "12 images with seed 3" in messages[0]
    before = _files(first)
    again = prepare_pathfinder(tmp_path, 32, "easy", n_images=12, seed=3, progress=False,
                               log=messages.append)
    assert again == first and _files(again) == before
    assert messages[-1].startswith("reusing generated Pathfinder images")
    warnings = []
    for asked in ({"n_images": 12, "seed": 3}, {"n_images": 40, "seed": 3}, {"n_images": 12, "seed": 4}):
        assert prepare_pathfinder(tmp_path, 32, "easy", **asked, progress=False, log=messages.append,
                                  warn=warnings.append) == first
    assert _files(first) == before
    assert len(warnings) == 2 and all("(12 images, seed 3)" in w and "delete the folder" in w for w in warnings)
    assert "not the 40 images with seed 3 asked for" in warnings[0]
    assert "not the 12 images with seed 4 asked for" in warnings[1]
    record_path = first / "generation.json"  # a set drawn by the first generator (no version)
    record = json.loads(record_path.read_text())
    assert record["generator_version"] == 2
    del record["generator_version"]
    record_path.write_text(json.dumps(record))
    prepare_pathfinder(tmp_path, 32, "easy", n_images=12, seed=3, progress=False, log=messages.append,
                       warn=warnings.append)
    assert "earlier version of the generator (version 1, now 2" in warnings[-1] and "delete the folder" in warnings[-1]


def test_prepare_uses_a_release_as_is(tmp_path):
    release = _write_release(tmp_path / "lra_release" / "pathfinder32" / "curv_contour_length_14",
                             [("sample_0.png", 0)])
    messages = []
    assert prepare_pathfinder(tmp_path, log=messages.append) == release
    assert messages == [f"using the Pathfinder release in {release}"]


# ------------------------------------------------------------ dataset ---


def test_dataset_skips_the_blacklisted_and_empty_images(tmp_path):
    assert "pathfinder32/curv_baseline/imgs/0/sample_172.png" in BLACKLIST
    directory = _write_release(
        tmp_path / "pathfinder32" / "curv_baseline",
        [(f"sample_{i}.png", label) for i, label in ((171, 1), (172, 0), (173, 1), (174, 0))],
        blank={"sample_173.png"},
    )
    dataset = PathfinderDataset(directory)
    assert [p.name for p in dataset.paths] == ["sample_171.png", "sample_174.png"]
    assert dataset.labels == [1, 0]


def test_a_mostly_black_image_with_a_few_lit_pixels_is_not_empty(tmp_path):
    """Only all-zero images are dropped: a small PNG (below the size that gets decoded) that
    is black except for a few pixels is kept."""
    directory = tmp_path / "pathfinder32" / "curv_contour_length_14"
    sparse = np.zeros((32, 32))
    sparse[5, 7] = sparse[20, 3] = 255
    _write_png(directory / "imgs" / "0" / "sample_0.png", sparse)
    _write_png(directory / "imgs" / "0" / "sample_1.png", np.zeros((32, 32)))
    (directory / "metadata").mkdir(parents=True)
    (directory / "metadata" / "0.npy").write_text("imgs/0 sample_0.png 0 1 1 14 4 2 0.5 1 1\n"
                                                  "imgs/0 sample_1.png 1 0 1 14 4 2 0.5 1 1\n")
    assert (directory / "imgs" / "0" / "sample_0.png").stat().st_size < 200  # small enough to be decoded
    assert [(p.name, label) for p, label in list_samples(directory)] == [("sample_0.png", 1)]


def test_metadata_files_are_read_in_numeric_batch_order(tmp_path):
    """metadata/<k>.npy are taken by the value of k (2 before 10, not as text), so the sample
    order, and with it the seeded split, does not depend on how names sort."""
    directory = tmp_path / "pathfinder32" / "curv_contour_length_14"
    (directory / "metadata").mkdir(parents=True)
    for batch in (10, 2, 1):
        _write_png(directory / "imgs" / str(batch) / "sample_0.png", np.full((32, 32), 50))
        (directory / "metadata" / f"{batch}.npy").write_text(f"imgs/{batch} sample_0.png 0 1 1 14 4 2 0.5 1 1\n")
    assert [p.parent.name for p, _ in list_samples(directory)] == ["1", "2", "10"]


def test_dataset_encodes_pixels_to_minus_one_to_one_or_tokens(small_run):
    dataset, tokens = PathfinderDataset(small_run), PathfinderDataset(small_run, tokenize=True)
    assert len(dataset) == 60
    pixels = np.asarray(Image.open(small_run / "imgs" / "0" / "sample_0.png"), dtype=np.float32)
    x, label = dataset[0]
    assert x.shape == (1024, 1) and x.dtype == torch.float32 and label in (0, 1)
    assert -1.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(x[:, 0], torch.from_numpy(pixels.reshape(-1) / 127.5 - 1.0))
    t, _ = tokens[0]
    assert t.shape == (1024,) and t.dtype == torch.long
    assert torch.equal(t, torch.from_numpy(pixels.reshape(-1)).long())


def test_dataset_indices_select_samples(small_run):
    full = PathfinderDataset(small_run)
    subset = PathfinderDataset(small_run, indices=[5, 2])
    assert subset.paths == [full.paths[5], full.paths[2]]
    assert subset.labels == [full.labels[5], full.labels[2]]


def test_dataset_uses_given_samples_without_rescanning(small_run, monkeypatch):
    samples = list_samples(small_run)
    monkeypatch.setattr("ssm.data.pathfinder.list_samples", lambda directory: pytest.fail("rescanned"))
    subset = PathfinderDataset(small_run, indices=[5, 2], samples=samples)
    assert subset.paths == [samples[5][0], samples[2][0]]
    assert subset.labels == [samples[5][1], samples[2][1]]


def test_missing_folder_error_names_the_expected_files_and_how_to_get_them(tmp_path):
    directory = tmp_path / "pathfinder32" / "curv_contour_length_14"
    with pytest.raises(FileNotFoundError) as error:
        PathfinderDataset(directory)
    message = str(error.value)
    assert f"{directory / 'metadata'}/*.npy" in message
    assert "lra_release.gz" in message and "prepare_pathfinder" in message


# ------------------------------------------------------------- splits ---


def test_a_missing_image_names_itself_and_what_to_do(tmp_path):
    directory = _write_release(tmp_path / "pathfinder32" / "curv_contour_length_14",
                               [("sample_0.png", 1), ("sample_1.png", 0)])
    (directory / "imgs" / "0" / "sample_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"sample_1\.png is listed in .*0\.npy but missing.*partly unpacked"):
        PathfinderDataset(directory)


def test_split_indices_are_sized_disjoint_and_deterministic():
    train, val, test = split_indices(1000)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert sorted(train + val + test) == list(range(1000))
    assert split_indices(1000) == (train, val, test)
    assert split_indices(1000, seed=0) != (train, val, test)
    assert [len(part) for part in split_indices(7, fractions=(0.5, 0.25, 0.25))] == [5, 1, 1]
    assert split_indices(0) == ([], [], [])


@pytest.mark.parametrize("n", [1000, 2001])
def test_split_indices_are_s4s_random_split_with_seed_42(n):
    """S4 and S5 split the hard set with random_split(seed 42): an S4 checkpoint scored on
    another split would be tested on its own training images."""
    n_val = n_test = n // 10
    parts = torch.utils.data.random_split(range(n), [n - n_val - n_test, n_val, n_test],
                                          generator=torch.Generator().manual_seed(42))
    assert split_indices(n) == tuple(list(part) for part in parts)


def test_settings_at_256_are_the_documented_ones_and_the_generator_defaults():
    """experiments.md §3.2: margin [3], thickness 2, marker 5, continuity 1.8, contrast 1.0 and a
    budget of 30; padding 22, seed distance 27, paddle length 5 and paddle contrast 1 from the
    generator's defaults."""
    from ssm.data.pathfinder_draw import PARAMS

    p = PARAMS[256]
    assert (p.paddle_margins, p.padding, p.paddle_length, p.paddle_thickness, p.marker_radius) == ((3,), 22, 5.0, 2.0, 5.0)
    assert (p.seed_distance, p.continuity, p.distractor_budget, p.snake_contrast, p.paddle_contrast) == (27.0, 1.8, 30, 1.0, 1.0)


@pytest.mark.parametrize("resolution, counts", [(32, (10, 6, 5)), (64, (11, 7, 5)), (128, (17, 11, 8)),
                                                (256, (15, 10, 7))])
def test_distractor_count_follows_the_difficulty(resolution, counts):
    """The documented budget over the distractor length c // 3, in integers as the Python 2
    generator computes it (the count was once fixed at the hard set's for every difficulty;
    at 64 and 128 the hard set's 22 / 4.67 and 35 / 4.67 were once rounded down to 4 and 7)."""
    from ssm.data.pathfinder_draw import DIFFICULTIES, PARAMS

    got = tuple(PARAMS[resolution].num_distractor_snakes(DIFFICULTIES[d][1]) for d in ("easy", "intermediate", "hard"))
    assert got == counts
    if resolution == 32:  # and the drawing uses it (an easy image has room for most of its 10)
        from ssm.data.pathfinder_draw import draw_sample

        rng = np.random.default_rng(0)
        drawn = [draw_sample(rng, 32, "easy")[2]["n_distractors"] for _ in range(3)]
        assert max(drawn) > counts[2] and max(drawn) <= counts[0]


def test_split_indices_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, fractions=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, fractions=(0.9, 0.1))


# ------------------------------------------------------------- errors ---


def test_unknown_resolution_or_difficulty_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="resolution"):
        _draw(48, "hard", None, 0)
    with pytest.raises(ValueError, match="difficulty"):
        _draw(32, "medium", None, 0)
    with pytest.raises(ValueError, match="resolution"):
        find_pathfinder(tmp_path, 512)
    with pytest.raises(ValueError, match="difficulty"):
        generate_pathfinder(tmp_path, 32, "extreme", 4, **QUIET)
    with pytest.raises(ValueError, match="n_images"):
        generate_pathfinder(tmp_path, 32, "easy", 0, **QUIET)
    assert not any(pathlib.Path(tmp_path).iterdir())
