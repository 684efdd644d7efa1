"""Bad input and configuration stop with a message that says what to do: unknown experiment /
model / task names, a missing data folder, a model that does not fit the data, an invalid
option, a NaN training loss."""

import hydra
import pytest
import torch
from config_helpers import compose_config
from hydra.errors import MissingConfigException
from train_runner import train

from ssm.training.callbacks import LastCheckpoint
from ssm.training.checks import require_finite_loss
from ssm.training.run import build_model


@pytest.mark.parametrize("override, group", [("experiment=lra/nope", "experiment"), ("model=s6", "model"),
                                             ("task=regression", "task")])
def test_unknown_names_list_the_available_ones(override, group):
    with pytest.raises(MissingConfigException, match=f"Available options in '{group}'"):
        compose_config(override)


@pytest.mark.parametrize("experiment, expected", [("lra/text", "aclImdb"), ("lra/image", "cifar-10-batches-py"),
                                                  ("lra/retrieval", "new_aan_pairs"), ("chimera/etth1", "ETTh1.csv")])
def test_missing_data_says_which_files_where_and_how_to_get_them(tmp_path, experiment, expected):
    cfg = compose_config(f"experiment={experiment}", f"data_root={tmp_path / 'nowhere'}")
    with pytest.raises((FileNotFoundError, hydra.errors.InstantiationException)) as info:
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
    message = str(info.value)
    assert expected in message and str(tmp_path / "nowhere") in message
    assert any(word in message.lower() for word in ("download", "github", "release", "from"))


@pytest.mark.parametrize("experiment, model, match", [
    ("lra/listops", "ss2d", "needs images"),
    ("spacetime", "s4d", "no classes"),
    ("lra/listops", "spacetime", "not a forecasting data set"),
])
def test_model_that_does_not_fit_the_data(experiment, model, match):
    cfg = compose_config(f"experiment={experiment}", f"model={model}", "data.n_train=8", "data.n_val=4",
                         "data.n_test=4") if experiment == "lra/listops" else compose_config(
        f"experiment={experiment}", f"model={model}")
    with pytest.raises(ValueError, match=match):
        build_model(cfg, hydra.utils.instantiate(cfg.data))


def test_invalid_option_names_the_choices():
    cfg = compose_config("experiment=lra", "model.layer.init=foo")
    with pytest.raises(hydra.errors.InstantiationException, match=r"init must be one of \('lin', 'inv', 'legs', 'real'\)"):
        build_model(cfg, hydra.utils.instantiate(cfg.data))
    with pytest.raises(ValueError, match="every_n_steps"):
        LastCheckpoint("x", every_n_steps=0)


def test_non_finite_loss_stops_with_advice():
    require_finite_loss(torch.tensor(1.5), "train", 12)  # finite: nothing
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match=r"train loss is (nan|inf) at step 12.*optimizer.lr.*gradient_clip_val"):
            require_finite_loss(torch.tensor(bad), "train", 12)


@pytest.mark.slow
def test_a_diverging_run_stops_at_the_first_nan_loss(tmp_path):
    result = train(tmp_path, "nan", "optimizer.lr=1e30", "model.layer.lr=1e30", "trainer.max_epochs=2", "logger=none",
                   check=False)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "FloatingPointError" in log and "Try a smaller optimizer.lr" in log and "at step" in log
