"""The training procedure behind ``python -m coin_lightning.train``: build everything from the typed job
(:class:`~coin_lightning.training.checks.TrainRun`), fit, report."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from coin_lightning.data.datamodule import CoinDataModule
from coin_lightning.errors import reported
from coin_lightning.io import write_json
from coin_lightning.model.checks import check_checkpoint
from coin_lightning.model.loading import load_model, load_tokenizer
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from coin_lightning.training.batching import apply_batch_plan, apply_epoch_fraction
from coin_lightning.training.callbacks import AdapterCheckpoint
from coin_lightning.training.checks import TrainRun, check_launch, check_train_config
from coin_lightning.training.learning import fit_measured, learning_rows
from coin_lightning.training.loggers import finish_wandb, instantiate_group, log_config
from coin_lightning.training.resume import resolve_ckpt_path


def build(run: TrainRun, checked: bool = False) -> tuple[CoinModule, CoinDataModule, L.Trainer]:
    """Instantiate the LightningModule, DataModule and Trainer of a training job.

    Everything that can be checked without the model is checked first, in this order: the config
    values and ``ckpt_path`` (:func:`coin_lightning.training.checks.check_train_config`), the data
    (read, validated and grouped without a tokenizer), the trainer (accelerator and launch), then the
    tokenizer encodes the data; the model weights load last. Every process checks its own
    config and data before Lightning starts any other rank. ``checked``: the entry point has run
    :func:`~coin_lightning.training.checks.check_train_config` already (not run twice).

    Raises:
        ConfigError, ModelLoadError, DataError: bad configuration or data (one-line messages).
    """
    if not checked:
        check_train_config(run)
    plan = apply_batch_plan(run.data, run.trainer)  # global batch -> accumulation, validation in optimizer steps
    L.seed_everything(run.seed, workers=True)
    datamodule = CoinDataModule(run.data, tokenizer=None, seed=run.seed)
    datamodule.setup("fit")  # read and validate the data before any model loads
    examples = len(datamodule.train_dataset) * datamodule.pairs_per_item
    apply_epoch_fraction(run.data, run.trainer, examples, plan.global_batch_size)  # the reference's eval/save steps
    run.config["callbacks"] = callbacks = run.resolve_callbacks(vars(run.data))
    trainer = instantiate(run.trainer, callbacks=instantiate_group(callbacks), logger=instantiate_group(run.logger) or False)
    check_launch(trainer)
    datamodule.tokenizer = load_tokenizer(run.model)
    datamodule.setup("fit")  # tokenize (setup is idempotent otherwise)
    base, _ = load_model(run.model, device=trainer.strategy.root_device)  # a quantized base lands on this rank's GPU
    model = apply_lora(base, run.model)
    module = CoinModule(
        model,
        loss=run.loss,
        optimizer=instantiate(run.optimizer),
        scheduler=instantiate(run.scheduler) if run.scheduler is not None else None,
        position_ids=run.model.position_ids,
    )
    return module, datamodule, trainer


def _summary(run: TrainRun, trainer: L.Trainer, datamodule: Any, wall: float, learning: dict | None) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    paths: dict[str, str] = {"output_dir": str(Path(run.output_dir))}
    for cb in trainer.callbacks:
        if isinstance(cb, AdapterCheckpoint) and cb.written:
            paths["adapter"] = str(cb.written[-1])
        if isinstance(cb, ModelCheckpoint):
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
        "config": run.config,
        "learning": learning,
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"coin-lightning: {summary['global_step']} steps in {summary['wall_time_s']} s")
    table.add_column("what")
    table.add_column("value", overflow="fold")
    metrics = [(k, f"{v:.4g}") for k, v in summary["metrics"].items() if k.startswith(("train/", "val/"))]
    # the final metrics, the validation metrics before -> after training, the written paths
    for k, v in metrics + learning_rows(summary.get("learning")) + list(summary["paths"].items()):
        table.add_row(k, v)
    Console().print(table)


def train(run: TrainRun, after_fit: Callable[[L.Trainer, dict], dict | None] | None = None,
          checked: bool = False) -> dict[str, Any]:
    """Run one training job: build, fit (resuming from ``ckpt_path`` if set), write ``summary.json``.

    Args:
        after_fit: called on every rank with the trainer and the summary once fit ends and
            ``summary.json`` is written (the entry point's evaluation of the adapter, ``eval_after_train``);
            a dict it returns is merged into the summary, which rank 0 writes again.
        checked: the config was checked already (:func:`build`).

    Returns:
        The summary dict (global step, wall time, final metrics, written paths, data statistics).

    Raises:
        SystemExit: with a one-line message for configuration and data errors
            (:func:`coin_lightning.errors.reported`). When the error happens before training starts,
            only what this job wrote is removed (:meth:`coin_lightning.outputs.JobDir.discard`): an
            existing directory and every file that was in it stay.
    """
    t0 = time.perf_counter()
    try:
        with reported(run.output_dir) as job_dir:
            ckpt_path = resolve_ckpt_path(run.ckpt_path, job_dir.path)  # a path, auto, or null (auto under SLURM)
            if ckpt_path is not None and ckpt_path != run.ckpt_path:  # found here: check it as a given one
                check_checkpoint(ckpt_path, run.model)
            module, datamodule, trainer = build(run, checked)
            log_config(trainer.loggers, run.config)
            job_dir.keep()  # training starts: what fails from here on keeps its checkpoints
            learning = fit_measured(trainer, module, datamodule, ckpt_path)  # fit + validation before/after, one-line interrupts
            summary = _summary(run, trainer, datamodule, time.perf_counter() - t0, learning)
            if trainer.is_global_zero:
                write_json(job_dir.path / "summary.json", summary)
                _print_summary(summary)
            extra = after_fit(trainer, summary) if after_fit is not None else None
            if extra:
                summary.update(extra)
                if trainer.is_global_zero:
                    write_json(job_dir.path / "summary.json", summary)
            return summary
    finally:
        finish_wandb()
