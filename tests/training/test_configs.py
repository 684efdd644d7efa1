"""Every experiment config composes, and its model and data module instantiate."""

import math

import hydra
import pytest
import torch
from config_helpers import CONFIGS, compose_config
from omegaconf import open_dict

import ssm
from ssm.training.run import build_model

EXPERIMENTS = sorted(
    str(p.relative_to(CONFIGS / "experiment").with_suffix("")) for p in (CONFIGS / "experiment").rglob("*.yaml")
)


def test_every_experiment_is_listed():
    assert {"lra", "lra/listops", "lra/text", "lra/retrieval", "lra/image", "lra/pathfinder", "lra/pathx",
            "synthetic/selective_copy", "synthetic/induction_heads", "chimera", "chimera/etth1", "spacetime",
            "spacetime/etth1", "spacetime/etth2", "spacetime/ettm1", "spacetime/ettm2", "spacetime/ecl",
            "spacetime/weather", "synthetic/arp"} <= set(EXPERIMENTS)


MODELS = {"s4d": "S4D", "dss": "DSS", "s4ptd": "S4PTD", "s5": "S5", "s5_ptd": "S5PTD", "mamba": "Mamba"}
# The S4D experiments are model-agnostic: any model=... can be put on them. The per-family
# directories (lra/s4ptd/, lra/s5/, lra/s5_ptd/) carry their own model's settings.
FORECASTING_EXPERIMENTS = [e for e in EXPERIMENTS if e.split("/")[0] in ("chimera", "spacetime")
                           or e == "synthetic/arp"]
S4D_EXPERIMENTS = [e for e in EXPERIMENTS if e.count("/") <= 1 and e not in FORECASTING_EXPERIMENTS
                   and e not in ("robustness", "tensors")]  # tensors needs a user's file: test_tensor_datamodule
FAMILY_EXPERIMENTS = [e for e in EXPERIMENTS if e.count("/") == 2]


FORECASTING_MODELS = {"chimera", "spacetime"}  # composed by the forecasting experiments below


def test_every_model_config_is_composed_by_a_test():
    """A new configs/model/*.yaml must join one of the lists above (and so the composition tests)."""
    configs = {p.stem for p in (CONFIGS / "model").glob("*.yaml")}
    assert configs == set(MODELS) | set(IMAGE_MODELS) | FORECASTING_MODELS


def test_every_family_has_every_task():
    tasks = {"listops", "text", "retrieval", "image", "pathfinder", "pathx"}
    for family in ("s4ptd", "s5", "s5_ptd"):
        assert {e.split("/")[-1] for e in FAMILY_EXPERIMENTS if e.split("/")[1] == family} == tasks


@pytest.mark.parametrize(
    "experiment, model",
    [(e, m) for e in S4D_EXPERIMENTS for m in MODELS] + [(e, None) for e in FAMILY_EXPERIMENTS],
)
def test_experiment_composes_and_builds_its_model(experiment, model):
    overrides = [f"experiment={experiment}"] + ([f"model={model}"] if model else [])
    cfg = compose_config(*overrides)
    expected = MODELS[model] if model else MODELS[experiment.split("/")[1]]
    assert cfg.model.layer._target_ == f"ssm.{expected}"
    datamodule = hydra.utils.instantiate(cfg.data)
    net = build_model(cfg, datamodule)
    last_linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last_linear.out_features == datamodule.n_classes
    layer_cls = hydra.utils.get_class(cfg.model.layer._target_)
    assert isinstance(net.backbone.blocks[0].layer, layer_cls)
    for key in ("optimizer", "scheduler", "task", "trainer", "callbacks", "logger"):
        assert key in cfg


IMAGE_MODELS = {"ss2d": "SS2D", "nss_mamba": "NSSMamba", "mamba2d": "Mamba2D"}


