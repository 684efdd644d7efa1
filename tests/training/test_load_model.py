"""ssm.training.load_model: a trained model back from a train.py run folder."""

import re

import hydra
import pytest
import torch
from config_helpers import compose_config
from omegaconf import OmegaConf, open_dict
from train_runner import train

from ssm.training import load_model
from ssm.training.run import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load_model")
    train(tmp, "run", "trainer.max_epochs=2", "logger=csv", "model.layer.bidirectional=false")
    return tmp / "run"


def expected_model(run_dir, checkpoint):
    """The model by hand: the saved config, the data's shapes, the checkpoint's weights."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model = build_model(cfg, hydra.utils.instantiate(cfg.data, data_root=str(run_dir.parent / "data")))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return model.eval()


def tokens():
    return torch.randint(1, 10, (3, 25), generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
@pytest.mark.parametrize("which", ["best", "last", "file"])
def test_loaded_model_is_the_checkpoints_model_in_eval_mode(run_dir, which):
    folder = run_dir / "checkpoints"
    (best,) = folder.glob("best*.ckpt")
    checkpoint = {"best": best, "last": folder / "last.ckpt", "file": best}[which]
    model = load_model(best if which == "file" else run_dir, checkpoint="last" if which == "last" else "best")
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(tokens()), expected_model(run_dir, checkpoint)(tokens()), rtol=0, atol=0)


@pytest.mark.slow
def test_a_checkpoint_without_recorded_shapes_takes_them_from_the_data(run_dir, tmp_path, monkeypatch):
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved.pop("model_shapes") == {"d_output": 10, "n_tokens": 18}
    old = tmp_path / "run"
    (old / "checkpoints").mkdir(parents=True)
    (old / ".hydra").mkdir()
    (old / ".hydra" / "config.yaml").write_text((run_dir / ".hydra" / "config.yaml").read_text())
    torch.save(saved, old / "checkpoints" / "last.ckpt")
    monkeypatch.setenv("DATA_PATH", str(run_dir.parent / "data"))
    model = load_model(old, checkpoint="last")
    with torch.no_grad():
        torch.testing.assert_close(model(tokens()), load_model(run_dir, "last")(tokens()), rtol=0, atol=0)


def test_missing_run_parts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints/ in"):
        load_model(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(FileNotFoundError, match=r"no 'best' checkpoint in .* \(it holds \['last.ckpt'\]\)"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no run config at .*config\.yaml"):
        load_model(tmp_path, checkpoint="last")


def test_weights_only_checkpoints_record_the_model_shapes_too(tmp_path):
    """Lightning skips callbacks' on_save_checkpoint for weights-only checkpoints; the task's
    own hook writes the shapes into every checkpoint."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from ssm.training.task import SequenceClassificationTask

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(3, 2)

        def forward(self, x, lengths=None):
            return self.w(x)

    task = SequenceClassificationTask(Logits(), n_classes=2, optimizer=lambda m: torch.optim.SGD(m.parameters(), 0.1))
    task.model_shapes = {"d_output": 2, "d_input": 3, "image_shape": (4, 5)}
    data = DataLoader(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))), batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True, filename="w")
    L.Trainer(max_epochs=1, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path).fit(task, data)
    saved = torch.load(tmp_path / "w.ckpt", map_location="cpu", weights_only=True)
    assert "optimizer_states" not in saved  # weights only
    assert saved["model_shapes"] == {"d_output": 2, "d_input": 3, "image_shape": [4, 5]}


SHAPES = {"d_output": 3, "n_tokens": 7}
CHECKPOINT_CALLBACK = ("ModelCheckpoint{'monitor': 'val/acc', 'mode': 'max', 'every_n_train_steps': 0, "
                       "'every_n_epochs': 1, 'train_time_interval': None}")


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    """The saved config of a small classifier run (no data needed: checkpoints carry the shapes)."""
    cfg = compose_config("experiment=tensors", "model.d_model=8", "model.n_layers=1", "model.layer.d_state=4")
    with open_dict(cfg):
        del cfg["hydra"]
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    OmegaConf.save(cfg, path)
    return path


def small_run(tmp_path, config):
    """A run folder as train.py leaves it: .hydra/config.yaml and an empty checkpoints/."""
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(config.read_text())
    (tmp_path / "checkpoints").mkdir()
    return tmp_path


