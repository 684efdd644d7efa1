"""Long Range Arena Text, Retrieval and Image: readers, encoding and torch datasets.

* Text: byte-level IMDB sentiment (2 classes) from the Stanford release
  ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``; the test split doubles
  as validation.
* Retrieval: byte-level AAN citation pairs (2 classes) from the LRA release
  files ``new_aan_pairs.{train,eval,test}.tsv``; ``eval`` is the validation split.
* Image: grayscale CIFAR-10 (10 classes) as 1024 pixels of one channel, from
  the python pickle release ``cifar-10-batches-py``; 5000 training images are
  held out for validation.

Texts use a fixed byte vocabulary: ``<pad>`` 0, ``<unk>`` 1 (reserved, never
produced), ``<eos>`` 2, and UTF-8 byte ``b`` becomes ``b + 3``. This departs from S4
and S5, which tokenize characters with a vocabulary fitted to the training split
(min_freq 15, about 135 symbols, rarer characters become ``<unk>``). We keep LRA's
byte-level encoding because it needs no vocabulary fitted to (and saved with) a
split; the difference is that a non-ASCII character is several tokens here, and a
rare character keeps its identity instead of becoming ``<unk>``.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ssm.data.listops import collate  # noqa: F401  (batches TextDataset items)

PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = 3  # id of byte 0
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256

IMDB_SPLITS = ("train", "test")
IMDB_LABELS = (("neg", 0), ("pos", 1))
IMDB_SUBDIRS = (("aclImdb",), ("imdb", "aclImdb"), ("imdb",))
IMDB_HOW_TO_GET = ("Download aclImdb_v1.tar.gz from the Stanford Large Movie Review Dataset "
                   "page (ai.stanford.edu/~amaas/data/sentiment) and unpack it under {root}.")

AAN_SPLITS = ("train", "eval", "test")
AAN_SUBDIRS = (("aan",), ("tsv_data",), ("lra_release", "tsv_data"),
               ("lra_release", "lra_release", "tsv_data"))
AAN_HOW_TO_GET = ("Download lra_release.gz from the Long Range Arena repository "
                  "(google-research/long-range-arena) and unpack it under {root}.")

CIFAR10_SPLITS = ("train", "test")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_SUBDIRS = (("cifar-10-batches-py",), ("cifar10", "cifar-10-batches-py"),
                   ("cifar", "cifar-10-batches-py"))
CIFAR10_HOW_TO_GET = ("Download cifar-10-python.tar.gz from the CIFAR-10 page "
                      "(cs.toronto.edu/~kriz/cifar.html) and unpack it under {root}, "
                      "or point at a torchvision CIFAR10 folder.")
CIFAR10_N_VAL = 5000
CIFAR10_MEAN, CIFAR10_STD = 122.6 / 255.0, 61.0 / 255.0  # of grayscale values scaled to [0, 1]
# per RGB channel, of values scaled to [0, 1]: the constants of the S4 repository's example.py,
# which the S4-PTD robustness protocol is built on (S4-PTD's ablation.py uses them too). The
# std is not CIFAR-10's pixel std, about (0.247, 0.243, 0.261), but the widely copied
# (0.2023, 0.1994, 0.2010); kept for fidelity to those runs.
CIFAR10_RGB_MEAN, CIFAR10_RGB_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGE_SIZE = 32


# -------------------------------------------------------------- files ---


DATA_ELSEWHERE = "Data kept elsewhere: run with data_root=/that/folder (or set DATA_PATH)."


def require(path_or_none: str | os.PathLike | None, what: str, expected: str,
            how_to_get: str) -> pathlib.Path:
    """``path_or_none`` as a Path, or a FileNotFoundError saying what is missing.

    The message reads ``"{what} not found: expected {expected}. {how_to_get} {WHERE}"``,
    WHERE saying how to point a run at data kept elsewhere.
    """
    if path_or_none is None:
        raise FileNotFoundError(f"{what} not found: expected {expected}. {how_to_get} {DATA_ELSEWHERE}")
    return pathlib.Path(path_or_none)


def _first_complete(data_root: str | os.PathLike, subdirs: Sequence[tuple[str, ...]],
                    is_complete: Callable[[pathlib.Path], bool]) -> pathlib.Path | None:
    """First ``data_root/<subdir>`` (in ``subdirs`` order) passing ``is_complete``, else None."""
    candidates = (pathlib.Path(data_root).joinpath(*parts) for parts in subdirs)
    return next((c for c in candidates if is_complete(c)), None)


def _searched(data_root: str | os.PathLike, subdirs: Sequence[tuple[str, ...]]) -> str:
    """The candidate folders under ``data_root``, comma separated, for error messages."""
    return ", ".join(str(pathlib.Path(data_root).joinpath(*parts)) for parts in subdirs)


def _check_split(split: str, splits: Sequence[str]) -> None:
    """Raise ValueError unless ``split`` is one of ``splits``."""
    if split not in splits:
        raise ValueError(f"split must be one of {', '.join(splits)}; got {split!r}")


# ----------------------------------------------------------- encoding ---


def encode_bytes(text: str, l_max: int | None, append_eos: bool = True) -> torch.LongTensor:
    """Byte-level ids of ``text``, a LongTensor of shape ``(length,)``.

    ``text`` is UTF-8 encoded and byte ``b`` becomes ``b + 3``; ``append_eos``
    ends the ids with ``EOS_ID``; ``l_max`` caps the total length, keeping the
    first bytes and the EOS last.
    """
    if l_max is not None and l_max < 1:
        raise ValueError(f"l_max must be >= 1 or None, got {l_max}")
    data = text.encode("utf-8")
    if l_max is not None:
        data = data[: l_max - 1 if append_eos else l_max]
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + BYTE_OFFSET
    if append_eos:
        ids = np.append(ids, EOS_ID)
    return torch.from_numpy(ids)


# --------------------------------------------------------------- text ---


def _is_imdb(directory: pathlib.Path) -> bool:
    """Whether ``directory`` holds ``{train,test}/{pos,neg}`` folders."""
    return all((directory / split / name).is_dir()
               for split in IMDB_SPLITS for name, _ in IMDB_LABELS)


def find_imdb(data_root: str | os.PathLike) -> pathlib.Path | None:
    """The aclImdb folder under ``data_root``, else None.

    Tries ``aclImdb``, ``imdb/aclImdb`` and ``imdb`` in order for one holding
    ``{train,test}/{pos,neg}``.
    """
    return _first_complete(data_root, IMDB_SUBDIRS, _is_imdb)


def locate_imdb(data_root: str | os.PathLike) -> pathlib.Path:
    """``find_imdb(data_root)``, or a FileNotFoundError naming what to put where."""
    expected = (f"{{train,test}}/{{pos,neg}}/<id>_<rating>.txt in one of "
                f"{_searched(data_root, IMDB_SUBDIRS)}")
    return require(find_imdb(data_root), "IMDB reviews (aclImdb)", expected,
                   IMDB_HOW_TO_GET.format(root=data_root))


def read_imdb(directory: str | os.PathLike, split: str) -> list[tuple[str, int]]:
    """Rows ``(text, label)`` of an aclImdb ``split`` ("train" or "test").

    Label is 0 for ``neg`` and 1 for ``pos``; the ``neg`` rows come first and
    each folder's files are read in file-name order.
    """
    _check_split(split, IMDB_SPLITS)
    rows = []
    for name, label in IMDB_LABELS:
        folder = pathlib.Path(directory) / split / name
        if not folder.is_dir():
            raise FileNotFoundError(f"IMDB folder not found: {folder}")
        for path in sorted(folder.glob("*.txt")):
            rows.append((path.read_text(encoding="utf-8"), label))
    return rows


class TextDataset(torch.utils.data.Dataset):
    """Byte-encoded texts; item ``i`` is ``(tokens LongTensor (length,), label int)``.

    ``rows`` are ``(text, label)``; each text keeps its first ``l_max - 1``
    bytes and ends with EOS.  Rows are encoded here, once.  Batch with ``collate``.
    """

    def __init__(self, rows: Sequence[tuple[str, int]], l_max: int | None = 4096):
        self.tokens = [encode_bytes(text, l_max) for text, _ in rows]
        self.labels = [int(label) for _, label in rows]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.LongTensor, int]:
        return self.tokens[index], self.labels[index]


def text_splits(data_root: str | os.PathLike, l_max: int | None = 4096) -> dict[str, TextDataset]:
    """``{"train", "val", "test"}`` TextDatasets of IMDB; ``val`` is the test set."""
    directory = locate_imdb(data_root)
    train = TextDataset(read_imdb(directory, "train"), l_max)
    test = TextDataset(read_imdb(directory, "test"), l_max)
    return {"train": train, "val": test, "test": test}


# ---------------------------------------------------------- retrieval ---


def aan_filename(split: str) -> str:
    """Release file name of AAN ``split``: ``new_aan_pairs.{split}.tsv``."""
    return f"new_aan_pairs.{split}.tsv"


def find_aan(data_root: str | os.PathLike) -> pathlib.Path | None:
    """The folder of the AAN TSVs under ``data_root``, else None.

    Tries ``aan``, ``tsv_data``, ``lra_release/tsv_data`` and
    ``lra_release/lra_release/tsv_data`` in order for one holding all of
    ``new_aan_pairs.{train,eval,test}.tsv``.
    """
    def complete(directory: pathlib.Path) -> bool:
        return all((directory / aan_filename(split)).is_file() for split in AAN_SPLITS)

    return _first_complete(data_root, AAN_SUBDIRS, complete)


def locate_aan(data_root: str | os.PathLike) -> pathlib.Path:
    """``find_aan(data_root)``, or a FileNotFoundError naming what to put where."""
    files = ", ".join(aan_filename(split) for split in AAN_SPLITS)
    expected = f"{files} in one of {_searched(data_root, AAN_SUBDIRS)}"
    return require(find_aan(data_root), "AAN retrieval TSVs", expected,
                   AAN_HOW_TO_GET.format(root=data_root))


def _integer_label(text: str) -> int | None:
    """``text`` (``"1"``, ``"1.0"``) as an int, or None when it is no whole number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def read_aan(directory: str | os.PathLike, split: str) -> list[tuple[str, str, int]]:
    """Rows ``(text1, text2, label)`` of ``new_aan_pairs.{split}.tsv``.

    Lines have no header and five tab-separated fields ``label, id1, id2,
    text1, text2``; the label, 0 or 1, may be written as a float (``1.0``).  Fields are
    taken as they are (no quote handling).  A malformed line raises ValueError
    naming the file and line.
    """
    _check_split(split, AAN_SPLITS)
    path = pathlib.Path(directory) / aan_filename(split)
    if not path.is_file():
        raise FileNotFoundError(f"AAN split file not found: {path}")
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            label = _integer_label(fields[0]) if len(fields) == 5 else None
            if label not in (0, 1):
                raise ValueError(
                    f"{path}:{line_number}: expected 'label\\tid1\\tid2\\ttext1\\ttext2' with the "
                    f"label 0 or 1, got {len(fields)} fields starting {line[:80]!r}"
                )
            rows.append((fields[3], fields[4], label))
    return rows


