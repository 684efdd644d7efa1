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
from ssm.training.config_checks import check_optimizer, check_run_length
from ssm.training.run import _checkpoint, build_model, check_checkpoint_matches


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


@pytest.mark.parametrize("experiment", ["lra/text", "lra/image", "lra/retrieval", "chimera/etth1"])
def test_missing_downloads_stop_the_run_before_the_logger_starts(tmp_path, monkeypatch, experiment):
    """The data check comes first: no W&B run is created (and marked failed) and no trainer
    traceback precedes the message. Missing files found by the data module's check and by its
    constructor (the forecasting CSVs, through Hydra's instantiation) raise the same error."""
    from ssm.training import loggers, run
    from ssm.training.config_checks import MissingDataError

    started = []
    monkeypatch.setattr(loggers, "wandb_logger", lambda *a, **k: started.append(1))
    cfg = compose_config(f"experiment={experiment}", f"data_root={tmp_path / 'nowhere'}")
    with pytest.raises(MissingDataError, match="nowhere"):
        run.fit(cfg)
    assert not started


def test_a_missing_file_of_the_code_itself_keeps_its_traceback(tmp_path):
    """Only FileNotFoundErrors raised by the package's own data code become MissingDataError;
    one from elsewhere (a bug, another library) propagates as it is."""
    from ssm.training.config_checks import MissingDataError, missing_data_stops_the_run

    with pytest.raises(FileNotFoundError) as info, missing_data_stops_the_run():
        (tmp_path / "absent.txt").read_text()  # raised in pathlib, outside the package
    assert not isinstance(info.value, MissingDataError)


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


@pytest.mark.parametrize("attributes", [{}, {"n_tokens": 5, "d_input": 3}], ids=["neither", "both"])
def test_a_data_module_must_say_whether_its_inputs_are_tokens_or_features(attributes):
    """A user's own data module with n_classes but without (or with both) n_tokens / d_input."""
    cfg = compose_config("experiment=lra", "data.n_train=8", "data.n_val=4", "data.n_test=4")
    datamodule = type("OwnData", (), {"n_classes": 3, **attributes})()
    with pytest.raises(ValueError, match=r"data OwnData must give exactly one of n_tokens .* and d_input"):
        build_model(cfg, datamodule)


def test_invalid_option_names_the_choices():
    cfg = compose_config("experiment=lra", "model.layer.init=foo")
    with pytest.raises(hydra.errors.InstantiationException, match=r"init must be one of \('lin', 'inv', 'legs', 'real'\)"):
        build_model(cfg, hydra.utils.instantiate(cfg.data))
    with pytest.raises(ValueError, match="every_n_steps"):
        LastCheckpoint("x", every_n_steps=0)


@pytest.mark.parametrize("overrides, match", [
    (["trainer.max_epochs=0"], "would train nothing"),
    (["trainer.max_steps=0"], "would train nothing"),
    (["trainer.max_epochs=-1", "scheduler.total_steps=null"], "trains without end"),
    (["trainer.max_epochs=-1", "trainer.max_steps=-1", "scheduler.total_steps=null"], "trains without end"),
    (["trainer.max_epochs=-1", "trainer.max_steps=null", "scheduler.total_steps=null"], "trains without end"),
    (["experiment=lra/text", "trainer.max_epochs=-1"], "trains without end"),  # a schedule derived from the run
])
def test_a_run_that_trains_nothing_or_never_ends_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        check_run_length(compose_config("experiment=lra", *overrides))  # a later experiment= wins


@pytest.mark.parametrize("overrides", [
    [], ["trainer.max_epochs=-1", "trainer.max_steps=100"], ["trainer.max_epochs=-1", "scheduler.total_steps=100"],
    ["trainer.max_epochs=-1", "scheduler=constant"],
])
def test_a_run_with_a_length_passes_the_check(overrides):
    check_run_length(compose_config("experiment=lra", *overrides))