@pytest.mark.parametrize("experiment", ["lra/image", "lra/pathfinder", "lra/pathx"])
@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_image_experiments_build_2d_models(experiment, model):
    cfg = compose_config(f"experiment={experiment}", f"model={model}", "model.d_model=8", "model.layer.d_state=2",
                         "model.n_layers=2")
    datamodule = hydra.utils.instantiate(cfg.data)
    net = build_model(cfg, datamodule)
    layer_cls = getattr(ssm, IMAGE_MODELS[model])
    assert isinstance(net.stages[0][0].mixer, layer_cls)
    assert net.image_shape == datamodule.image_shape
    assert net.head.out_features == datamodule.n_classes
    assert net.stages[0][0].mixer.ssm.A_logs._optim["lr"] == cfg.model.layer.lr  # the experiment's SSM lr
    H, W = datamodule.image_shape
    x = torch.randn(2, H * W, 1) if datamodule.d_input else torch.randint(0, 256, (2, H * W))
    if H <= 32:
        assert net(x).shape == (2, datamodule.n_classes)


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_2d_models_on_sequence_data_fail_clearly(model):
    cfg = compose_config("experiment=lra/listops", f"model={model}")
    with pytest.raises(ValueError, match="needs images"):
        build_model(cfg, hydra.utils.instantiate(cfg.data))


def test_forecasting_experiments_compose_and_build(tmp_path):
    cfg = compose_config("experiment=chimera")
    datamodule = hydra.utils.instantiate(cfg.data)
    net = build_model(cfg, datamodule)
    assert isinstance(net, ssm.MultivariateForecaster) and isinstance(net.layers[0], ssm.Chimera)
    assert net(torch.randn(2, datamodule.lag, datamodule.n_variates)).shape == (2, datamodule.horizon, datamodule.n_targets)
    assert cfg.callbacks.checkpoint.monitor == "val/mse" and cfg.callbacks.checkpoint.mode == "min"
    ett = compose_config("experiment=chimera/etth1", f"data_root={tmp_path}")
    assert ett.data.dataset == "ETTh1" and ett.data.horizon == 96
    with pytest.raises((FileNotFoundError, hydra.errors.InstantiationException), match="ETTh1.csv"):
        hydra.utils.instantiate(ett.data)


def test_spacetime_experiments_carry_the_reference_settings(tmp_path):
    cfg = compose_config("experiment=spacetime")
    datamodule = hydra.utils.instantiate(cfg.data)
    net = build_model(cfg, datamodule)
    assert isinstance(net, ssm.SpaceTime) and datamodule.dataset == "co2" and net.aux_loss == "rmse"
    assert (net.lag, net.horizon, net.n_variates) == (104, 52, 1)
    assert cfg.task.aux_weights == {"lag": 1.0, "decoder_input": 1.0} and cfg.scheduler.interval == "epoch"
    assert cfg.callbacks.early_stopping.monitor == "val/rmse" == cfg.callbacks.checkpoint.monitor
    for name, dataset in [("etth1", "ETTh1"), ("etth2", "ETTh2"), ("ettm1", "ETTm1"), ("ettm2", "ETTm2"),
                          ("ecl", "ECL"), ("weather", "WTH")]:
        ett = compose_config(f"experiment=spacetime/{name}", f"data_root={tmp_path}")
        assert ett.data.dataset == dataset and (ett.data.lag, ett.data.horizon, ett.data.features) == (336, 720, "S")
        assert (ett.data.batch_size, ett.model.dropout, ett.model.d_state, ett.model.norm_order) == (50, 0.25, 64, 1)
        assert (ett.optimizer.lr, ett.optimizer.weight_decay, ett.trainer.max_epochs) == (1e-3, 1e-4, 500)
        assert (ett.scheduler.warmup_steps, ett.scheduler.total_steps, ett.callbacks.early_stopping.patience) == (10, 300, 20)
        assert ett.scheduler.warmup_prefix is False
        with pytest.raises((FileNotFoundError, hydra.errors.InstantiationException), match=f"{dataset}.csv"):
            hydra.utils.instantiate(ett.data)


