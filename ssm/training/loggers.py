"""Experiment loggers: W&B (online with credentials, offline otherwise, never prompting)."""

from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_credentials_available() -> bool:
    """True if an API key is in ``WANDB_API_KEY`` or in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``auto`` -> ``$WANDB_MODE`` if set, else online with credentials, else offline."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in WANDB_MODES[1:]:
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_available() else "offline"


def wandb_logger(
    project: str = "ssm",
    save_dir: str = ".",
    mode: str = "auto",
    name: str | None = None,
    **kwargs,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` that never asks for input.

    Offline runs are written to ``save_dir/wandb/offline-run-*``; upload them later with
    ``wandb sync <run folder>``.
    """
    resolved = resolve_wandb_mode(mode)
    if resolved == "online" and not wandb_credentials_available():
        raise RuntimeError(
            "W&B logging online needs credentials: set WANDB_API_KEY or run `wandb login` once; or log "
            "offline (logger.mode=offline or auto, uploaded later with `wandb sync`), or use logger=csv"
        )
    if resolved == "offline":
        log.info("W&B: no credentials found, logging offline to %s/wandb", save_dir)
    os.makedirs(save_dir, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(project=project, save_dir=save_dir, mode=resolved, name=name, **kwargs)
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous", False) is None:
        # Lightning always passes anonymous=None, which wandb >= 0.19 answers with a
        # deprecation warning on every run; leaving it out means the same thing
        del init["anonymous"]
    return logger
