"""The training procedure behind ``python -m coin_lightning.train``: build everything from the config, fit, report."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from coin_lightning.data.records import DataError
from coin_lightning.io import write_json
from coin_lightning.model.loading import ModelLoadError, load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule, ConfigError, LossArgs
from coin_lightning.training.launch import check_launch
from coin_lightning.training.loggers import finish_wandb

log = logging.getLogger(__name__)

USER_ERRORS = (ConfigError, ModelLoadError, DataError)
"""Errors caused by the configuration or the input data: reported in one line, no traceback."""


def _instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group mapping (callbacks, loggers)."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def build(cfg: DictConfig) -> tuple[CoinModule, L.LightningDataModule, L.Trainer]:
    """Instantiate the LightningModule, DataModule and Trainer of a composed ``train.yaml`` config.

    Raises:
        ConfigError, ModelLoadError, DataError: bad configuration or data (one-line messages).
    """
    LossArgs.from_config(cfg.loss)  # validate cheap things before loading a model
    L.seed_everything(cfg.seed, workers=True)
    base, tokenizer = load_model(cfg.model)
    model = apply_lora(base, cfg.model)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)
    datamodule.setup("fit")  # surface data errors before anything is written (setup is idempotent)
    module = CoinModule(
        model,
        loss=cfg.loss,
        optimizer=instantiate(cfg.optimizer),
        warmup_ratio=cfg.warmup_ratio,
        scheduler=cfg.scheduler,
    )
    trainer = instantiate(
        cfg.trainer, callbacks=_instantiate_group(cfg.get("callbacks")), logger=_instantiate_group(cfg.get("logger")) or False
    )
    check_launch(trainer)
    return module, datamodule, trainer


def _summary(cfg: DictConfig, trainer: L.Trainer, datamodule: Any, wall: float) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    paths: dict[str, str] = {"output_dir": str(out)}
    for cb in trainer.callbacks:
        if cb.__class__.__name__ == "AdapterCheckpoint" and cb.written:
            paths["adapter"] = str(cb.written[-1])
        if cb.__class__.__name__ == "ModelCheckpoint":
            if cb.last_model_path:
                paths["last_checkpoint"] = cb.last_model_path
            if cb.best_model_path:
                paths["best_checkpoint"] = cb.best_model_path
    for lg in trainer.loggers:
        if getattr(lg, "log_dir", None):
            paths[f"logs_{lg.__class__.__name__}"] = str(lg.log_dir)
    return {
        "global_step": trainer.global_step,
        "wall_time_s": round(wall, 1),
        "metrics": metrics,
        "paths": paths,
        "data": getattr(datamodule, "stats", {}),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"coin-lightning: {summary['global_step']} steps in {summary['wall_time_s']} s")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for k, v in summary["metrics"].items():
        if k.startswith(("train/", "val/")):
            table.add_row(k, f"{v:.4g}")
    for k, v in summary["paths"].items():
        table.add_row(k, v)
    Console().print(table)


def train(cfg: DictConfig, after_fit: Callable[[L.Trainer, dict], dict | None] | None = None) -> dict[str, Any]:
    """Run one training job: build, fit (resuming from ``ckpt_path`` if set), write ``summary.json``.

    Args:
        after_fit: called on every rank with the trainer and the summary once fit ends and
            ``summary.json`` is written (the entry point's evaluation of the adapter, ``eval_after_train``);
            a dict it returns is merged into the summary, which rank 0 writes again.

    Returns:
        The summary dict (global step, wall time, final metrics, written paths, data statistics).

    Raises:
        SystemExit: with a one-line message for configuration and data errors; the job's output
            directory is removed when the error happens before training starts, so no
            half-written run is left behind.
    """
    out = Path(cfg.output_dir)
    started = False
    t0 = time.perf_counter()
    try:
        module, datamodule, trainer = build(cfg)
        started = True
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        summary = _summary(cfg, trainer, datamodule, time.perf_counter() - t0)
        if trainer.is_global_zero:
            write_json(out / "summary.json", summary)
            _print_summary(summary)
        extra = after_fit(trainer, summary) if after_fit is not None else None
        if extra:
            summary.update(extra)
            if trainer.is_global_zero:
                write_json(out / "summary.json", summary)
        return summary
    except (*USER_ERRORS, InstantiationException) as exc:
        cause = exc.__cause__ if isinstance(exc, InstantiationException) else exc
        if not isinstance(cause, USER_ERRORS):
            raise
        exc = cause
        if not started:
            shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(f"error: {exc}") from None
    finally:
        finish_wandb()