class RetrievalDataset(torch.utils.data.Dataset):
    """Byte-encoded document pairs; item ``i`` is ``(tokens_a, tokens_b, label int)``.

    ``rows`` are ``(text1, text2, label)``; each document becomes a LongTensor
    ``(length,)`` of its first ``l_max - 1`` bytes and EOS.  Batch with
    ``collate_pairs``.
    """

    def __init__(self, rows: Sequence[tuple[str, str, int]], l_max: int | None = 4000):
        self.tokens_a = [encode_bytes(text1, l_max) for text1, _, _ in rows]
        self.tokens_b = [encode_bytes(text2, l_max) for _, text2, _ in rows]
        self.labels = [int(label) for _, _, label in rows]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.LongTensor, torch.LongTensor, int]:
        return self.tokens_a[index], self.tokens_b[index], self.labels[index]


def collate_pairs(
    batch: Sequence[tuple[torch.LongTensor, torch.LongTensor, int]],
) -> tuple[torch.LongTensor, torch.LongTensor, torch.LongTensor]:
    """Batch RetrievalDataset items: ``(tokens, labels, lengths)``.

    tokens ``(2, B, L)``: first documents at ``[0]``, second at ``[1]``, all
    right-padded with PAD_ID to the longest of the ``2B`` documents; labels
    ``(B,)``; lengths ``(2, B)`` before padding.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    sequences = [a for a, _, _ in batch] + [b for _, b, _ in batch]
    padded = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=PAD_ID)
    tokens = padded.view(2, len(batch), padded.shape[-1])
    labels = torch.tensor([int(label) for _, _, label in batch], dtype=torch.long)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long).view(2, len(batch))
    return tokens, labels, lengths


def retrieval_splits(data_root: str | os.PathLike,
                     l_max: int | None = 4000) -> dict[str, RetrievalDataset]:
    """``{"train", "val", "test"}`` RetrievalDatasets of AAN; ``val`` is the eval file."""
    directory = locate_aan(data_root)
    names = {"train": "train", "val": "eval", "test": "test"}
    return {key: RetrievalDataset(read_aan(directory, name), l_max) for key, name in names.items()}


# -------------------------------------------------------------- image ---


def find_cifar10(data_root: str | os.PathLike) -> pathlib.Path | None:
    """The ``cifar-10-batches-py`` folder under ``data_root``, else None.

    Tries ``cifar-10-batches-py``, ``cifar10/cifar-10-batches-py`` and
    ``cifar/cifar-10-batches-py`` in order for one holding ``data_batch_1..5``
    and ``test_batch``.
    """
    def complete(directory: pathlib.Path) -> bool:
        names = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
        return all((directory / name).is_file() for name in names)

    return _first_complete(data_root, CIFAR10_SUBDIRS, complete)


def locate_cifar10(data_root: str | os.PathLike) -> pathlib.Path:
    """``find_cifar10(data_root)``, or a FileNotFoundError naming what to put where."""
    files = ", ".join(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES)
    expected = f"{files} in one of {_searched(data_root, CIFAR10_SUBDIRS)}"
    return require(find_cifar10(data_root), "CIFAR-10 python batches", expected,
                   CIFAR10_HOW_TO_GET.format(root=data_root))


def read_cifar10(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(n, 3, 32, 32)`` (RGB planes) and labels int64 ``(n,)`` of ``split``.

    ``split`` "train" reads ``data_batch_1..5`` in order, "test" reads
    ``test_batch``: pickled dicts whose ``b"data"`` is uint8 ``(10000, 3072)``,
    each row the red, green and blue 32x32 planes row-major, and whose
    ``b"labels"`` lists ints.  Only NumPy arrays and builtin containers are
    unpickled; any other object in the file raises ``pickle.UnpicklingError``, and
    a truncated or malformed file a ValueError naming it.
    """
    _check_split(split, CIFAR10_SPLITS)
    images, labels = [], []
    for name in CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_TEST_FILES:
        path = pathlib.Path(directory) / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch file not found: {path}")
        data, targets = _read_cifar10_batch(path)
        images.append(data)
        labels.append(targets)
    data = np.concatenate(images).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return data, np.concatenate(labels)


