"""Bad input and configuration stop with a message that says what to do: unknown experiment /
model / task names, a missing data folder, a model that does not fit the data, an invalid
option, a run length that trains nothing or never ends, an empty split, a NaN training loss."""

import hydra
import pytest
import torch
from config_helpers import compose_config
from hydra.errors import MissingConfigException
from train_runner import train

from ssm.training.callbacks import LastCheckpoint
from ssm.training.checks import require_finite_loss
from ssm.training.optim import build_optimizer
from ssm.training.run import build_model, check_run_length


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


@pytest.mark.parametrize("overrides, match", [
    (["trainer.max_epochs=0"], "would train nothing"),
    (["+trainer.max_steps=0"], "would train nothing"),
    (["trainer.max_epochs=-1"], "trains without end"),
    (["trainer.max_epochs=-1", "+trainer.max_steps=-1"], "trains without end"),
])
def test_a_run_that_trains_nothing_or_never_ends_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        check_run_length(compose_config("experiment=lra", *overrides))


@pytest.mark.parametrize("overrides", [
    [], ["trainer.max_epochs=-1", "+trainer.max_steps=100"], ["trainer.max_epochs=-1", "scheduler.total_steps=100"],
    ["trainer.max_epochs=-1", "scheduler=constant"],
])
def test_a_run_with_a_length_passes_the_check(overrides):
    check_run_length(compose_config("experiment=lra", *overrides))


def test_negative_weight_decay_is_refused():
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        build_optimizer(torch.nn.Linear(2, 2), weight_decay=-1.0)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_is_refused_before_training(tmp_path, split):
    sizes = {"n_train": 8, "n_val": 4, "n_test": 4, f"n_{split}": 0}
    cfg = compose_config("experiment=lra", f"data_root={tmp_path}", "data.min_length=10", "data.max_length=60",
                         *(f"data.{k}={v}" for k, v in sizes.items()))
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    with pytest.raises(ValueError, match=f"the {split} split is empty.*data.n_{split}"):
        getattr(datamodule, f"{split}_dataloader")()


def test_listops_longer_than_l_max_warns(tmp_path, caplog):
    cfg = compose_config("experiment=lra", f"data_root={tmp_path}", "data.n_train=8", "data.n_val=4",
                         "data.n_test=4", "data.min_length=10", "data.max_length=60", "data.l_max=8")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    with caplog.at_level("WARNING"):
        datamodule.setup("fit")
    assert "8 of 8 train expressions are longer than data.l_max=8" in caplog.text
    caplog.clear()
    datamodule = hydra.utils.instantiate(cfg.data, l_max=64)
    with caplog.at_level("WARNING"):
        datamodule.setup("fit")
    assert "longer than data.l_max" not in caplog.text


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
