"""Every experiment config composes, and its model and data module instantiate."""


import hydra
import pytest
import torch
from config_helpers import CONFIGS, compose_config

from ssm.training.run import build_model

EXPERIMENTS = sorted(
    str(p.relative_to(CONFIGS / "experiment").with_suffix("")) for p in (CONFIGS / "experiment").rglob("*.yaml")
)


def test_every_experiment_is_listed():
    assert {"lra", "lra/listops", "lra/text", "lra/retrieval", "lra/image", "lra/pathfinder", "lra/pathx"} <= set(
        EXPERIMENTS
    )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("model", ["s4d", "dss"])
def test_experiment_composes_and_builds_its_model(experiment, model):
    cfg = compose_config(f"experiment={experiment}", f"model={model}")
    datamodule = hydra.utils.instantiate(cfg.data)
    net = build_model(cfg, datamodule)
    last_linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last_linear.out_features == datamodule.n_classes
    layer_cls = hydra.utils.get_class(cfg.model.layer._target_)
    assert isinstance(net.backbone.blocks[0].layer, layer_cls)
    for key in ("optimizer", "scheduler", "task", "trainer", "callbacks", "logger"):
        assert key in cfg


def test_listops_experiment_uses_the_paper_settings():
    cfg = compose_config("experiment=lra")
    assert cfg.model.n_layers == 8 and cfg.model.d_model == 128 and cfg.model.layer.d_state == 64
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.weight_decay == 0.05
    assert cfg.data.batch_size == 50 and cfg.trainer.max_epochs == 40
    assert cfg.model.layer.bidirectional and cfg.model.norm == "batch" and not cfg.model.prenorm


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
