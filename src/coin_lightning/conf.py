"""Where the Hydra configs live (``$COIN_LIGHTNING_CONF`` or the package's ``conf/``, shipped in the wheel), the
schemas of the typed config groups, and the builders that parse a composed config once into typed jobs.

Importing this module registers, in Hydra's ConfigStore, the dataclass each group's YAML files start
from (``defaults: [schema, _self_]``): ``model/schema`` (:class:`~coin_lightning.model.config.ModelArgs`),
``data/schema`` (:class:`~coin_lightning.data.config.DataArgs`), ``loss/schema`` (:class:`~coin_lightning.losses.LossArgs`), ``eval/schema``
(:class:`~coin_lightning.eval.settings.EvalSettings`) and ``eval/perturb/schema``
(:class:`~coin_lightning.eval.instructions.perturb.config.PerturbConfig`). Hydra then refuses an unknown key or a
value of the wrong type in those groups while it composes the config, from a YAML file, an experiment
file or the command line. Every entry point, and any code composing these configs (tests included),
imports :data:`CONFIG_DIR` from here, so the schemas are registered before Hydra composes.

:func:`train_run`, :func:`eval_job` and :func:`training_eval_job` turn a composed config into a typed job
(:class:`~coin_lightning.training.checks.TrainRun`, :class:`~coin_lightning.eval.settings.EvalJob`): the layers
below receive typed values, never the config.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from coin_lightning.config_types import check_required, schema_node
from coin_lightning.data.config import DataArgs
from coin_lightning.errors import ConfigError, EvalConfigError, UserError
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.settings import EvalJob, EvalSettings
from coin_lightning.losses import LossArgs
from coin_lightning.model.config import ModelArgs

if TYPE_CHECKING:
    from coin_lightning.training.checks import TrainRun

CONFIG_DIR = os.environ.get("COIN_LIGHTNING_CONF") or str(Path(__file__).resolve().parent / "conf")
"""Absolute path of the config directory used by every entry point (``train``, ``evaluate``, ...)."""

SCHEMAS = {"model": ModelArgs, "data": DataArgs, "loss": schema_node(LossArgs), "eval": EvalSettings, "eval/perturb": PerturbConfig}
"""Config group -> the schema stored as its ``schema`` option."""


def group_options(*groups: str) -> str:
    """``  group: option, option`` lines for the given config groups, from :data:`CONFIG_DIR` (the
    ``schema`` entries left out): the ``${coin_groups:model,data,...}`` resolver of the commands'
    ``--help`` templates (``conf/hydra/help/*.yaml``)."""
    width = max(map(len, groups), default=0)
    options = [(group, sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))) for group in groups]
    return "\n".join(f"  {group.ljust(width)}  {', '.join(names)}" for group, names in options)


def train_run(cfg: DictConfig) -> TrainRun:
    """The typed job of a composed ``train.yaml``: required values, ``model``, ``loss`` and ``data`` (values
    and files) refused here in one line; the rest checked by :func:`coin_lightning.training.checks.check_train_config`.
    The recorded config's ``data`` is the job's :class:`~coin_lightning.data.config.DataArgs` (its fields, kept
    in step: the batch plan sets ``val_every_n_steps`` there).

    Raises:
        ConfigError: a required value left ``???``, a bad ``model`` or ``loss`` key (one line naming it).
        DataError: a bad ``data`` key, value or file (one line naming it).
    """
    from coin_lightning.training.checks import TrainRun  # Lightning: imported once Hydra has set up logging

    check_required(cfg)
    loss, model = LossArgs.from_config(cfg.loss), ModelArgs.from_config(cfg.model)
    c = OmegaConf.to_container(cfg, resolve=True)
    data = DataArgs.from_config(c.get("data"))
    c["data"] = vars(data)

    def resolve_callbacks(data: dict) -> dict:
        node = cfg.copy()
        with open_dict(node):
            node.data = data
        return OmegaConf.to_container(node.callbacks, resolve=True) if node.get("callbacks") else {}

    return TrainRun(model, loss, data, c["trainer"], c.get("optimizer") or {}, c.get("scheduler"),
                    c.get("logger") or {}, resolve_callbacks, seed=c.get("seed"), warmup_ratio=c.get("warmup_ratio"),
                    output_dir=str(c["output_dir"]), ckpt_path=c.get("ckpt_path"), config=c)


def eval_job(cfg: DictConfig) -> EvalJob:
    """The typed job of a composed ``eval.yaml`` or ``analyze.yaml``, checked before any model loads.

    The config is resolved once, with ``trainer`` cut to the keys evaluation reads (its training-only
    keys may refer to keys an evaluation config lacks); that resolved config is what the loggers record.

    Raises:
        EvalConfigError, ConfigError: a bad ``eval`` key, a required value left ``???``, an unknown
            ``prompt_format``, a bad ``model`` key (one line naming the key).
    """
    from coin_lightning.eval.engine.distributed import trainer_fields  # Lightning: see train_run

    settings = EvalSettings.from_config(cfg.eval)
    check_required(cfg)
    node = cfg.copy()
    with open_dict(node):
        node.trainer = trainer_fields(cfg.get("trainer"))
    c = OmegaConf.to_container(node, resolve=True)
    data, loss = c.get("data") or {}, c.get("loss") or {}
    return EvalJob(settings, ModelArgs.from_config(c["model"]), str(c["output_dir"]), adapter=c.get("adapter"),
                   prompt_format=c["prompt_format"], data_root=data.get("root"), trainer=c["trainer"],
                   logger=c.get("logger") or {}, config=c, analyze=c.get("analyze") or {},
                   pooling=loss.get("pooling", "last"), append_eos=bool(data.get("append_eos", True)))


def training_eval_job(cfg: DictConfig) -> EvalJob:
    """The evaluation job of a composed ``train.yaml`` (``eval_after_train``): the run's ``model``, the training
    ``data.prompt_format``, ``evaluation.data_root`` as the data root, ``evaluation.eval`` and the run's
    ``trainer``, writing into ``<run dir>/<evaluation.output_subdir>``; the adapter is set when fit ends
    (:func:`coin_lightning.after_train.evaluate_after_fit`).

    Raises:
        ConfigError: ``callbacks.adapter`` removed (nothing to evaluate).
        EvalConfigError: a bad ``evaluation.eval`` key (named so).
    """
    from coin_lightning.eval.engine.distributed import trainer_fields  # Lightning: see train_run

    if not (cfg.get("callbacks") or {}).get("adapter"):
        raise ConfigError("eval_after_train=true evaluates the adapter that callbacks.adapter writes: keep callbacks.adapter")
    ev = cfg.evaluation
    try:
        settings = EvalSettings.from_config(ev.eval)
    except UserError as exc:
        raise EvalConfigError(f"evaluation.{exc}") from None
    return EvalJob(settings, ModelArgs.from_config(cfg.model), str(Path(cfg.output_dir) / ev.output_subdir),
                   prompt_format=cfg.data.prompt_format, data_root=ev.data_root, trainer=trainer_fields(cfg.trainer))


for _group, _node in SCHEMAS.items():  # each group's schema as its ``schema`` option (idempotent)
    ConfigStore.instance().store(group=_group, name="schema", node=_node)
if not OmegaConf.has_resolver("coin_groups"):
    OmegaConf.register_new_resolver("coin_groups", group_options)
