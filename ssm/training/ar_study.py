"""SpaceTime's AR(p) claim in one command (``python train.py experiment=synthetic/arp``).

For each order p, simulate a stationary AR(p) process, fit each configured one-layer model
to forecast ``horizon`` steps from a ``lag`` window, and print a table of the test MSE
against that of the best forecast (the true recursion run on the same test windows) and of
the AR coefficients of the closed-loop companion layer, det(zI - (A + b kᵀ)) = z^d - Σ α_j
z^{d-j}, next to the true ones.
"""

from __future__ import annotations

import copy
import logging
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from ssm.data.autoregressive import ar_forecast
from ssm.training.run import fit

log = logging.getLogger(__name__)


def closed_loop_coefficients(model) -> np.ndarray | None:
    """The AR coefficients of the model's closed-loop layer (first channel), or None."""
    decoder = getattr(model, "decoder", None)
    if decoder is None or not hasattr(decoder, "characteristic_coefficients"):
        return None
    return decoder.characteristic_coefficients()[0].detach().double().cpu().numpy()


def ar_recovery(
    cfg: DictConfig, orders: Sequence[int], models: Mapping[str, DictConfig], out_dir: str | None = None,
) -> dict[str, float]:
    """Fit every model in ``models`` (model configs, composed into ``cfg`` in place of
    ``cfg.model``) on AR(p) data for each p in ``orders`` (``cfg.data.ar_order``).

    Returns ``{"p{p}/{name}/test_mse": ..., "p{p}/{name}/mse_ratio": ..., "p{p}/{name}/coef_error": ...}``
    (coef_error: the largest |α_j - φ_j| of the closed-loop coefficients, NaN for models
    without a closed loop); prints the table and writes it to ``out_dir/ar_recovery.md``.
    """
    if not orders or not models:
        raise ValueError("ar_recovery: needs at least one AR order and one model")
    # instantiate() resolved ``models``; the same nodes of cfg keep ${data.ar_order} unresolved
    raw_models = cfg.study.get("models") if cfg.get("study") else None
    rows, results = [], {}
    for p in orders:
        for name, model_cfg in models.items():
            sub = copy.deepcopy(cfg)
            with open_dict(sub):
                sub.study = None
                sub.data.ar_order = int(p)
                # a fresh node, so ${data.ar_order} in it resolves against this fit's config
                raw = raw_models[name] if raw_models is not None and name in raw_models else model_cfg
                sub.model = OmegaConf.create(OmegaConf.to_container(raw, resolve=False))
                if sub.get("logger") and "name" in sub.logger:
                    sub.logger.name = f"arp-p{p}-{name}"
                for spec in (sub.get("callbacks") or {}).values():  # each fit its own checkpoints
                    if spec is not None and spec.get("dirpath"):
                        spec.dirpath = str(pathlib.Path(spec.dirpath) / f"p{p}-{name}")
            log.info("AR(%d): fitting %s", p, name)
            metrics, task, datamodule = fit(sub)
            phi = np.asarray(datamodule.ar_coefficients)
            optimal = oracle_mse(phi, datamodule)
            mse = metrics["test/mse"]
            alpha = closed_loop_coefficients(task.model)
            error = float("nan") if alpha is None else coefficient_error(alpha, phi)
            rows.append((p, name, mse, mse / optimal, phi, alpha, error))
            results.update({f"p{p}/{name}/test_mse": mse, f"p{p}/{name}/mse_ratio": mse / optimal,
                            f"p{p}/{name}/coef_error": error})
    table = format_table(rows)
    print(table)
    if out_dir:
        path = pathlib.Path(out_dir) / "ar_recovery.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table + "\n")
        log.info("AR(p) table written to %s", path)
    return results


def coefficient_error(alpha: np.ndarray, phi: np.ndarray) -> float:
    """max_j |α_j - φ_j|, the shorter vector padded with zeros (an AR(p) is an AR(d > p) with
    zero trailing coefficients)."""
    n = max(len(alpha), len(phi))
    return float(np.abs(np.pad(alpha, (0, n - len(alpha))) - np.pad(phi, (0, n - len(phi)))).max())


def oracle_mse(phi: np.ndarray, datamodule) -> float:
    """Test MSE of the true AR forecast, on the data module's standardized scale."""
    mean, std = float(datamodule.mean[0]), float(datamodule.std[0])
    total, count = 0.0, 0
    for x, y in datamodule.test_dataloader():
        raw = x[..., 0].double().numpy() * std + mean
        forecast = (ar_forecast(phi, raw, y.shape[1]) - mean) / std
        total += float(np.square(forecast - y[..., 0].double().numpy()).sum())
        count += y[..., 0].numel()
    return total / count


def _coefficients(values: np.ndarray | None) -> str:
    return "—" if values is None else "[" + ", ".join(f"{v:+.3f}" for v in values) + "]"


def format_table(rows) -> str:
    """Markdown table of (p, model, test MSE, MSE / true-AR MSE, φ, learned α, max error) rows."""
    lines = [
        "| p | model | test MSE | MSE / true-AR forecast | true AR coefficients φ | closed-loop coefficients α | max abs error |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, name, mse, ratio, phi, alpha, error in rows:
        err = "—" if np.isnan(error) else f"{error:.3f}"
        lines.append(f"| {p} | {name} | {mse:.4f} | {ratio:.3f} | {_coefficients(phi)} | {_coefficients(alpha)} | {err} |")
    return "\n".join(lines)
