"""ssm.training.data.TensorDataModule (data=tensors): your own classification data from one
file of tensors, its checks, and `train.py experiment=tensors` end to end."""

import os
import pathlib
import subprocess
import sys

import hydra
import pytest
import torch
from config_helpers import compose_config

from ssm.training.data import TensorDataModule
from ssm.training.run import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2]


def save(tmp_path, splits, name="data.pt"):
    path = tmp_path / name
    torch.save(splits, path)
    return path


def tokens(n, L=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 7, (n, L), generator=g)
    return {"x": x, "y": x[:, 0] % 3}


def batches(loader):
    return [b for b in loader]


def test_token_file_without_val_holds_out_a_fraction_of_train(tmp_path):
    train, test = tokens(50), tokens(9, seed=1)
    dm = TensorDataModule(save(tmp_path, {"train": train, "test": test}), val_fraction=0.2, batch_size=8)
    assert (dm.n_tokens, dm.n_classes, dm.d_input) == (int(train["x"].max()) + 1, 3, None)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 9)
    rows = torch.cat([dm.train_set.x, dm.val_set.x])  # a partition of train's rows
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, train["x"].tolist()))
    x, y = batches(dm.test_dataloader())[0]  # no lengths: (x, y) batches, in the file's order
    torch.testing.assert_close(x, test["x"][:8])
    torch.testing.assert_close(y, test["y"][:8])
    again = TensorDataModule(save(tmp_path, {"train": train, "test": test}), val_fraction=0.2)
    again.setup()
    torch.testing.assert_close(again.val_set.x, dm.val_set.x)  # the hold-out is fixed by the seed


def test_feature_file_with_lengths_and_val_gives_padded_batches(tmp_path):
    g = torch.Generator().manual_seed(2)

    def features(n, d):
        return {"x": torch.randn(n, 10, d, generator=g), "y": torch.randint(0, 4, (n,), generator=g),
                "lengths": torch.randint(1, 11, (n,), generator=g)}

    splits = {"train": features(12, 3), "val": features(5, 3), "test": features(6, 3)}
    dm = TensorDataModule(save(tmp_path, splits), batch_size=4, n_classes=6)
    dm.setup()
    assert (dm.d_input, dm.n_tokens, dm.n_classes, len(dm.val_set)) == (3, None, 6, 5)
    x, y, lengths = batches(dm.val_dataloader())[0]
    torch.testing.assert_close(x, splits["val"]["x"][:4])
    torch.testing.assert_close(lengths, splits["val"]["lengths"][:4])
    flat = TensorDataModule(save(tmp_path, {"train": {"x": torch.randn(4, 7), "y": torch.zeros(4, dtype=torch.long)},
                                            "test": {"x": torch.randn(2, 7), "y": torch.ones(2, dtype=torch.long)}},
                                 "flat.pt"), val_fraction=0.25)
    assert flat.d_input == 1 and flat.n_classes == 2
    flat.setup()
    assert flat.train_set.x.shape == (3, 7, 1)


@pytest.mark.parametrize("change, error, match", [
    ({"train": None}, ValueError, r"split 'train' must be a dict with 'x', 'y'"),
    ({"extra": tokens(3)}, ValueError, r"unknown splits \['extra'\]"),
    ({"train": {"x": torch.zeros(4, 5, dtype=torch.bool), "y": torch.zeros(4, dtype=torch.long)}}, ValueError,
     "x must be"),
    ({"train": {"x": torch.zeros(4, 5, dtype=torch.long), "y": torch.zeros(4, 1, dtype=torch.long)}}, ValueError,
     r"y must be \(4,\) integer classes"),
    ({"train": {"x": torch.zeros(4, 5, dtype=torch.long), "y": torch.zeros(4).long(),
                "lengths": torch.tensor([1, 2, 6, 3])}}, ValueError, r"lengths must lie in \[1, L = 5\]"),
    ({"train": {"x": torch.randn(4, 5), "y": torch.zeros(4).long()}}, ValueError, "differ in input kind"),
    ({"train": {"x": torch.zeros(0, 5, dtype=torch.long), "y": torch.zeros(0).long()},
      "val": tokens(3)}, ValueError, "the train split is empty"),
    ({"train": {"x": torch.full((4, 5), float("nan")), "y": torch.zeros(4).long()}}, ValueError, "NaN"),
    ({"train": {"x": -torch.ones(4, 5, dtype=torch.long), "y": torch.zeros(4).long()}}, ValueError, ">= 0"),
], ids=["not-a-dict", "unknown-split", "bool-x", "y-shape", "lengths-range", "mixed-kinds", "empty", "nan", "negative"])
def test_bad_files_are_refused_with_what_is_wrong(tmp_path, change, error, match):
    splits = {"train": tokens(20), "test": tokens(5, seed=3)}
    splits.update(change)
    with pytest.raises(error, match=match):
        TensorDataModule(save(tmp_path, splits))


