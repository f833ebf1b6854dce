"""Where the Hydra configs live (``$COIN_LIGHTNING_CONF`` or the package's ``conf/``, shipped in the wheel), and the
schemas of the typed config groups.

Importing this module registers, in Hydra's ConfigStore, the dataclass each group's YAML files start
from (``defaults: [schema, _self_]``): ``model/schema`` (:class:`~coin_lightning.model.config.ModelArgs`),
``loss/schema`` (:class:`~coin_lightning.losses.LossArgs`), ``eval/schema``
(:class:`~coin_lightning.eval.settings.EvalSettings`) and ``eval/perturb/schema``
(:class:`~coin_lightning.eval.instructions.perturb.config.PerturbConfig`). Hydra then refuses an unknown key or a
value of the wrong type in those groups while it composes the config, from a YAML file, an experiment
file or the command line. Every entry point, and any code composing these configs (tests included),
imports :data:`CONFIG_DIR` from here, so the schemas are registered before Hydra composes.
"""
from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from coin_lightning.config_types import schema_node
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.settings import EvalSettings
from coin_lightning.losses import LossArgs
from coin_lightning.model.config import ModelArgs

CONFIG_DIR = os.environ.get("COIN_LIGHTNING_CONF") or str(Path(__file__).resolve().parent / "conf")
"""Absolute path of the config directory used by every entry point (``train``, ``evaluate``, ...)."""

SCHEMAS = {"model": ModelArgs, "loss": schema_node(LossArgs), "eval": EvalSettings, "eval/perturb": PerturbConfig}
"""Config group -> the schema stored as its ``schema`` option."""


def register_schemas() -> None:
    """Store each group's schema in Hydra's ConfigStore as ``<group>/schema`` (idempotent)."""
    store = ConfigStore.instance()
    for group, node in SCHEMAS.items():
        store.store(group=group, name="schema", node=node)


def group_options(*groups: str) -> str:
    """``  group: option, option`` lines for the given config groups, from :data:`CONFIG_DIR` (the
    ``schema`` entries left out): the ``${coin_groups:model,data,...}`` resolver of the commands'
    ``--help`` templates (``conf/hydra/help/*.yaml``)."""
    width = max(map(len, groups), default=0)
    lines = []
    for group in groups:
        options = sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
        lines.append(f"  {group.ljust(width)}  {', '.join(options)}")
    return "\n".join(lines)


register_schemas()
if not OmegaConf.has_resolver("coin_groups"):
    OmegaConf.register_new_resolver("coin_groups", group_options)