def test_negative_weight_decay_is_refused():
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0"):
        build_optimizer(torch.nn.Linear(2, 2), weight_decay=-1.0)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_zero_split_size_is_refused_before_any_data_are_generated(tmp_path, split):
    sizes = {"n_train": 8, "n_val": 4, "n_test": 4, f"n_{split}": 0}
    for experiment in ("lra", "synthetic/selective_copy"):
        cfg = compose_config(f"experiment={experiment}", f"data_root={tmp_path}",
                             *(f"data.{k}={v}" for k, v in sizes.items()))
        with pytest.raises(hydra.errors.InstantiationException, match=f"n_{split} must be a positive integer"):
            hydra.utils.instantiate(cfg.data)
    assert not list(tmp_path.rglob("*.tsv"))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_is_refused_before_training(split):
    from ssm.training.data.base import ClassificationDataModule

    datamodule = ClassificationDataModule(batch_size=2)
    datamodule.train_set, datamodule.val_set, datamodule.test_set = ([(0, 0)] for _ in range(3))
    setattr(datamodule, f"{split}_set", [])
    with pytest.raises(ValueError, match=f"the {split} split is empty"):
        getattr(datamodule, f"{split}_dataloader")()


@pytest.mark.parametrize("override, match", [("optimizer.lr=0", "optimizer lr must be a number > 0, got 0"),
                                             ("optimizer.lr=fast", "optimizer lr must be a number > 0, got 'fast'"),
                                             ("optimizer.weight_decay=-1", "weight_decay must be a number >= 0"),
                                             ("optimizer.decay_norms_and_biases=yes",
                                              "decay_norms_and_biases must be true or false"),
                                             ("optimizer.betas=[1.5,0.9]", r"betas must be two numbers in \[0, 1\)"),
                                             ("optimizer.betas=[0.9,1.0]", r"betas must be two numbers in \[0, 1\)"),
                                             ("optimizer.betas=[0.9]", r"betas must be two numbers"),
                                             ("optimizer.name=sgd", "sgd takes no betas: drop them with ~optimizer.betas")])
def test_bad_optimizer_values_are_refused_before_the_run_starts(override, match):
    with pytest.raises(ValueError, match=match):
        check_optimizer(compose_config("experiment=lra", override))


def test_a_ckpt_path_that_is_not_a_checkpoint_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; pass the checkpoint file in it"):
        _checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _checkpoint(str(tmp_path / "nope.ckpt"))
    junk = tmp_path / "junk.ckpt"
    junk.write_text("junk\n")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        _checkpoint(str(junk))
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": torch.nn.Linear(3, 2).state_dict()}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        _checkpoint(str(truncated))
    path, checkpoint = _checkpoint(str(good))
    assert path == str(good) and set(checkpoint["state_dict"]) == {"weight", "bias"}


def test_a_checkpoint_of_another_model_lists_the_differences(tmp_path):
    saved = {"state_dict": torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)).state_dict()}
    check_checkpoint_matches(saved, torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)), "x")
    with pytest.raises(ValueError, match=r"does not fit.*1.weight: \(2, 2\) in the checkpoint, \(4, 2\) here"):
        check_checkpoint_matches(saved, torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 4)), "x")
    with pytest.raises(ValueError, match=r"2 weights missing \(2.bias, 2.weight\)"):
        check_checkpoint_matches(saved, torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2),
                                                            torch.nn.Linear(2, 2)), "x")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        check_checkpoint_matches({"weights": 1}, torch.nn.Linear(3, 2), "x")


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


@pytest.mark.parametrize("overrides, match", [
    (["test=no"], "test must be true or false, got 'no'"),
    (["fit_batch_to_memory=maybe"], "fit_batch_to_memory must be true or false"),
    (["compile=fast"], "compile must be true, false or a torch.compile backend .*inductor.*got 'fast'"),
    (["model.layer.bidirectional=no"], "model.layer.bidirectional must be true or false, got 'no'"),
    (["model.prenorm=yes"], "model.prenorm must be true or false"),
    (["scheduler.warmup_prefix=1"], "scheduler.warmup_prefix must be true or false"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer >= -1"),
    (["trainer.max_epochs=true"], "trainer.max_epochs must be an integer >= -1 .*got True"),
    (["trainer.max_steps=-7"], "trainer.max_steps must be an integer >= -1"),
    (["trainer.accumulate_grad_batches=0"], "accumulate_grad_batches must be an integer >= 1"),
    (["trainer.gradient_clip_val=-1"], "gradient_clip_val must be a number >= 0"),
    (["trainer.gradient_clip_val=true"], "gradient_clip_val must be a number >= 0 .*got True"),
    (["trainer.limit_train_batches=0"], "limit_train_batches=0: the run would train nothing"),
    (["scheduler.warmup_steps=-5"], "scheduler: warmup_steps must be an integer >= 0, got -5"),
    (["scheduler.total_steps=0"], "scheduler: total_steps must be an integer >= 1, or null"),
    (["scheduler.total_steps=-10"], "scheduler: total_steps must be an integer >= 1"),
    (["scheduler.after_total=foo"], r"scheduler: after_total must be one of \('hold', 'cosine'\)"),
    (["scheduler=constant", "scheduler.min_factor=-3"], r"scheduler: min_factor must be a number in \[0, 1\]"),
])
def test_bad_values_are_refused_by_key_before_the_run_starts(overrides, match):
    from ssm.training.config_checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=match):
        check_config(compose_config("experiment=lra", *overrides))


