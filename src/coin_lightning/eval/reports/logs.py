"""Sending an evaluation to the configured Lightning loggers (``conf/logger``: CSV, TensorBoard, W&B).

Every logger receives the resolved config (``log_hyperparams``), the scalar metrics
(:func:`flat_metrics`) and the figures (:func:`coin_lightning.eval.reports.plots.log_figures`); a
``WandbLogger`` also gets the result tables as W&B Tables (``log_table``). CSV and TensorBoard keep
the scalars; the full tables are the run directory's CSV files.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coin_lightning.eval.reports.plots import log_figures
from coin_lightning.eval.reports.tables import PER_INSTRUCTION_COLUMNS, PER_TASK_LEVEL_COLUMNS
from coin_lightning.training.loggers import log_config

TABLES = {"per_task_level": PER_TASK_LEVEL_COLUMNS, "per_instruction": PER_INSTRUCTION_COLUMNS}
"""Metrics entries logged as tables, with their columns (as the run directory's CSV files)."""


def flat_metrics(metrics: dict) -> dict[str, float]:
    """Scalars for a logger: ``eval/<task>/<level>/acc_mean`` ..., ``eval/<level>/acc_mean``, ``eval/overall/*``."""
    out: dict[str, float] = {}
    for c in metrics["per_task_level"]:
        for k in ("mean", "std", "pdr"):
            if c[k] is not None:
                out[f"eval/{c['task']}/{c['level']}/acc_{k}" if k != "pdr" else f"eval/{c['task']}/{c['level']}/pdr"] = c[k]
    for lv, v in metrics["per_level"].items():
        for k in ("mean", "std", "pdr"):
            if v[k] is not None:
                out[f"eval/{lv}/acc_{k}" if k != "pdr" else f"eval/{lv}/pdr"] = v[k]
    for k, v in metrics["overall"].items():
        if isinstance(v, (int, float)) and v is not None:
            out[f"eval/overall/{k}"] = float(v)
    return out


def log_results(loggers: Sequence[Any], metrics: dict, figures: dict, config: dict | None = None, step: int = 0) -> None:
    """Send config (unless ``None``), scalars, tables and figures (at ``step``) to every logger, then ``save()`` each."""
    from lightning.pytorch.loggers import WandbLogger

    if config is not None:
        log_config(loggers, config)
    for lg in loggers:
        lg.log_metrics(flat_metrics(metrics), step=step)
        if isinstance(lg, WandbLogger):
            for name, columns in TABLES.items():
                data = [[row.get(c) for c in columns] for row in metrics[name]]
                lg.log_table(key=f"eval/{name}", columns=list(columns), data=data, step=step)
        log_figures(lg, figures, step)
        lg.save()