def _read_cifar10_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``(n, 3072)`` and labels int64 ``(n,)`` of one pickled batch file."""
    def broken(reason: str) -> ValueError:
        return ValueError(f"{path} is not a readable CIFAR-10 python batch ({reason}); extract it again "
                          "from cifar-10-python.tar.gz")

    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as error:
        if "refusing to unpickle" in str(error):
            raise pickle.UnpicklingError(f"{path}: {error}") from error
        raise broken(f"{type(error).__name__}: {error}") from error
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise broken(f"{type(error).__name__}: {error}") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise broken("no b'data' and b'labels' entries")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    targets = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or targets.shape != (len(data),):
        raise broken(f"data of shape {data.shape} with {targets.size} labels, "
                     f"expected (n, {3 * IMAGE_SIZE * IMAGE_SIZE}) and n labels")
    if targets.size and not (0 <= targets.min() and targets.max() <= 9):
        raise broken(f"labels from {targets.min()} to {targets.max()}, expected 0-9")
    return data, targets


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds NumPy arrays and nothing else (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a CIFAR-10 batch")


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """Luma uint8 ``(n, H, W)`` of RGB images uint8 ``(n, 3, H, W)``.

    Bit-exact with PIL's ``convert("L")`` (so with torchvision's Grayscale on
    PIL images): ``(R*19595 + G*38470 + B*7471 + 32768) >> 16``, i.e. the
    ITU-R 601 weights 0.299, 0.587, 0.114 in 16-bit fixed point, rounded.
    """
    rgb = np.asarray(images, dtype=np.uint32)
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected images of shape (n, 3, H, W), got {rgb.shape}")
    luma = rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 32768
    return (luma >> 16).astype(np.uint8)


class ImageDataset(torch.utils.data.Dataset):
    """Images as sequences; item ``i`` is ``(x float32 (H*W, C), label int)``.

    ``images`` is uint8 ``(n, H, W)`` (grayscale, C = 1) or ``(n, 3, H, W)`` (RGB planes,
    C = 3), flattened row-major; values are scaled to [0, 1] and, with ``normalize``,
    standardized with ``CIFAR10_MEAN`` and ``CIFAR10_STD`` (grayscale) or per channel with
    ``CIFAR10_RGB_MEAN`` and ``CIFAR10_RGB_STD``.  Batch with ``collate_images``.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int], normalize: bool = True):
        images = torch.as_tensor(np.asarray(images, dtype=np.uint8))
        rgb = images.ndim == 4 and images.shape[1] == 3
        if not (images.ndim == 3 or rgb) or len(images) != len(labels):
            raise ValueError(f"expected images (n, H, W) or (n, 3, H, W) and n labels, got "
                             f"{tuple(images.shape)} and {len(labels)} labels")
        # (n, H*W, C): pixel-major, the channels of one pixel together
        self.images = images.flatten(2).transpose(1, 2) if rgb else images.reshape(len(images), -1, 1)
        self.labels = [int(label) for label in labels]
        self.normalize = normalize
        mean, std = (CIFAR10_RGB_MEAN, CIFAR10_RGB_STD) if rgb else ((CIFAR10_MEAN,), (CIFAR10_STD,))
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].to(torch.float32) / 255.0
        if self.normalize:
            x = (x - self.mean) / self.std
        return x, self.labels[index]