@pytest.mark.parametrize("experiment", ["lra", "lra/image", "spacetime", "chimera", "synthetic/selective_copy",
                                        "robustness", "lra/s5/listops"])
def test_every_experiment_passes_the_config_checks(experiment):
    from ssm.training.config_checks import check_config

    check_config(compose_config(f"experiment={experiment}"))


def test_a_task_that_does_not_fit_the_data_is_refused():
    from ssm.training.config_checks import ConfigError
    from ssm.training.run import check_task_fits_data

    cfg = compose_config("experiment=lra", "task=forecasting", "data.n_train=8", "data.n_val=4", "data.n_test=4")
    with pytest.raises(ConfigError, match="task ForecastingTask does not fit data ListOpsDataModule, a classification"):
        check_task_fits_data(cfg, hydra.utils.instantiate(cfg.data))
    cfg = compose_config("experiment=spacetime", "task=classification")
    with pytest.raises(ConfigError, match="use task=forecasting"):
        check_task_fits_data(cfg, hydra.utils.instantiate(cfg.data))


def test_train_py_prints_a_config_error_alone_and_exits_2(tmp_path):
    from train_runner import train

    result = train(tmp_path, "run", "experiment=lra", "logger=none", "test=no", check=False, tiny=False, timeout=120)
    assert result.returncode == 2
    assert "Error in the config: test must be true or false, got 'no'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_train_py_prints_missing_data_alone_and_exits_1(tmp_path):
    from train_runner import train

    result = train(tmp_path, "run", "experiment=lra/text", "logger=none", f"data_root={tmp_path / 'nowhere'}",
                   check=False, tiny=False, timeout=120)
    assert result.returncode == 1
    assert "Missing data: IMDB reviews (aclImdb) not found" in result.stderr
    assert str(tmp_path / "nowhere") in result.stderr and "Download" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("override", ["+sweep=s4d_listops", "+sweep=s4ptd_dt"])  # sweep= alone: Hydra refuses it
def test_a_wandb_sweep_file_chosen_as_a_config_group_is_refused(override):
    from ssm.training.config_checks import ConfigError, check_config

    with pytest.raises(ConfigError, match="W&B sweep definitions.*wandb sweep configs/sweep/<name>.yaml"):
        check_config(compose_config("experiment=lra", override))


def test_a_monitored_metric_that_validation_does_not_log_stops_the_run_before_training(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset

    from ssm.training.callbacks import MonitoredMetricsExist
    from ssm.training.config_checks import ConfigError

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.net(batch[0]).square().mean()

        def validation_step(self, batch, _):
            self.log("val/loss", self.net(batch[0]).square().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)

    def fit(*callbacks):
        trainer = L.Trainer(max_epochs=1, callbacks=[*callbacks, MonitoredMetricsExist()], logger=False,
                            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                            default_root_dir=tmp_path)
        trainer.fit(Regressor(), data, data)
        return trainer

    for wrong in (ModelCheckpoint(dirpath=tmp_path, monitor="val/acc"), EarlyStopping(monitor="val/rmse")):
        with pytest.raises(ConfigError, match=rf"monitors '{wrong.monitor}', which validation does not log; it logs "
                                              r"\['val/loss'\]"):
            fit(wrong)
    assert fit(ModelCheckpoint(dirpath=tmp_path, monitor="val/loss")).global_step == 2


def test_a_bad_forecasting_loss_is_blamed_on_task_loss():
    """SpaceTime's aux_loss interpolates task.loss; the model used to take the blame."""
    from ssm.training.config_checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"task.loss must be one of \('mse', 'mae', 'rmse'\), got 'foo'"):
        check_config(compose_config("experiment=spacetime", "task.loss=foo"))
    check_config(compose_config("experiment=spacetime", "task.loss=mae"))


