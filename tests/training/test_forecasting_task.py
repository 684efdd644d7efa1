"""ForecastingTask: the per-window transforms are exact, metrics match hand-computed values,
aux losses returned by the model are added and logged, a short fit runs end to end (also
through train.py's config and with an offline W&B logger)."""

import importlib.util

import lightning as L
import pytest
import torch
from config_helpers import compose_config
from torch import nn

from ssm.training.data import ForecastingDataModule
from ssm.training.forecasting import ForecastingTask
from ssm.training.optim import build_optimizer
from ssm.training.run import run


class Zero(nn.Module):
    def __init__(self, horizon, n_out):
        super().__init__()
        self.horizon, self.n_out = horizon, n_out
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.w * torch.zeros(x.shape[0], self.horizon, self.n_out)


def _task(model, **kw):
    return ForecastingTask(model, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), **kw)


def test_mean_and_last_transforms_are_exact():
    x = torch.randn(2, 10, 3)
    assert torch.equal(_task(Zero(4, 3), data_transform="mean")(x), x.mean(1, keepdim=True).expand(2, 4, 3))
    assert torch.equal(_task(Zero(4, 3), data_transform="last")(x), x[:, -1:].expand(2, 4, 3))
    # fewer outputs than inputs: the level of the last (target) series
    assert torch.equal(_task(Zero(4, 1), data_transform="last")(x), x[:, -1:, 2:].expand(2, 4, 1))
    assert torch.equal(_task(Zero(4, 3), data_transform="none")(x), torch.zeros(2, 4, 3))


def test_metrics_match_hand_computed_values():
    dm = ForecastingDataModule(n_steps=400, n_variates=2, lag=12, horizon=3, batch_size=16)
    task = _task(Zero(3, 2), data_transform="mean")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    (metrics,) = trainer.test(task, datamodule=dm, verbose=False)
    xs, ys = zip(*[dm.splits[2][k] for k in range(len(dm.splits[2]))])
    x, y = torch.stack(xs), torch.stack(ys)
    err = x.mean(1, keepdim=True) - y
    assert metrics["test/mse"] == pytest.approx(float(err.square().mean()), rel=1e-5)
    assert metrics["test/mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert metrics["test/rmse"] == pytest.approx(float(err.square().mean().sqrt()), rel=1e-5)


class ZeroWithAux(Zero):
    """Zero forecast and an aux loss (w - 1)^2, as a tuple or as a dict."""

    def __init__(self, horizon, n_out, as_dict=False):
        super().__init__(horizon, n_out)
        self.as_dict = as_dict

    def forward(self, x):
        aux = {"lag": (self.w[0] - 1) ** 2}
        forecast = super().forward(x)
        return {"forecast": forecast, "aux": aux} if self.as_dict else (forecast, aux)


@pytest.mark.parametrize("as_dict", [False, True])
def test_aux_losses_are_weighted_added_logged_and_trained(as_dict):
    dm = ForecastingDataModule(n_steps=400, n_variates=2, lag=12, horizon=3, batch_size=16)
    task = _task(ZeroWithAux(3, 2, as_dict), aux_weights={"lag": 2.0})
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, limit_val_batches=1, num_sanity_val_steps=0)
    (metrics,) = trainer.test(task, datamodule=dm, verbose=False)
    assert metrics["test/aux/lag"] == pytest.approx(1.0)
    assert metrics["test/loss"] == pytest.approx(metrics["test/mse"] + 2.0, rel=1e-5)
    x = torch.randn(2, 12, 2)
    assert torch.equal(task(x), x.mean(1, keepdim=True).expand(2, 3, 2))  # forward gives the forecast alone
    trainer.fit(task, datamodule=dm)
    assert 0 < task.model.w.item() < 1  # the aux loss (w - 1)^2 pulled w up


