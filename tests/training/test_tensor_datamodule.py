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
    with pytest.raises(ValueError, match="numpy arrays\? convert them with torch.from_numpy"):
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
