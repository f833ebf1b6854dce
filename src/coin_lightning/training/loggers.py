"""Loggers: factories that never hang (W&B falls back to offline mode without a key or network), and
the resolved run config handed to every logger."""
from __future__ import annotations

import logging
import netrc
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

from coin_lightning.config_types import plain

log = logging.getLogger(__name__)


def _wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(url: str, timeout: float) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_logger(offline: bool | None = None, probe_timeout: float = 3.0, **kwargs):
    """A ``lightning`` ``WandbLogger``, switched to offline mode when W&B cannot be reached.

    Args:
        offline: force the mode; ``None`` decides: offline when no API key is configured
            (``WANDB_API_KEY`` or ``~/.netrc``), ``WANDB_MODE=offline``, or the server does not accept a
            TCP connection within ``probe_timeout`` seconds.
        **kwargs: passed to ``WandbLogger`` (``project``, ``name``, ``save_dir``, ``tags``, ...).

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        reason = None
        if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            reason = f"WANDB_MODE={os.environ['WANDB_MODE']}"
        elif not _wandb_key_available():
            reason = "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
        elif not _reachable(url, probe_timeout):
            reason = f"{url} is not reachable"
        offline = reason is not None
        if offline:
            log.warning("W&B logging in offline mode: %s; sync later with `wandb sync <run dir>`", reason)
    return WandbLogger(offline=offline, **kwargs)


def finish_wandb() -> None:
    """Close the active W&B run, if any (called after every job so multirun jobs get separate runs)."""
    wandb = sys.modules.get("wandb")  # not imported: no run was started
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def instantiate_group(node: Any) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group mapping (``logger``, ``callbacks``)."""
    from hydra.utils import instantiate

    return [instantiate(v) for v in (node or {}).values() if isinstance(v, Mapping) and "_target_" in v]


def log_config(loggers: Iterable[Any], cfg: Any) -> None:
    """Give every logger the run's resolved Hydra config as its hyper-parameters.

    Each Lightning logger stores the nested dict its own way: ``CSVLogger`` and ``TensorBoardLogger``
    write it to ``hparams.yaml`` (TensorBoard's hparams view gets it flattened with ``/`` between
    keys), ``WandbLogger`` sets it as the W&B run config (nested, so ``model.lora.r`` is a config
    field). Interpolations (``${output_dir}``, ``${seed}``, ...) are resolved first, so the record
    holds the values the run used. Under DDP only rank 0 writes (the loggers are rank-zero only).

    Args:
        loggers: ``trainer.loggers``.
        cfg: the composed config (a config node, resolved here, or an already plain dict).

    Raises:
        omegaconf.errors.InterpolationResolutionError: an interpolation cannot be resolved.
    """
    params = plain(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)