def test_ar_study_composes_each_model():
    cfg = compose_config("experiment=synthetic/arp")
    assert list(cfg.study.orders) == [2, 4, 6] and set(cfg.study.models) == {"companion", "s4d", "companion_open"}
    datamodule = hydra.utils.instantiate(cfg.data)
    for name, model_cfg in cfg.study.models.items():
        with open_dict(cfg):
            cfg.model = model_cfg
        net = build_model(cfg, datamodule)
        x = torch.randn(2, datamodule.lag, 1)
        out = net(x)
        forecast = out[0] if isinstance(out, tuple) else out
        assert forecast.shape == (2, datamodule.horizon, 1), name


def test_classifier_on_forecasting_data_fails_clearly():
    cfg = compose_config("experiment=chimera", "model=s4d")
    with pytest.raises(ValueError, match="no classes"):
        build_model(cfg, hydra.utils.instantiate(cfg.data))


def test_listops_experiment_uses_the_paper_settings():
    cfg = compose_config("experiment=lra")
    assert cfg.model.n_layers == 8 and cfg.model.d_model == 128 and cfg.model.layer.d_state == 64
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.weight_decay == 0.05
    assert cfg.data.batch_size == 50 and cfg.trainer.max_epochs == 40
    assert cfg.model.layer.bidirectional and cfg.model.norm == "batch" and not cfg.model.prenorm
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.total_steps) == (1000, 80000)
    assert compose_config("experiment=lra/retrieval").scheduler.total_steps == 50000


@pytest.mark.parametrize("experiment, n_ssm", [("lra/image", 2), ("lra/listops", None),
                                                *[(f"lra/s4ptd/{task}", 1) for task in
                                                  ("listops", "text", "retrieval", "image", "pathfinder", "pathx")]])
def test_tied_ssm_copies_reach_the_layers(experiment, n_ssm):
    """S4's n_ssm (v3 S4D image: 2; S4-PTD: 1) reaches every S4D/S4-PTD layer of the model."""
    cfg = compose_config(f"experiment={experiment}", "model.n_layers=2")
    net = build_model(cfg, hydra.utils.instantiate(cfg.data))
    for block in net.backbone.blocks:
        assert block.layer.n_ssm == (n_ssm or cfg.model.d_model)
        assert block.layer.log_A_real.shape[0] == block.layer.n_ssm


@pytest.mark.parametrize("model", ["s4ptd", "s4d"])
def test_robustness_experiment_is_the_ptd_protocol(tmp_path, model):
    """experiments.md §8: RGB sCIFAR, 4 × 128 without residuals, post LayerNorm, Δ/A/B frozen,
    C at lr 0.004 with weight decay 0.05, the rest at 0.01, 100 epochs of cosine annealing,
    noise 0.1·U·cos(325.4 Δ l) at test."""
    from lra_fixtures import write_cifar

    from ssm.optim import param_groups

    write_cifar(tmp_path / "cifar-10-batches-py")
    cfg = compose_config("experiment=robustness", f"model={model}", f"data_root={tmp_path}", "data.n_val=4",
                         *(["model.layer.init=legs"] if model == "s4d" else []))
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.d_input == 3 and cfg.data.batch_size == 64
    net = build_model(cfg, datamodule)
    assert len(net.backbone.blocks) == 4 and net.encoder.in_features == 3
    for block in net.backbone.blocks:
        assert not block.residual and not block.prenorm and isinstance(block.norm, torch.nn.LayerNorm)
        assert {n for n, _ in block.layer.named_parameters()} == {"C", "D"} and not block.layer.bidirectional
    groups = param_groups(net, weight_decay=cfg.optimizer.weight_decay)
    C_ids = {id(b.layer.C) for b in net.backbone.blocks}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if ids & C_ids:
            assert ids == C_ids and (group.get("lr"), group["weight_decay"]) == (0.004, 0.05)
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs, cfg.scheduler.interval) == (0.01, 100, "epoch")
    assert (cfg.seed, cfg.model.d_model, cfg.model.dropout, cfg.model.pooling) == (2222, 128, 0.1, "mean")
    assert net.encoder.out_features == 128 and not net.backbone.blocks[0].prenorm
    for block in net.backbone.blocks:  # Δ is frozen, so its starting range is the final one
        dt = block.layer.log_dt.exp()
        assert 1e-3 - 1e-9 <= dt.min().item() and dt.max().item() <= 0.1 + 1e-9
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.total_steps) == (0, 100)
    assert dict(cfg.task.test_noise) == {"frequency": 325.4, "amplitude": 0.1, "every_epoch": True}


