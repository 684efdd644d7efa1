"""Tests for ssm.data.lra: release readers, byte encoding, grayscale images and batching."""


import collections
import pickle

import numpy as np
import pytest
import torch
from lra_fixtures import (
    N_PER_BATCH,
    write_aan,
    write_cifar,
    write_imdb,
)
from PIL import Image

from ssm.data import lra
from ssm.data.lra import (
    BYTE_VOCAB_SIZE,
    CIFAR10_MEAN,
    CIFAR10_STD,
    EOS_ID,
    PAD_ID,
    ImageDataset,
    RetrievalDataset,
    TextDataset,
    collate,
    collate_images,
    collate_pairs,
    encode_bytes,
    find_aan,
    find_cifar10,
    find_imdb,
    image_splits,
    read_aan,
    read_cifar10,
    read_imdb,
    require,
    retrieval_splits,
    split_train_val,
    text_splits,
    to_grayscale,
)

# ----------------------------------------------------------- encoding ---


def test_encode_bytes_maps_utf8_bytes_with_offset_and_eos():
    tokens = encode_bytes("aé", None)
    assert tokens.dtype == torch.long
    assert tokens.tolist() == [ord("a") + 3, 0xC3 + 3, 0xA9 + 3, EOS_ID]
    assert encode_bytes("ab", None, append_eos=False).tolist() == [100, 101]
    assert encode_bytes("", None).tolist() == [EOS_ID]


def test_encode_bytes_truncation_keeps_eos_last_and_ids_in_range():
    text = bytes(range(256)).decode("latin-1") * 3  # every code point 0..255, 2 bytes for >127
    tokens = encode_bytes(text, 50)
    assert len(tokens) == 50 and tokens[-1] == EOS_ID
    assert tokens[:-1].tolist() == [b + 3 for b in text.encode("utf-8")[:49]]
    full = encode_bytes(text, None)
    assert int(full.min()) >= 0 and int(full.max()) < BYTE_VOCAB_SIZE == 259
    assert int(full.max()) == 0xC3 + 3  # UTF-8 of U+0080..U+00FF: lead 0xC2/0xC3, then 0x80..0xBF
    assert len(encode_bytes(text, 50, append_eos=False)) == 50
    assert encode_bytes(text, 1).tolist() == [EOS_ID]
    with pytest.raises(ValueError, match="l_max"):
        encode_bytes("x", 0)


# --------------------------------------------------------------- text ---


def test_read_imdb_parses_release_tree_in_name_order(tmp_path):
    write_imdb(tmp_path / "aclImdb")
    (tmp_path / "aclImdb" / "train" / "urls_pos.txt").write_text("ignored")
    rows = read_imdb(tmp_path / "aclImdb", "train")
    assert rows == [("Dull.", 0), ("Great film, naïve but fun.", 1),
                    ("Loved it <br /><br />again", 1)]
    assert read_imdb(tmp_path / "aclImdb", "test") == [("不好", 0), ("Très bien — 10/10", 1)]
    with pytest.raises(ValueError, match="split"):
        read_imdb(tmp_path / "aclImdb", "val")


@pytest.mark.parametrize("parts", [("aclImdb",), ("imdb", "aclImdb"), ("imdb",)])
def test_find_imdb_finds_each_layout(tmp_path, parts):
    write_imdb(tmp_path.joinpath(*parts))
    assert find_imdb(tmp_path) == tmp_path.joinpath(*parts)
    assert find_imdb(str(tmp_path)) == tmp_path.joinpath(*parts)


def test_find_imdb_none_when_incomplete(tmp_path):
    assert find_imdb(tmp_path) is None
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    assert find_imdb(tmp_path) is None


def test_text_dataset_and_splits(tmp_path):
    write_imdb(tmp_path / "imdb" / "aclImdb")
    splits = text_splits(tmp_path, l_max=8)
    assert splits["val"] is splits["test"] and len(splits["train"]) == 3
    tokens, label = splits["test"][0]
    assert label == 0 and tokens.tolist() == encode_bytes("不好", None).tolist()
    tokens, label = splits["train"][1]
    assert label == 1 and len(tokens) == 8 and tokens[-1] == EOS_ID
    batch_tokens, labels, lengths = collate([splits["train"][i] for i in range(3)])
    assert batch_tokens.shape == (3, 8) and lengths.tolist() == [6, 8, 8]
    assert labels.tolist() == [0, 1, 1] and (batch_tokens[0, 6:] == PAD_ID).all()
    assert TextDataset([("abc", 1)])[0][0].tolist() == [100, 101, 102, EOS_ID]


