"""Tiny LRA fixtures written in the official release formats (IMDB tree, AAN TSVs, CIFAR pickles)."""

import pickle

import numpy as np

IMDB_FILES = {
    ("train", "pos", "10_9.txt"): "Great film, naïve but fun.",
    ("train", "pos", "2_8.txt"): "Loved it <br /><br />again",
    ("train", "neg", "0_1.txt"): "Dull.",
    ("test", "pos", "5_10.txt"): "Très bien — 10/10",
    ("test", "neg", "7_2.txt"): "不好",
}
AAN_ROWS = {
    "train": [("1.0", "P01-1", "P02-2", "first paper", "second paper"),
              ("0", "A", "B", "naïve text", "x")],
    "eval": [("0.0", "C", "D", "c", "d")],
    "test": [("1", "E", "F", "e", "ff")],
}
N_PER_BATCH = 4  # images per fake CIFAR batch file


def write_imdb(directory):
    for (split, name, filename), text in IMDB_FILES.items():
        (directory / split / name).mkdir(parents=True, exist_ok=True)
        (directory / split / name / filename).write_text(text, encoding="utf-8")


def write_aan(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in AAN_ROWS.items():
        lines = "".join("\t".join(row) + "\n" for row in rows)
        (directory / f"new_aan_pairs.{split}.tsv").write_text(lines, encoding="utf-8")


def write_cifar(directory, seed=0):
    """Fake release pickles; returns {file name: (data (n, 3072), labels)}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        data = rng.integers(0, 256, (N_PER_BATCH, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, N_PER_BATCH).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(N_PER_BATCH)]}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written