def test_default_scheduler_holds_its_floor_past_the_end_and_counts_after_the_warmup():
    cfg = compose_config("experiment=lra/text")
    assert cfg.scheduler.after_total == "hold" and cfg.scheduler.warmup_prefix is True
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    factor = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=3000).lr_lambdas[0]
    assert factor(3000) == factor(4500) == pytest.approx(0.0, abs=1e-12)
    warmup = cfg.scheduler.warmup_steps
    assert factor(warmup) == pytest.approx(1.0)


def test_image_data_module_refuses_a_non_boolean_grayscale(tmp_path):
    from ssm.training.data.lra import ImageDataModule

    for bad in ("false", 0):
        with pytest.raises(ValueError, match="grayscale"):
            ImageDataModule(tmp_path, grayscale=bad)


def test_s4ptd_text_trains_past_its_schedule_as_the_paper_config_does():
    """80 epochs on a 50k-step cosine that, as in the s4 code, rises again past its end."""
    cfg = compose_config("experiment=lra/s4ptd/text")
    assert cfg.trainer.max_epochs == 80 and cfg.scheduler.total_steps == 50000
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=cfg.scheduler.total_steps)
    factor = scheduler.lr_lambdas[0]
    assert factor(50000) == pytest.approx(0.0, abs=1e-12) and factor(95000) == pytest.approx(1.0)
    assert factor(80 * 1563) == pytest.approx(0.5 * (1 + math.cos(math.pi * (80 * 1563 - 5000) / 45000)))


def test_pathx_uses_the_small_dt_min():
    cfg = compose_config("experiment=lra/pathx")
    assert cfg.model.layer.dt_min == 1e-4


@pytest.mark.parametrize("logger", ["wandb", "csv", "none"])
def test_logger_choices_compose(logger):
    cfg = compose_config("experiment=lra", f"logger={logger}")
    if logger == "none":
        assert not cfg.logger
    else:
        assert cfg.logger._target_


@pytest.mark.parametrize("experiment, resolution", [("lra/pathfinder", 32), ("lra/pathx", 128)])
def test_pathfinder_experiments_pick_their_resolution(experiment, resolution):
    cfg = compose_config(f"experiment={experiment}")
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.resolution == resolution and datamodule.d_input == 1


def test_resolved_config_drops_hydra_node_and_resolves_interpolations(tmp_path):
    from ssm.training.run import resolved_config

    cfg = compose_config("experiment=lra", f"data_root={tmp_path}")
    resolved = resolved_config(cfg)
    assert "hydra" not in resolved
    assert resolved["data"]["data_root"] == str(tmp_path)
    assert resolved["callbacks"]["checkpoint"]["dirpath"] == "outputs/test/checkpoints"


def test_lra_entry_point_takes_the_new_families():
    cfg = compose_config("experiment=lra", "model=s5_ptd")
    assert cfg.model.layer._target_ == "ssm.S5PTD" and cfg.model.layer.d_state == 64


