"""A trained model back from a ``train.py`` run folder, for inference or analysis."""

from __future__ import annotations

import pathlib
import re

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from torch import nn

from ssm.training.model_shapes import KEY as SHAPES_KEY

def load_model(run: str | pathlib.Path, checkpoint: str = "best", map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of a ``train.py`` run with its trained weights, in eval mode.

    Args:
        run: the run folder (``outputs/<date>/<time>``, or a multirun job folder), or a
            checkpoint file in its ``checkpoints/``.
        checkpoint: "best" (the best-by-validation checkpoint that the run tested), "last"
            (``last.ckpt``), or a file name in ``checkpoints/``; ignored when ``run`` is a file.
        map_location: where to load the weights.

    The model is built from the run's saved config (``.hydra/config.yaml``) and the data
    shapes the checkpoint records; a checkpoint written before they were recorded gets them
    from the run's data module (its data must then be where the run found it).
    """
    path = pathlib.Path(run).expanduser()
    ckpt = path if path.is_file() else _checkpoint_file(path, checkpoint)
    run_dir = ckpt.parent.parent
    config = run_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"load_model: no run config at {config}; pass a folder written by train.py "
                                "(it holds .hydra/ and checkpoints/)")
    cfg = OmegaConf.load(config)
    saved = torch.load(ckpt, map_location=map_location, weights_only=True)
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"load_model: {ckpt} is not a training checkpoint (no state_dict)")
    shapes = saved.get(SHAPES_KEY)
    if shapes is None:  # written before checkpoints recorded the shapes: ask the data
        from ssm.training.run import model_shapes

        shapes = model_shapes(cfg, hydra.utils.instantiate(cfg.data))
    shapes = {k: tuple(v) if k == "image_shape" else v for k, v in shapes.items()}
    try:
        model = hydra.utils.instantiate(cfg.model, **shapes)
    except InstantiationException as err:
        target = re.search(r"Error locating target '([^']+)'", str(err))
        if target is None:
            raise
        why = f" ({err.__cause__})" if err.__cause__ is not None else ""
        raise ImportError(f"load_model: the run's model config names {target.group(1)}, which cannot be imported "
                          f"here{why}; a layer or model of your own must be importable, e.g. its folder on "
                          "PYTHONPATH, as it was for the run") from err
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(weights, strict=True)
    return model.to(map_location).eval()


def _checkpoint_file(run_dir: pathlib.Path, checkpoint: str) -> pathlib.Path:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        raise FileNotFoundError(f"load_model: no checkpoints/ in {run_dir}; pass a run folder written by train.py")
    available = sorted(p.name for p in folder.glob("*.ckpt"))
    if checkpoint == "last":
        names = ["last.ckpt"] if "last.ckpt" in available else []
    elif checkpoint == "best":
        names = [n for n in available if n.startswith("best")]
        if len(names) > 1:  # several kept (save_top_k > 1): the one the run's last.ckpt calls best
            names = _recorded_best(folder, names) or names
    else:
        names = [checkpoint] if checkpoint in available else []
    if len(names) != 1:
        what = "several" if names else "no"
        raise FileNotFoundError(f"load_model: {what} {checkpoint!r} checkpoint in {folder} (it holds {available}); "
                                f"pass checkpoint='last' or one of those file names")
    return folder / names[0]


def _recorded_best(folder: pathlib.Path, names: list[str]) -> list[str]:
    """The best model path that ModelCheckpoint recorded in last.ckpt, if among ``names``."""
    last = folder / "last.ckpt"
    if not last.is_file():
        return []
    state = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
    for key, value in state.items():
        if "ModelCheckpoint" in str(key) and isinstance(value, dict):
            best = pathlib.Path(str(value.get("best_model_path", ""))).name
            if best in names:
                return [best]
    return []


__all__ = ["load_model"]
