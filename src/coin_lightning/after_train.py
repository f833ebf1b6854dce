"""``eval_after_train``: a training run evaluates its own adapter when fit ends.

The training layer knows nothing of evaluation; this top-level module joins them for
``coin_lightning.train``. The run's evaluation job is parsed from its ``evaluation`` node by
:func:`coin_lightning.conf.training_eval_job`; :func:`check_evaluation` validates it before training
starts (the same checks as ``coin_lightning.evaluate``, no model loaded); :func:`evaluate_after_fit`
gives the ``after_fit`` hook of :func:`coin_lightning.training.run.train`, which runs
:func:`coin_lightning.eval.cli.evaluate` (the code path of ``coin_lightning.evaluate``) on the trained
adapter and logs its results to the run's loggers at the last training step.

With several training processes (``trainer=ddp_cpu``, ``ddp``) every rank takes part: the processes
and the process group of training are still there when fit ends, Fabric finds them (it starts no new
ones) and the ranks share the rows as in ``coin_lightning.evaluate``; rank 0 writes and logs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from coin_lightning.errors import EvalConfigError, UserError
from coin_lightning.eval.cli import check, evaluate
from coin_lightning.eval.settings import EvalJob


def check_evaluation(job: EvalJob) -> None:
    """Validate the run's evaluation before training: rows, instructions, trainer (no model loads).

    Raises:
        UserError: one line naming the key (``evaluation.eval.<key>``) or the file at fault (reported
            by the entry point's :func:`coin_lightning.errors.reported`).
    """
    try:
        check(job)
    except UserError as exc:
        if str(exc).startswith("eval."):
            raise EvalConfigError(f"evaluation.{exc}") from None
        raise


def evaluate_after_fit(job: EvalJob, adapter_dir: str) -> Callable[[Any, dict], dict]:
    """The ``after_fit`` hook for :func:`coin_lightning.training.run.train`: evaluate the trained adapter
    (the one fit wrote, else ``adapter_dir``, where ``callbacks.adapter`` writes: ranks > 0), log to
    ``trainer.loggers`` at ``trainer.global_step``, return ``{"eval": {output_dir, overall}}`` for the
    run's ``summary.json``."""

    def after_fit(trainer, summary: dict) -> dict:
        run = dataclasses.replace(job, adapter=summary.get("paths", {}).get("adapter") or adapter_dir)
        metrics = evaluate(run, loggers=list(trainer.loggers), log_step=trainer.global_step)
        return {"eval": {"output_dir": run.output_dir, "overall": metrics["overall"]}}

    return after_fit
