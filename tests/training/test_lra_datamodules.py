"""LRA Text, Retrieval and Image train end to end in-process on tiny official-format fixtures."""

import pytest
from config_helpers import compose_config
from lra_fixtures import write_aan, write_cifar, write_imdb

from ssm.training.run import run

TINY = ["model.n_layers=1", "model.d_model=8", "model.layer.d_state=4", "logger=none",
        "callbacks.progress=null", "trainer.max_epochs=1", "trainer.accelerator=cpu"]


@pytest.mark.parametrize(
    "experiment, write, extra",
    [
        ("lra/text", lambda root: write_imdb(root / "aclImdb"), ["data.l_max=64", "data.batch_size=2"]),
        ("lra/retrieval", lambda root: write_aan(root / "aan"), ["data.l_max=32", "data.batch_size=2"]),
        ("lra/image", lambda root: write_cifar(root / "cifar-10-batches-py"), ["data.n_val=4", "data.batch_size=4"]),
    ],
)
def test_lra_experiment_trains_and_tests_on_release_format_fixture(tmp_path, experiment, write, extra):
    write(tmp_path / "data")
    cfg = compose_config(f"experiment={experiment}", f"data_root={tmp_path / 'data'}", *TINY, *extra,
                         output_dir=str(tmp_path / "run"))
    metrics = run(cfg)
    assert {"train/loss_epoch", "val/acc", "test/acc"} <= set(metrics)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_robustness_experiment_trains_and_reports_the_noisy_test_accuracy(tmp_path):
    write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    cfg = compose_config("experiment=robustness", f"data_root={tmp_path / 'data'}", *TINY, "data.n_val=4",
                         "data.batch_size=4", output_dir=str(tmp_path / "run"))
    metrics = run(cfg)
    assert {"val/acc", "test/acc", "test/acc_noisy"} <= set(metrics)
    assert {"test_epoch/acc", "test_epoch/acc_noisy", "test_epoch/loss", "test_epoch/loss_noisy"} <= set(metrics)


@pytest.mark.parametrize("experiment, expected", [
    ("lra/text", "aclImdb"), ("lra/retrieval", "new_aan_pairs.train.tsv"), ("lra/image", "data_batch_1"),
])
def test_missing_release_names_the_expected_files(tmp_path, experiment, expected):
    cfg = compose_config(f"experiment={experiment}", f"data_root={tmp_path}", *TINY, output_dir=str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match=expected):
        run(cfg)


def test_pathfinder_experiment_generates_on_first_use_then_trains(tmp_path):
    cfg = compose_config("experiment=lra/pathfinder", f"data_root={tmp_path / 'data'}", *TINY,
                         "data.n_images=40", "data.workers=1", "data.batch_size=8",
                         output_dir=str(tmp_path / "run"))
    metrics = run(cfg)
    generated = tmp_path / "data" / "pathfinder32" / "curv_contour_length_14"
    assert len(list(generated.glob("imgs/*/sample_*.png"))) == 40
    assert (generated / "generation.json").is_file()
    assert {"val/acc", "test/acc"} <= set(metrics)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=1.5), "batch_size must be a positive integer"),
    (dict(batch_size=4, eval_batch_size=0), "eval_batch_size must be a positive integer"),
    (dict(batch_size=4, eval_batch_size=-1), "eval_batch_size must be a positive integer"),
    (dict(batch_size=4, num_workers=-1), "num_workers must be a non-negative integer"),
    (dict(n_val=0), "n_val must be a positive integer"),
    (dict(n_val=0.1), "n_val must be a positive integer"),
])
def test_data_module_settings_are_checked_up_front(tmp_path, kwargs, match):
    """eval_batch_size=0 was silently replaced by batch_size, a float batch size or n_val
    failed inside the loader or the split."""
    from ssm.training.data.lra import ImageDataModule

    with pytest.raises(ValueError, match=match):
        ImageDataModule(tmp_path, **kwargs)