# ---------------------------------------------------------- retrieval ---


def test_read_aan_parses_five_columns_and_float_labels(tmp_path):
    write_aan(tmp_path / "aan")
    assert read_aan(tmp_path / "aan", "train") == [("first paper", "second paper", 1),
                                                   ("naïve text", "x", 0)]
    assert read_aan(tmp_path / "aan", "eval") == [("c", "d", 0)]
    assert read_aan(tmp_path / "aan", "test") == [("e", "ff", 1)]


@pytest.mark.parametrize("line", ["1.0\ta\tb\tonly four", "0.5\ta\tb\tc\td", "x\ta\tb\tc\td", "2\ta\tb\tc\td",
                                  "-1.0\ta\tb\tc\td"])
def test_read_aan_malformed_line_names_file_and_line(tmp_path, line):
    write_aan(tmp_path)
    path = tmp_path / "new_aan_pairs.eval.tsv"
    path.write_text("0\ta\tb\tc\td\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"new_aan_pairs\.eval\.tsv:2"):
        read_aan(tmp_path, "eval")


@pytest.mark.parametrize("parts", [("aan",), ("tsv_data",), ("lra_release", "tsv_data"),
                                   ("lra_release", "lra_release", "tsv_data")])
def test_find_aan_finds_each_layout(tmp_path, parts):
    write_aan(tmp_path.joinpath(*parts))
    assert find_aan(tmp_path) == tmp_path.joinpath(*parts)


def test_find_aan_none_when_a_split_is_missing(tmp_path):
    write_aan(tmp_path / "aan")
    (tmp_path / "aan" / "new_aan_pairs.test.tsv").unlink()
    assert find_aan(tmp_path) is None


def test_retrieval_dataset_and_collate_pairs(tmp_path):
    write_aan(tmp_path / "lra_release" / "lra_release" / "tsv_data")
    splits = retrieval_splits(tmp_path, l_max=6)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    a, b, label = splits["train"][0]
    assert label == 1 and a.tolist() == [byte + 3 for byte in b"first"] + [EOS_ID]
    assert len(b) == 6 and b[-1] == EOS_ID
    items = [(torch.tensor([5, 6, EOS_ID]), torch.tensor([7, EOS_ID]), 1),
             (torch.tensor([EOS_ID]), torch.tensor([8, 9, 10, 11, EOS_ID]), 0)]
    tokens, labels, lengths = collate_pairs(items)
    assert tokens.shape == (2, 2, 5) and tokens.dtype == torch.long
    assert labels.tolist() == [1, 0] and lengths.tolist() == [[3, 1], [2, 5]]
    assert tokens[0, 0].tolist() == [5, 6, EOS_ID, PAD_ID, PAD_ID]
    assert tokens[1, 0].tolist() == [7, EOS_ID, PAD_ID, PAD_ID, PAD_ID]
    assert tokens[0, 1].tolist() == [EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID]
    assert tokens[1, 1].tolist() == [8, 9, 10, 11, EOS_ID]
    assert collate_pairs([splits["test"][0]])[0].shape == (2, 1, 3)
    with pytest.raises(ValueError, match="empty"):
        collate_pairs([])
    assert len(RetrievalDataset([("x" * 9000, "y", 0)])[0][0]) == 4000


# -------------------------------------------------------------- image ---


def test_read_cifar10_concatenates_batches_in_channel_major_layout(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    images, labels = read_cifar10(tmp_path / "cifar-10-batches-py", "train")
    assert images.shape == (5 * N_PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    data = written["data_batch_2"][0]
    row, col, k = 5, 17, N_PER_BATCH + 3  # image 3 of the second batch
    for channel in range(3):  # plane c holds channel c, 32 rows of 32 pixels
        assert images[k, channel, row, col] == data[3, channel * 1024 + row * 32 + col]
    test_images, test_labels = read_cifar10(tmp_path / "cifar-10-batches-py", "test")
    assert test_images.shape == (N_PER_BATCH, 3, 32, 32)
    assert test_labels.tolist() == written["test_batch"][1]


@pytest.mark.parametrize("damage, reason", [
    (lambda raw: raw[: len(raw) // 2], "EOFError|UnpicklingError"),  # a truncated download
    (lambda raw: b"<html>not found</html>", "UnpicklingError"),  # an error page saved as the file
    (lambda raw: pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}), "no b'data' and b'labels'"),
    (lambda raw: pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}), r"shape \(4, 100\)"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 10]}), "labels from 3 to 10"),
])
def test_a_broken_cifar10_batch_names_the_file(tmp_path, damage, reason):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory)
    path = directory / "data_batch_3"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=rf"{path} is not a readable CIFAR-10 python batch \((.*)({reason}).*cifar-10-python"):
        read_cifar10(directory, "train")


