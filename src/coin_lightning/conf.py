"""Where the Hydra configs live: ``$COIN_LIGHTNING_CONF`` or the repository's ``conf/`` directory."""
from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR = os.environ.get("COIN_LIGHTNING_CONF") or str(Path(__file__).resolve().parents[2] / "conf")
"""Absolute path of the config directory used by every entry point (``train``, ``evaluate``, ...)."""