@pytest.mark.parametrize("overrides, match", [
    (["model=s5", "model.layer.dt_min=-1"], r"^model: S5: need 0 < dt_min <= dt_max"),
    (["+model.layer.foo=1"], r"^model: .*unexpected keyword argument 'foo' \(a key its target does not take; "
                             r"drop it with '~model.layer.foo'\)"),
    (["data.n_train=-3"], r"^data: .*n_train must be a positive integer"),
    (["model=mamba", "task.test_noise.frequency=spike"],
     r"^task.test_noise.frequency='spike' needs an S4D, S4PTD, S5 or S5PTD layer"),
])
def test_a_value_a_constructor_refuses_is_a_config_error_naming_its_node(tmp_path, monkeypatch, overrides, match):
    """train.py prints these as one line and exits 2, like the checks of config_checks; before,
    Hydra's wrapped traceback named only the node, and a bad test_noise failed after training."""
    from ssm.training import loggers, run
    from ssm.training.config_checks import ConfigError

    started = []
    monkeypatch.setattr(loggers, "wandb_logger", lambda *a, **k: started.append(1))
    cfg = compose_config("experiment=lra", f"data_root={tmp_path}", "data.n_train=8", "data.n_val=4",
                         "data.n_test=4", *overrides)
    with pytest.raises(ConfigError, match=match):
        run.fit(cfg)
    assert not started


def test_test_noise_the_model_cannot_take_is_refused_when_the_task_is_made():
    from ssm.training.task import SequenceClassificationTask

    def make(model, frequency):
        return SequenceClassificationTask(model, 2, optimizer=lambda m: None, test_noise={"frequency": frequency})

    with pytest.raises(ValueError, match="needs a model with an SSM layer noise can be added to"):
        make(torch.nn.Linear(2, 2), 1.0)
    import ssm

    make(ssm.Mamba(4), 1.0)  # Mamba takes Fourier-mode noise at a given frequency
    with pytest.raises(ValueError, match="'spike' needs an S4D, S4PTD, S5 or S5PTD layer"):
        make(ssm.Mamba(4), "spike")
    make(ssm.S4D(4, 4), "spike")


def test_errors_of_ones_own_code_keep_their_traceback(tmp_path, monkeypatch):
    """Only this package's argument checks, and keys the config really holds, become one-line
    config errors: a ValueError raised in a user's own layer, or a keyword its code (not the
    config) gets wrong, propagates whole."""
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf

    from ssm.training.config_checks import ConfigError, instantiate_checked

    (tmp_path / "own_layers.py").write_text(
        "import torch\n"
        "class Refuses:\n"
        "    def __init__(self, width):\n"
        "        raise ValueError('my own check failed')\n"
        "class Typo:\n"
        "    def __init__(self, width):\n"
        "        torch.nn.Linear(width, width, biass=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for target, match in (("own_layers.Refuses", "my own check failed"), ("own_layers.Typo", "biass")):
        cfg = OmegaConf.create({"model": {"_target_": target, "width": 3}})
        with pytest.raises(InstantiationException, match=match) as info:
            instantiate_checked(cfg, "model")
        assert not isinstance(info.value, ConfigError)


def test_an_optimizer_key_the_torch_optimizer_does_not_take_is_a_config_error():
    """build_optimizer hands its extra keys to the torch optimizer, which is only built once
    training starts: a stray key used to fail there, after the logger and trainer."""
    from ssm.training.config_checks import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"^optimizer.foo: AdamW takes no 'foo' .*drop it with '~optimizer.foo'"):
        check_config(compose_config("experiment=lra", "+optimizer.foo=1"))
    with pytest.raises(ConfigError, match=r"^optimizer.amsgrad: SGD takes no 'amsgrad'"):
        check_config(compose_config("experiment=lra", "optimizer.name=sgd", "~optimizer.betas", "+optimizer.amsgrad=true"))
    check_config(compose_config("experiment=lra", "+optimizer.amsgrad=true"))  # AdamW takes it