def test_mamba_model_is_a_prenorm_stack_of_mamba_blocks():
    cfg = compose_config("model=mamba")
    assert cfg.model.layer._target_ == "ssm.Mamba" and cfg.model.output == "none"
    assert cfg.model.prenorm and cfg.model.norm == "layer"
    assert (cfg.model.layer.d_state, cfg.model.layer.expand, cfg.model.layer.d_conv) == (16, 2, 4)
    lra = compose_config("experiment=lra", "model=mamba")
    assert lra.model.layer._target_ == "ssm.Mamba" and lra.model.output == "none"
    net = hydra.utils.instantiate(lra.model, n_tokens=20, d_output=10, n_layers=2)
    block = net.backbone.blocks[0]
    assert isinstance(block.output, torch.nn.Identity) and block.layer.bidirectional
    with torch.no_grad():
        assert net(torch.randint(0, 20, (2, 6))).shape == (2, 10)


def test_family_experiments_carry_their_paper_settings():
    s5 = compose_config("experiment=lra/s5/listops")
    assert (s5.model.layer.d_state, s5.model.layer.blocks, s5.model.output) == (16, 8, "half_glu2")
    assert s5.model.layer.opt_config == "BfastandCdecay" and s5.optimizer.lr == 0.003
    for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):  # S5's AdamW group
        for family in ("s5", "s5_ptd"):
            assert compose_config(f"experiment=lra/{family}/{task}").optimizer.decay_norms_and_biases is True
    assert compose_config("experiment=lra/listops").optimizer.decay_norms_and_biases is False
    ptd_image = compose_config("experiment=lra/s5_ptd/image")
    assert ptd_image.model.layer.d_state // ptd_image.model.layer.blocks == 128 and ptd_image.seed == 16418
    s4ptd = compose_config("experiment=lra/s4ptd/listops")
    assert s4ptd.model.layer.dt_max == 1.0 and s4ptd.model.layer.lr.dt == 4e-4
    assert compose_config("experiment=lra/s4ptd/pathx").model.layer.dt_min == 1e-4


@pytest.mark.parametrize("experiment", ["lra/image", "lra/listops"])
def test_constant_scheduler_warms_up_then_stays_flat(experiment):
    cfg = compose_config(f"experiment={experiment}", "scheduler=constant", "scheduler.warmup_steps=5")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=cfg.scheduler.total_steps)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:5] == pytest.approx([0.5 * s / 5 for s in range(5)])
    assert lrs[5:] == pytest.approx([0.5] * 35)


def test_spacetime_early_stopping_survives_a_run_that_stops_before_its_first_validation(tmp_path):
    """trainer.max_steps ending the first epoch early: no validation ran, so there is no
    val/rmse; the early stopping of experiment=spacetime must not fail the run for that."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("val/rmse", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]).sqrt())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cfg = compose_config("experiment=spacetime")
    stopping = hydra.utils.instantiate(cfg.callbacks.early_stopping)
    data = DataLoader(TensorDataset(torch.randn(40, 2), torch.randn(40, 1)), batch_size=4)
    trainer = L.Trainer(max_steps=3, callbacks=[stopping], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        accelerator="cpu")
    trainer.fit(Regressor(), data, data)
    assert trainer.global_step == 3
    trainer = L.Trainer(max_epochs=2, callbacks=[stopping], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        accelerator="cpu")
    trainer.fit(Regressor(), data, data)
    assert stopping.best_score is not None and torch.isfinite(stopping.best_score)  # it did watch val/rmse


@pytest.mark.parametrize("experiment", ["spacetime/etth1", "chimera", "spacetime", "synthetic/arp"])
def test_forecasting_data_configs_leave_split_ratios_to_the_data_set(experiment):
    """split_ratios is null by default in every forecasting data config (ett, synthetic, co2,
    ar): ETT keeps its 12/4/4-month split and the others Informer's 70/10/20."""
    cfg = compose_config(f"experiment={experiment}")
    assert cfg.data.split_ratios is None


def test_tensors_experiment_defaults():
    """experiment=tensors: mean pooling, a tenth of train held out, and no data path until the
    user gives one."""
    cfg = compose_config("experiment=tensors")
    assert cfg.data._target_ == "ssm.training.data.TensorDataModule"
    assert cfg.model.pooling == "mean" and cfg.data.val_fraction == 0.1 and cfg.data.path is None