def collate_images(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, ...]:
    """Batch ImageDataset items: ``(x (B, L, 1), labels (B,), None)``; all lengths are L."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    x = torch.stack([item for item, _ in batch])
    return x, torch.tensor([int(label) for _, label in batch], dtype=torch.long), None


def split_train_val(n: int, n_val: int, seed: int = 42) -> tuple[list[int], list[int]]:
    """Disjoint index lists ``(train, val)`` of sizes ``n - n_val`` and ``n_val`` over ``range(n)``.

    The same split as ``torch.utils.data.random_split`` with lengths
    ``[n - n_val, n_val]`` and a generator seeded with ``seed``.
    """
    if not 0 <= n_val <= n:
        raise ValueError(f"n_val must be in [0, n={n}], got {n_val}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[: n - n_val], order[n - n_val :]


def image_splits(data_root: str | os.PathLike, n_val: int = CIFAR10_N_VAL, seed: int = 42,
                 normalize: bool = True, grayscale: bool = True) -> dict[str, ImageDataset]:
    """``{"train", "val", "test"}`` ImageDatasets of CIFAR-10, grayscale (LRA Image) or,
    with ``grayscale=False``, RGB (sequences of (1024, 3)).

    ``val`` is ``n_val`` training images chosen by ``split_train_val(.., seed)``.
    """
    directory = locate_cifar10(data_root)
    convert = to_grayscale if grayscale else np.asarray
    images, labels = read_cifar10(directory, "train")
    images = convert(images)
    train_idx, val_idx = split_train_val(len(labels), n_val, seed)
    test_images, test_labels = read_cifar10(directory, "test")
    return {
        "train": ImageDataset(images[train_idx], labels[train_idx], normalize),
        "val": ImageDataset(images[val_idx], labels[val_idx], normalize),
        "test": ImageDataset(convert(test_images), test_labels, normalize),
    }