@pytest.mark.parametrize("loss", ["mse", "mae", "rmse"])
def test_the_loss_option_is_the_written_out_error_of_the_forecast(loss):
    """loss="mse", "mae" or "rmse": mean((pred - y)²), mean|pred - y| or its square root, over
    every entry of the batch (with the zero forecast, of y itself)."""
    torch.manual_seed(0)
    x, y = torch.randn(5, 12, 2), torch.randn(5, 3, 2)
    y64 = y.double()
    expected = {"mse": y64.square().mean(), "mae": y64.abs().mean(), "rmse": y64.square().mean().sqrt()}[loss]
    value = _task(Zero(3, 2), loss=loss, data_transform="none")._step((x, y), "val")
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_an_aux_loss_without_a_weight_counts_once():
    """aux_weights gives a weight per aux loss; one it does not name is added with weight 1."""
    x, y = torch.randn(4, 12, 2), torch.randn(4, 3, 2)
    mse = y.double().square().mean().item()
    for weights, expected in ((None, mse + 1.0), ({"other": 5.0}, mse + 1.0), ({"lag": 0.5}, mse + 0.5)):
        task = _task(ZeroWithAux(3, 2), data_transform="none", aux_weights=weights)
        assert task._step((x, y), "val").item() == pytest.approx(expected, rel=1e-6)


def test_bad_model_outputs_fail_clearly():
    x, y = torch.randn(2, 12, 1), torch.randn(2, 3, 1)
    zero = torch.zeros(2, 3, 1)
    cases = [((zero, zero, zero), TypeError, "must return"), ((zero, [1.0]), TypeError, "mapping"),
             ((zero, {"lag": zero}), ValueError, "aux loss 'lag' must be a scalar")]
    for output, error, match in cases:
        task = _task(Lambda(lambda _, out=output: out))
        with pytest.raises(error, match=match):
            task.training_step((x, y), 0)
    with pytest.raises(ValueError, match=r"forecast \(2, 4, 1\), the targets are \(2, 3, 1\)"):
        _task(Zero(4, 1)).training_step((x, y), 0)


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_validation_with_offline_wandb_logger(tmp_path):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    dm = ForecastingDataModule(n_steps=300, n_variates=2, lag=12, horizon=3, batch_size=16)
    logger = WandbLogger(project="test", save_dir=str(tmp_path), mode="offline")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0)
    try:
        trainer.fit(_task(Zero(3, 2)), datamodule=dm)
    finally:
        wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    if importlib.util.find_spec("matplotlib") is not None:  # the forecast plot is logged
        assert list(run_dir.glob("files/media/images/val/forecast*"))


def test_bad_options():
    with pytest.raises(ValueError, match="loss"):
        _task(Zero(1, 1), loss="huber")
    with pytest.raises(ValueError, match="data_transform"):
        _task(Zero(1, 1), data_transform="median")


def test_linear_forecaster_learns_on_synthetic_data():
    torch.manual_seed(0)
    dm = ForecastingDataModule(n_steps=1200, n_variates=3, lag=48, horizon=6, batch_size=32)

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(48, 6)

        def forward(self, x):
            return self.proj(x.transpose(1, 2)).transpose(1, 2)

    task = ForecastingTask(Linear(), optimizer=lambda m: build_optimizer(m, name="adamw", lr=1e-2, weight_decay=0.0))
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    baseline = trainer.test(_task(Zero(6, 3)), datamodule=dm, verbose=False)[0]["test/mse"]
    trainer.fit(task, datamodule=dm)
    trained = trainer.test(task, datamodule=dm, verbose=False)[0]["test/mse"]
    assert trained < 0.8 * baseline


def test_chimera_experiment_runs_end_to_end(tmp_path):
    cfg = compose_config(
        "experiment=chimera", "logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.accelerator=cpu",
        "data.n_steps=600", "data.lag=32", "data.horizon=8", "model.d_model=8", "model.layer.d_state=2",
        "model.layer.period=4", f"hydra.run.dir={tmp_path}", output_dir=str(tmp_path),
    )
    metrics = run(cfg)
    assert {"val/mse", "test/mse", "test/mae", "test/rmse"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
