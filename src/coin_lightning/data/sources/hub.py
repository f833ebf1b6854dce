"""Hugging Face hub datasets with a fast, one-line failure when the hub cannot be reached.

``datasets.load_dataset`` retries an unreachable hub for about 25 s before it raises. When the hub is
switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or its host does not answer within a few
seconds, and the ``datasets`` caches hold no copy of the dataset, :func:`load_hub_dataset` raises at
once, naming the config key that selects local files instead.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from coin_lightning.data.records import DataError

PROBE_TIMEOUT_S = 3.0
"""Seconds to wait for a TCP connection to the hub before treating it as unreachable."""

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """Whether the hub is switched off by the environment or does not accept a connection now."""
    if any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((host.hostname, host.port or 443), timeout=PROBE_TIMEOUT_S):
            return False
    except OSError:
        return True


def cached(hub_id: str) -> bool:
    """Whether a ``datasets`` or hub cache holds any copy of the dataset ``hub_id``."""
    import datasets
    from huggingface_hub import constants

    names = [Path(datasets.config.HF_DATASETS_CACHE) / hub_id.replace("/", "___"),
             Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}"]
    return any(p.is_dir() for p in names)


def load_hub_dataset(hub_id: str, name: str | None = None, split: str = "train", key: str = "data.root", **kwargs):
    """``datasets.load_dataset(hub_id, name, split=split, **kwargs)``, failing fast when offline.

    Args:
        hub_id: the hub dataset, e.g. ``nyu-mll/glue``.
        name: its configuration (e.g. the GLUE task), or ``None``.
        split: the split to load.
        key: the config key that selects local files instead (named in the message).

    Raises:
        DataError: the hub is unreachable and nothing is cached, or the dataset cannot be loaded
            (one line naming the dataset and ``key``).
    """
    what = f"{hub_id}" + (f" ({name})" if name else "")
    if not cached(hub_id) and hub_offline():  # the cheap directory test first: the probe may wait seconds
        raise DataError(
            f"{key} is not set and the hub dataset {what} cannot be reached (offline, no cached copy): "
            f"set {key}=<local copy>"
        )
    import datasets

    try:
        return datasets.load_dataset(hub_id, name, split=split, **kwargs)
    except (ConnectionError, OSError, ValueError) as exc:  # DatasetNotFoundError is a FileNotFoundError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what}: cannot be loaded from the hub ({first}); set {key}=<local copy>") from None