@pytest.mark.parametrize("x_dtype, kept", [(torch.uint8, torch.int64), (torch.int16, torch.int64),
                                            (torch.float64, torch.float32), (torch.float16, torch.float32)])
def test_inputs_are_kept_in_the_dtypes_the_models_take(tmp_path, x_dtype, kept):
    """uint8 token ids (a common storage) and float64 features (torch.from_numpy) would pass
    the checks and then be refused by the model's first forward."""
    x = (torch.arange(40).reshape(4, 10) % 7).to(x_dtype)
    path = save(tmp_path, {"train": {"x": x, "y": torch.zeros(4).long()}, "test": {"x": x, "y": torch.ones(4).long()}})
    dm = TensorDataModule(path, val_fraction=0.25)
    dm.setup()
    assert dm.train_set.x.dtype == kept and dm.test_set.x.dtype == kept
    if kept == torch.int64:
        assert dm.n_tokens == 7
    cfg = compose_config("experiment=tensors", f"data.path={path}", "model.d_model=8", "model.layer.d_state=4")
    batch = next(iter(dm.test_dataloader()))
    assert build_model(cfg, dm)(batch[0]).shape == (4, 2)


def test_numpy_arrays_and_empty_sequences_are_refused_with_what_to_do(tmp_path):
    import numpy as np

    torch.save({"train": {"x": np.zeros((4, 5)), "y": np.zeros(4)}, "test": tokens(3)}, tmp_path / "np.pt")
    with pytest.raises(ValueError, match=r"numpy arrays\? convert them with torch.from_numpy"):
        TensorDataModule(tmp_path / "np.pt")
    empty = {"x": torch.zeros(4, 0, dtype=torch.long), "y": torch.zeros(4).long()}
    with pytest.raises(ValueError, match="sequences of length 0"):
        TensorDataModule(save(tmp_path, {"train": empty, "test": empty}, "empty.pt"))


def test_missing_file_and_bad_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file at .*missing\.pt; write one with torch\.save"):
        TensorDataModule(tmp_path / "missing.pt")
    path = save(tmp_path, {"train": tokens(20), "test": tokens(5)})
    with pytest.raises(ValueError, match="val_fraction must be in"):
        TensorDataModule(path, val_fraction=1.0)
    with pytest.raises(ValueError, match=r"token id 6 found but n_tokens=4"):
        TensorDataModule(path, n_tokens=4)
    with pytest.raises(ValueError, match=r"class 2 found but n_classes=2"):
        TensorDataModule(path, n_classes=2)
    with pytest.raises(ValueError, match="too few to hold out"):
        TensorDataModule(save(tmp_path, {"train": tokens(1), "test": tokens(5)}, "one.pt"))


@pytest.mark.parametrize("model", ["s4d", "dss", "s4ptd", "s5", "s5_ptd", "mamba"])
def test_experiment_builds_a_classifier_of_every_model(tmp_path, model):
    path = save(tmp_path, {"train": tokens(20), "test": tokens(5)})
    cfg = compose_config("experiment=tensors", f"model={model}", f"data.path={path}", "model.d_model=8",
                         "model.layer.d_state=16")  # S5: 8 blocks of 2 states
    net = build_model(cfg, hydra.utils.instantiate(cfg.data))
    assert net(tokens(2)["x"]).shape == (2, 3)


@pytest.mark.slow
def test_train_py_runs_on_a_users_file(tmp_path):
    save(tmp_path, {"train": tokens(40), "test": tokens(10, seed=4)}, "my_data.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=tensors", "data.path=my_data.pt", "model.d_model=8",
           "model.n_layers=1", "model.layer.d_state=4", "trainer.max_epochs=1", "trainer.accelerator=cpu",
           "callbacks.progress=null", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test/acc" in result.stdout + result.stderr


def float_features(n, L=5, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, L, d, generator=g), "y": torch.randint(0, 3, (n,), generator=g)}


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
def test_a_single_non_finite_feature_is_refused(tmp_path, bad):
    """One inf, -inf or NaN among finite features stops the module (not only all-NaN x)."""
    train = float_features(8)
    train["x"][3, 1, 0] = bad
    with pytest.raises(ValueError, match=r"split 'train': x holds NaN or infinite values"):
        TensorDataModule(save(tmp_path, {"train": train, "test": float_features(2, seed=1)}))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_classes_and_lengths_are_kept_as_int64(tmp_path, dtype):
    """Classes and lengths stored in a narrower integer type reach the loss as int64
    (cross_entropy refuses int32 targets)."""
    def split(n):
        return {"x": torch.randn(n, 5), "y": (torch.arange(n) % 2).to(dtype), "lengths": torch.full((n,), 5, dtype=dtype)}

    dm = TensorDataModule(save(tmp_path, {"train": split(8), "test": split(3)}), val_fraction=0.25)
    dm.setup()
    for subset in (dm.train_set, dm.val_set, dm.test_set):
        assert subset.y.dtype == torch.int64 and subset.lengths.dtype == torch.int64
    assert dm.test_set.y.tolist() == [0, 1, 0] and dm.test_set.lengths.tolist() == [5, 5, 5]