def test_a_cifar10_batch_with_foreign_objects_is_refused(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    write_cifar(directory)
    (directory / "test_batch").write_bytes(pickle.dumps({b"data": collections.OrderedDict(), b"labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="test_batch: refusing to unpickle collections.OrderedDict"):
        read_cifar10(directory, "test")


@pytest.mark.parametrize("parts", [("cifar-10-batches-py",), ("cifar10", "cifar-10-batches-py"),
                                   ("cifar", "cifar-10-batches-py")])
def test_find_cifar10_finds_each_layout(tmp_path, parts):
    write_cifar(tmp_path.joinpath(*parts))
    assert find_cifar10(tmp_path) == tmp_path.joinpath(*parts)


def test_find_cifar10_none_when_a_batch_is_missing(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    assert find_cifar10(tmp_path) is None


def test_grayscale_equals_pil_convert_l_exactly():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    images[0] = 255
    images[1] = 0
    gray = to_grayscale(images)
    assert gray.shape == (6, 32, 32) and gray.dtype == np.uint8
    for image, expected in zip(images, gray):
        pil = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB").convert("L")
        np.testing.assert_array_equal(np.asarray(pil), expected)
    # a grid of colours over the whole RGB cube, as one 1 x 636056 image
    colours = np.stack(np.meshgrid(*[np.arange(0, 256, 3)] * 3, indexing="ij")).reshape(3, -1)
    colours = colours.astype(np.uint8).reshape(1, 3, 1, -1)
    pil = Image.fromarray(colours[0].transpose(1, 2, 0), "RGB").convert("L")
    np.testing.assert_array_equal(np.asarray(pil), to_grayscale(colours)[0])


def test_image_dataset_flattens_row_major_and_normalizes():
    gray = np.arange(2 * 32 * 32, dtype=np.int64).reshape(2, 32, 32) % 256
    gray = gray.astype(np.uint8)
    x, label = ImageDataset(gray, [7, 3])[1]
    assert x.shape == (1024, 1) and x.dtype == torch.float32 and label == 3
    assert x[5 * 32 + 9, 0] == pytest.approx(((gray[1, 5, 9] / 255) - CIFAR10_MEAN) / CIFAR10_STD,
                                             abs=1e-5)
    assert CIFAR10_MEAN == pytest.approx(122.6 / 255) and CIFAR10_STD == pytest.approx(61.0 / 255)
    assert x[0, 0] == pytest.approx((0 - 122.6) / 61.0, abs=1e-5)
    raw, _ = ImageDataset(gray, [7, 3], normalize=False)[0]
    assert raw[:, 0].tolist() == pytest.approx((gray[0].reshape(-1) / 255).tolist())
    xs, labels, lengths = collate_images([ImageDataset(gray, [7, 3])[i] for i in range(2)])
    assert xs.shape == (2, 1024, 1) and labels.tolist() == [7, 3] and lengths is None


def test_rgb_images_are_pixel_major_sequences_normalized_per_channel(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)
    x, label = ImageDataset(rgb, [7, 3])[1]
    assert x.shape == (1024, 3) and label == 3
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # s4's example.py, as S4-PTD's run
    for c in range(3):  # pixel (5, 9) is step 5 * 32 + 9; its channel c is feature c
        assert x[5 * 32 + 9, c] == pytest.approx((rgb[1, c, 5, 9] / 255 - mean[c]) / std[c], abs=1e-5)
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    splits = image_splits(tmp_path, n_val=4, grayscale=False)
    data, labels = written["test_batch"]
    x, label = splits["test"][2]
    assert x.shape == (1024, 3) and label == labels[2]
    raw = torch.as_tensor(data[2].reshape(3, 1024).T / 255.0, dtype=torch.float32)
    torch.testing.assert_close(x, (raw - torch.tensor(mean)) / torch.tensor(std))
    assert len(splits["val"]) == 4 and splits["train"][0][0].shape == (1024, 3)
    assert image_splits(tmp_path, n_val=4)["test"][2][0].shape == (1024, 1)
    for shape in ((2, 1, 32, 32), (2, 4, 32, 32), (2, 32, 32, 3)):  # not (n, H, W) nor (n, 3, H, W) planes
        with pytest.raises(ValueError, match="expected images"):
            ImageDataset(np.zeros(shape, dtype=np.uint8), [0, 1])


def test_split_train_val_deterministic_disjoint_and_matches_random_split():
    train, val = split_train_val(50, 5)
    assert (train, val) == split_train_val(50, 5, seed=42)
    assert len(train) == 45 and len(val) == 5
    assert sorted(train + val) == list(range(50))
    assert split_train_val(50, 5, seed=1) != (train, val)
    parts = torch.utils.data.random_split(range(50), [45, 5],
                                          generator=torch.Generator().manual_seed(42))
    assert (list(parts[0].indices), list(parts[1].indices)) == (train, val)
    assert split_train_val(3, 0)[1] == [] and len(split_train_val(3, 3)[1]) == 3
    with pytest.raises(ValueError, match="n_val"):
        split_train_val(3, 4)


def test_image_splits_sizes_and_grayscale(tmp_path):
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    splits = image_splits(tmp_path, n_val=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [17, 3, N_PER_BATCH]
    images, labels = read_cifar10(tmp_path / "cifar" / "cifar-10-batches-py", "train")
    train_idx, val_idx = split_train_val(20, 3)
    x, label = splits["val"][0]
    assert label == labels[val_idx[0]]
    expected = (to_grayscale(images[val_idx[0]][None])[0].reshape(-1) / 255 - CIFAR10_MEAN)
    np.testing.assert_allclose(x[:, 0].numpy(), expected / CIFAR10_STD, atol=1e-5)


# ------------------------------------------------------ missing files ---


def test_require_returns_path_or_raises_clear_error(tmp_path):
    assert require(str(tmp_path), "thing", "x", "y") == tmp_path
    with pytest.raises(FileNotFoundError, match=r"thing not found: expected a.txt. Get it. Data kept elsewhere: run with data_root=/that/folder \(or set DATA_PATH\)\.$"):
        require(None, "thing", "a.txt", "Get it.")


@pytest.mark.parametrize("splits, names", [
    (text_splits, ["aclImdb", "imdb", "{train,test}/{pos,neg}/<id>_<rating>.txt",
                   "aclImdb_v1.tar.gz", "ai.stanford.edu/~amaas/data/sentiment"]),
    (retrieval_splits, ["new_aan_pairs.train.tsv", "new_aan_pairs.eval.tsv",
                        "new_aan_pairs.test.tsv", "lra_release/lra_release/tsv_data",
                        "lra_release.gz", "google-research/long-range-arena"]),
    (image_splits, [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                    "cifar10/cifar-10-batches-py", "cifar-10-python.tar.gz",
                    "cs.toronto.edu/~kriz/cifar.html", "torchvision"]),
])
def test_missing_release_errors_name_folders_files_and_source(tmp_path, splits, names):
    with pytest.raises(FileNotFoundError) as info:
        splits(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for name in names:
        assert name in message


def test_readers_name_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="new_aan_pairs.test.tsv"):
        read_aan(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        read_cifar10(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="pos|neg"):
        read_imdb(tmp_path, "train")
    assert lra.UNK_ID == 1 and lra.PAD_ID == 0


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_read_cifar10_refuses_pickles_that_carry_code(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Payload(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar10(tmp_path, "test")


def test_read_cifar10_accepts_plain_numpy_batches(tmp_path):
    written = write_cifar(tmp_path)
    images, labels = read_cifar10(tmp_path, "test")
    assert np.array_equal(images.reshape(len(labels), -1), written["test_batch"][0])
