"""Experiment loggers: W&B (online with credentials, offline otherwise, never prompting)."""

from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


# (the user's own WANDB_MODE or None, the value wandb_logger exported over it)
_exported_mode: tuple[str | None, str] | None = None


def wandb_host() -> str | None:
    """The server ``wandb login`` stores a key for: ``$WANDB_BASE_URL``, else the installed
    wandb's own default (it moved from api.wandb.ai in later releases)."""
    url = os.environ.get("WANDB_BASE_URL")
    if not url:
        try:
            import wandb

            url = wandb.Settings().base_url
        except Exception:  # an old or broken wandb: its historical default
            url = "https://api.wandb.ai"
    return urlparse(str(url)).hostname


def wandb_credentials_available() -> bool:
    """True if an API key is in ``WANDB_API_KEY`` or in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _user_wandb_mode() -> str | None:
    """``$WANDB_MODE`` as the user set it, seeing through the value wandb_logger exported."""
    value = os.environ.get("WANDB_MODE")
    if _exported_mode is not None and value == _exported_mode[1]:
        return _exported_mode[0]
    return value


def _export_wandb_mode(mode: str) -> None:
    """Make ``mode`` wandb's process-wide setting too: an offline run's own settings do not
    reach wandb's background threads, which otherwise contact the server."""
    global _exported_mode
    user = _user_wandb_mode()
    os.environ["WANDB_MODE"] = mode
    _exported_mode = (user, mode)


def resolve_wandb_mode(mode: str = "auto") -> str:
    """``auto`` -> ``$WANDB_MODE`` if set, else online with credentials, else offline."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger mode must be one of {WANDB_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    user = _user_wandb_mode()
    if user in WANDB_MODES[1:]:
        return user
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
        why = "offline as set" if "offline" in (mode, _user_wandb_mode()) else "no credentials found"
        log.info("W&B: %s, logging offline to %s/wandb", why, save_dir)
    os.makedirs(save_dir, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    _export_wandb_mode(resolved)
    logger = WandbLogger(project=project, save_dir=save_dir, mode=resolved, name=name, **kwargs)
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous", False) is None:
        # Lightning always passes anonymous=None, which wandb >= 0.19 answers with a
        # deprecation warning on every run; leaving it out means the same thing
        del init["anonymous"]
    return logger