def save_checkpoint(run, name, seed, **extra):
    """A Lightning-style checkpoint of the run's model with weights drawn from ``seed``; returns
    the model's state_dict."""
    torch.manual_seed(seed)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    weights = hydra.utils.instantiate(cfg.model, **SHAPES).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()}, "model_shapes": SHAPES, **extra},
               run / "checkpoints" / name)
    return weights


def assert_weights(model, weights):
    state = model.state_dict()
    assert state.keys() == weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_best_of_several_is_the_one_last_ckpt_records(tmp_path, small_config):
    """With save_top_k > 1 several best*.ckpt are kept: "best" is the one whose name
    ModelCheckpoint recorded as best_model_path in last.ckpt (the run folder may have
    moved since: only the file name counts)."""
    run = small_run(tmp_path, small_config)
    save_checkpoint(run, "best-epoch=1.ckpt", seed=1)
    recorded = save_checkpoint(run, "best-epoch=3.ckpt", seed=2)
    save_checkpoint(run, "best-epoch=5.ckpt", seed=3)
    state = {"best_model_path": "/elsewhere/outputs/run/checkpoints/best-epoch=3.ckpt", "best_model_score": 0.9}
    save_checkpoint(run, "last.ckpt", seed=4, callbacks={CHECKPOINT_CALLBACK: state})
    model = load_model(run, "best")
    assert not model.training
    assert_weights(model, recorded)


def test_last_is_last_ckpt_even_beside_a_versioned_one(tmp_path, small_config):
    """Lightning writes last-v1.ckpt when last.ckpt exists; "last" still means last.ckpt."""
    run = small_run(tmp_path, small_config)
    last = save_checkpoint(run, "last.ckpt", seed=1)
    save_checkpoint(run, "last-v1.ckpt", seed=2)
    assert_weights(load_model(run, "last"), last)


@pytest.mark.parametrize("content", [{}, {"model_shapes": SHAPES}, [1, 2]])
def test_a_file_without_a_state_dict_is_not_a_training_checkpoint(tmp_path, small_config, content):
    run = small_run(tmp_path, small_config)
    torch.save(content, run / "checkpoints" / "weights.ckpt")
    with pytest.raises(ValueError, match=r"weights\.ckpt is not a training checkpoint \(no state_dict\)"):
        load_model(run / "checkpoints" / "weights.ckpt")


def test_a_checkpoint_missing_a_weight_is_refused(tmp_path, small_config):
    """A checkpoint of another model (here: one weight missing) does not load half its weights."""
    run = small_run(tmp_path, small_config)
    weights = save_checkpoint(run, "last.ckpt", seed=1)
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    missing = next(iter(weights))
    del saved["state_dict"][f"model.{missing}"]
    torch.save(saved, run / "checkpoints" / "last.ckpt")
    with pytest.raises(RuntimeError, match=rf"Missing key\(s\) in state_dict: \"{re.escape(missing)}\""):
        load_model(run, "last")


def test_a_model_class_that_cannot_be_imported_says_to_put_it_on_the_path(tmp_path, small_config):
    """A run of a layer of one's own, loaded where its module is not importable."""
    run = small_run(tmp_path, small_config)
    save_checkpoint(run, "last.ckpt", seed=1)
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.model.layer._target_ = "my_missing_layers.EMALayer"
    OmegaConf.save(cfg, config)
    hint = r"(?s)names my_missing_layers\.EMALayer, which cannot be imported here .*No module named .*on PYTHONPATH"
    with pytest.raises(ImportError, match=hint):
        load_model(run, "last")


def test_other_instantiation_failures_propagate_as_they_are(tmp_path, small_config):
    """Only a class that cannot be located gets the import hint; a bad value in the saved config
    fails with the constructor's own error."""
    import hydra

    run = small_run(tmp_path, small_config)
    save_checkpoint(run, "last.ckpt", seed=1)
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.model.layer.dt_min = -1.0
    OmegaConf.save(cfg, config)
    with pytest.raises(hydra.errors.InstantiationException, match="dt_min"):
        load_model(run, "last")


def test_the_import_hint_carries_the_underlying_import_error(tmp_path, small_config, monkeypatch):
    """A module that exists but fails to import (a missing dependency) is named with its cause."""
    (tmp_path / "broken_layers.py").write_text("import not_installed_pkg_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "run").mkdir()
    run = small_run(tmp_path / "run", small_config)
    save_checkpoint(run, "last.ckpt", seed=1)
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.model.layer._target_ = "broken_layers.Layer"
    OmegaConf.save(cfg, config)
    with pytest.raises(ImportError, match="not_installed_pkg_xyz"):
        load_model(run, "last")