def test_a_negative_class_is_refused(tmp_path):
    """y = -1 (an "ignore" label, say) is no class."""
    train = tokens(6)
    train["y"][2] = -1
    with pytest.raises(ValueError, match=r"split 'train': classes and token ids must be >= 0"):
        TensorDataModule(save(tmp_path, {"train": train, "test": tokens(3)}))


@pytest.mark.parametrize("lengths, ok", [([1, 5, 5, 2], True), ([0, 5, 5, 2], False), ([1, 5, 6, 2], False)])
def test_lengths_lie_between_one_and_the_sequence_length(tmp_path, lengths, ok):
    """A length of 0 (an empty sequence) and one past L are refused; 1 and L are fine."""
    split = {"x": torch.zeros(4, 5, dtype=torch.long), "y": torch.zeros(4).long(), "lengths": torch.tensor(lengths)}
    path = save(tmp_path, {"train": split, "val": split, "test": split})
    if ok:
        assert TensorDataModule(path)._splits["train"].lengths.tolist() == lengths
    else:
        with pytest.raises(ValueError, match=r"lengths must lie in \[1, L = 5\]"):
            TensorDataModule(path)


def test_splits_with_and_without_lengths_are_refused(tmp_path):
    """Lengths in train but not in test would pad one split and not the other."""
    train = {**tokens(10), "lengths": torch.full((10,), 12)}
    with pytest.raises(ValueError, match="the splits differ in input kind, feature size or whether they have lengths"):
        TensorDataModule(save(tmp_path, {"train": train, "test": tokens(4)}))


def test_n_tokens_counts_the_ids_of_every_split(tmp_path):
    """A token id that occurs only in the test split still gets an embedding row."""
    train, test = tokens(10), tokens(4, seed=1)
    test["x"][1, 3] = 11  # tokens() draws ids below 7
    dm = TensorDataModule(save(tmp_path, {"train": train, "test": test}))
    assert dm.n_tokens == 12


@pytest.mark.parametrize("n_tokens, ok", [(6, False), (7, True)])
def test_given_n_tokens_must_exceed_the_largest_id(tmp_path, n_tokens, ok):
    """Ids run from 0 to n_tokens - 1: the largest id 6 needs n_tokens = 7."""
    x = torch.arange(14).reshape(2, 7) % 7
    split = {"x": x, "y": torch.zeros(2).long()}
    path = save(tmp_path, {"train": split, "val": split, "test": split})
    if ok:
        assert TensorDataModule(path, n_tokens=n_tokens).n_tokens == 7
    else:
        with pytest.raises(ValueError, match=r"token id 6 found but n_tokens=6"):
            TensorDataModule(path, n_tokens=n_tokens)


@pytest.mark.parametrize("n, fraction, n_val", [(19, 0.1, 2), (16, 0.1, 2), (14, 0.1, 1), (5, 0.1, 1)])
def test_the_held_out_size_is_the_fraction_rounded_to_the_nearest_example(tmp_path, n, fraction, n_val):
    """19 examples at 0.1 hold out 2 (1.9 rounded), not 1 (1.9 truncated); at least one is held out."""
    dm = TensorDataModule(save(tmp_path, {"train": tokens(n), "test": tokens(3)}), val_fraction=fraction)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (n - n_val, n_val)


def test_held_out_rows_keep_the_files_order(tmp_path):
    """The hold-out draws which rows go to validation at random, but both parts keep the
    rows in the order of the file."""
    n = 30
    x = torch.arange(n)[:, None].repeat(1, 4)  # row i holds token id i
    dm = TensorDataModule(save(tmp_path, {"train": {"x": x, "y": torch.zeros(n).long()}, "test": tokens(3)}),
                          val_fraction=0.3)
    dm.setup()
    train_ids, val_ids = dm.train_set.x[:, 0].tolist(), dm.val_set.x[:, 0].tolist()
    assert sorted(train_ids + val_ids) == list(range(n)) and len(val_ids) == 9
    assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)
    assert val_ids != list(range(n - 9, n)) and val_ids != list(range(9))  # drawn, not the file's first or last rows
