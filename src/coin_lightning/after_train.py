"""``eval_after_train``: a training run evaluates its own adapter when fit ends.

The training layer knows nothing of evaluation; this top-level module joins them for
``coin_lightning.train``. From the composed ``train.yaml`` it builds the config an evaluation job
reads (:func:`evaluation_config`): the run's ``model`` with the trained adapter, the training
``data.prompt_format``, ``evaluation.data_root`` as ``data.root``, ``evaluation.eval`` as ``eval`` and
the run's ``trainer``, writing into ``<run dir>/<evaluation.output_subdir>``. :func:`check_evaluation`
validates it before training starts (the same checks as ``coin_lightning.evaluate``, no model loaded);
:func:`evaluate_after_fit` gives the ``after_fit`` hook of :func:`coin_lightning.training.run.train`,
which runs :func:`coin_lightning.eval.cli.evaluate` (the code path of ``coin_lightning.evaluate``) and
logs its results to the run's loggers at the last training step.

With several training processes (``trainer=ddp_cpu``, ``ddp``) every rank takes part: the processes
and the process group of training are still there when fit ends, Fabric finds them (it starts no new
ones) and the ranks share the rows as in ``coin_lightning.evaluate``; rank 0 writes and logs.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def evaluation_config(cfg: DictConfig, adapter: str | None) -> DictConfig:
    """The evaluation job config of a composed ``train.yaml`` (see the module docstring).

    Args:
        cfg: the training config (with ``evaluation``).
        adapter: the trained adapter's directory (``None`` before training: only validated then).
    """
    ev = cfg.evaluation
    node = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "adapter": adapter,
        "prompt_format": cfg.data.prompt_format,
        "data": {"root": ev.data_root},
        "eval": OmegaConf.to_container(ev.eval, resolve=True),
        "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
        "logger": None,
        "seed": cfg.seed,
        "output_dir": str(Path(cfg.output_dir) / ev.output_subdir),
    }
    return OmegaConf.create(node)


def check_evaluation(cfg: DictConfig) -> None:
    """Validate ``evaluation`` before training: settings, rows, instructions, trainer (no model loads).

    Raises:
        UserError: one line naming the key (``evaluation.eval.<key>``) or the file at fault (reported
            by the entry point's :func:`coin_lightning.errors.reported`).
    """
    from coin_lightning.errors import ConfigError, UserError
    from coin_lightning.eval.cli import check
    from coin_lightning.eval.settings import EvalConfigError

    if not (cfg.get("callbacks") or {}).get("adapter"):
        raise ConfigError("eval_after_train=true evaluates the adapter that callbacks.adapter writes: keep callbacks.adapter")
    try:
        check(evaluation_config(cfg, None))
    except UserError as exc:
        if str(exc).startswith("eval."):
            raise EvalConfigError(f"evaluation.{exc}") from None
        raise


def evaluate_after_fit(cfg: DictConfig) -> Callable[[Any, dict], dict]:
    """The ``after_fit`` hook for :func:`coin_lightning.training.run.train`: evaluate the trained
    adapter, log to ``trainer.loggers`` at ``trainer.global_step``, return ``{"eval": {output_dir, overall}}``
    for the run's ``summary.json``."""

    def after_fit(trainer, summary: dict) -> dict:
        from coin_lightning.eval.cli import evaluate

        adapter = summary.get("paths", {}).get("adapter") or str(cfg.callbacks.adapter.dirpath)  # ranks > 0
        ecfg = evaluation_config(cfg, adapter)
        metrics = evaluate(ecfg, loggers=list(trainer.loggers), log_step=trainer.global_step)
        return {"eval": {"output_dir": ecfg.output_dir, "overall": metrics["overall"]}}

    return after_fit
