"""ssm.training.load_model: a trained model back from a train.py run folder."""

import hydra
import pytest
import torch
from omegaconf import OmegaConf
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
