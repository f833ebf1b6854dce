"""Wiring a composed ``conf/eval.yaml`` into an evaluation run (called by ``coin_lightning.evaluate``, and by
``coin_lightning.after_train`` when a training run evaluates its adapter)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.markdown import Markdown

from coin_lightning.errors import reported
from coin_lightning.eval.engine.distributed import (
    ProcessesLost,
    ShardedPredictor,
    check_not_multirun,
    fabric_from_trainer,
    prepare_model,
    trainer_fields,
)
from coin_lightning.eval.engine.parts import PARTS_DIR, Parts, part_key
from coin_lightning.eval.engine.predict import Predictor
from coin_lightning.eval.reports.logs import resolved_config
from coin_lightning.eval.run import build_instruction_set, load_tasks, run_evaluation
from coin_lightning.eval.scoring.metrics import fingerprint
from coin_lightning.eval.scoring.results import FILES
from coin_lightning.eval.settings import EvalConfigError, EvalSettings
from coin_lightning.losses import POOLINGS
from coin_lightning.model.lora import load_for_inference
from coin_lightning.training.loggers import finish_wandb, instantiate_group

log = logging.getLogger(__name__)

def check_inputs(cfg: DictConfig) -> None:
    """Check, before the model loads: required values (``???``), ``prompt_format``, ``model`` and ``adapter``.

    Raises:
        ConfigError, EvalConfigError, ModelLoadError: one line naming the key.
    """
    from coin_lightning.config_types import check_required
    from coin_lightning.data.prompts import PROMPT_FORMATS
    from coin_lightning.model.checks import check_adapter
    from coin_lightning.model.config import ModelArgs

    check_required(cfg)
    if cfg.prompt_format not in PROMPT_FORMATS:
        raise EvalConfigError(f"prompt_format={cfg.prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
    args = ModelArgs.from_config(cfg.model)
    for key, path in (("model.adapter", args.adapter), ("adapter", cfg.adapter)):
        if path:
            check_adapter(str(path), args, key=key)


def check_analyze(node: DictConfig, settings: EvalSettings, pooling: str = "last") -> None:
    """Check the ``analyze`` keys before any representation is computed.

    Raises:
        EvalConfigError: unknown ``analyze.projection`` (or ``umap`` without umap-learn installed),
            ``analyze.rows`` < 2, ``eval.levels`` without ``clean`` (the reference of every pair), or an
            unknown ``loss.pooling``.
    """
    import importlib.util

    from coin_lightning.eval.engine.representations import PROJECTIONS

    if node.projection not in PROJECTIONS:
        raise EvalConfigError(f"analyze.projection={node.projection!r} is not one of {', '.join(PROJECTIONS)}")
    if node.projection == "umap" and importlib.util.find_spec("umap") is None:
        raise EvalConfigError("analyze.projection=umap needs umap-learn, the analyze extra (pip install umap-learn, or '.[analyze]' from a clone), or set analyze.projection=pca")
    if not isinstance(node.rows, int) or isinstance(node.rows, bool) or node.rows < 2:
        raise EvalConfigError(f"analyze.rows={node.rows!r} must be an integer >= 2")
    if "clean" not in settings.levels:
        raise EvalConfigError("analyze compares each perturbed instruction with its clean one: keep clean in eval.levels")
    if pooling not in POOLINGS:
        raise EvalConfigError(f"loss.pooling={pooling!r} is unknown; choose one of {', '.join(POOLINGS)}")


def _fabric(cfg: DictConfig):
    """The ``trainer``'s Fabric, checked (no processes started yet)."""
    fabric = fabric_from_trainer(cfg.get("trainer"))
    check_not_multirun(fabric)
    return fabric


def _start(cfg: DictConfig, fabric, settings: EvalSettings, **predictor_kw):
    """Launch Fabric's processes, then load the model onto its device: ``(sharded predictor, seconds)``."""
    fabric.launch()
    t0 = time.perf_counter()
    model, tokenizer = load_for_inference(cfg.model, cfg.adapter)
    model = prepare_model(fabric, model)
    predictor = Predictor(model, tokenizer, cfg.prompt_format, batch_size=settings.batch_size,
                          prefix_cache=settings.prefix_cache, prompt_layout=settings.prompt_layout, **predictor_kw)
    return ShardedPredictor(fabric, predictor), time.perf_counter() - t0


def check(cfg: DictConfig) -> tuple:
    """Validate an evaluation job without loading a model: the ``eval`` settings, the ``trainer``, the
    rows of every task and the instruction set.

    Returns:
        ``(settings, fabric, tasks, instruction set)``; the Fabric is not launched.

    Raises:
        UserError: bad settings or input (one-line messages: EvalConfigError, InstructionError,
            DataError, ModelLoadError, WordNetMissing).
    """
    settings = EvalSettings.from_config(cfg.eval)
    check_inputs(cfg)
    fabric = _fabric(cfg)
    tasks = load_tasks(settings, cfg.data.root)
    iset = build_instruction_set(settings, [t.name for t in tasks])
    return settings, fabric, tasks, iset


def evaluate(cfg: DictConfig, loggers: list | None = None, log_step: int = 0) -> dict:
    """Run one evaluation job from a composed ``eval.yaml`` config (or the equivalent node a training
    run builds for ``eval_after_train``).

    Validates settings, rows, instructions, the ``trainer`` and earlier parts in the output directory
    before loading the model (:func:`check`); runs on the ``trainer``'s devices
    (:mod:`coin_lightning.eval.engine.distributed`); saves each finished (task, level) under ``parts/`` and
    resumes from them (:mod:`coin_lightning.eval.engine.parts`); rank 0 writes every output into ``cfg.output_dir``.

    Args:
        cfg: ``model``, ``adapter``, ``prompt_format``, ``data.root``, ``eval``, ``trainer``, ``logger``,
            ``output_dir``.
        loggers: send the results to these loggers (a training run's, which hold its config already)
            instead of instantiating ``cfg.logger`` and logging the resolved config to them.
        log_step: the step the scalars are logged at (a training run's last global step).

    Returns:
        The metrics dict (on every rank).

    Raises:
        SystemExit: a one-line message for configuration, instruction-file, data and model errors (the
            job directory is removed when nothing was evaluated, so no half-written run remains), and
            for Ctrl-C (and SIGTERM under :func:`~coin_lightning.eval.engine.distributed.sigterm_as_interrupt`,
            as the entry point runs it): the finished parts are kept.
    """
    out = Path(cfg.output_dir)
    rank0 = True
    with reported(out) as job_dir:
        try:
            settings, fabric, tasks, iset = check(cfg)
            meta = {"model": cfg.model.name_or_path, "adapter": cfg.adapter, "prompt_format": cfg.prompt_format,
                    "data_root": cfg.data.root}
            parts = Parts(out, part_key(settings, fingerprint({t.name: t.uids for t in tasks}, iset.to_dict()), meta))
            parts.check()
            predictor, load_s = _start(cfg, fabric, settings, method=settings.method,
                                       max_new_tokens=settings.max_new_tokens,
                                       decode_batch_size=settings.decode_batch_size)
            parts.write = rank0 = fabric.is_global_zero
            config = None
            if loggers is None:
                loggers = instantiate_group(cfg.get("logger")) if rank0 else []
                config = resolved_config(cfg, trainer_fields(cfg.get("trainer")))
            elif not rank0:
                loggers = []
            job_dir.keep()  # predictions start: finished parts stay for a resume
            meta.update(load_seconds=round(load_s, 3), devices=fabric.world_size)
            metrics = run_evaluation(settings, tasks, iset, predictor, out, meta, loggers, progress=rank0, parts=parts,
                                     write=rank0, config=config, log_step=log_step)
            if rank0:
                Console().print(Markdown((out / FILES["markdown"]).read_text(encoding="utf-8")))
                Console().print(f"[bold]Outputs:[/bold] {out}")
            return metrics
        except (KeyboardInterrupt, ProcessesLost) as exc:
            if not rank0:  # rank 0 reports the interruption
                raise SystemExit(f"error: {exc}" if isinstance(exc, ProcessesLost) else 1) from None
            kept = len(list((out / PARTS_DIR).glob("*.jsonl")))
            reason = f"stopped: {exc}" if isinstance(exc, ProcessesLost) else "interrupted"
            raise SystemExit(f"{reason}: {kept} finished (task, level) part(s) kept in {out / PARTS_DIR}; rerun with "
                             f"hydra.run.dir={out} and the same settings to resume") from None
        finally:
            finish_wandb()


def analyze(cfg: DictConfig) -> dict:
    """Run the representation analysis from a composed ``analyze.yaml`` config.

    Writes ``analysis.json`` (mean cosine similarity overall / per level / perturbation / task),
    ``analysis.md`` and ``representations.png`` into ``cfg.output_dir``.

    Returns:
        The similarity summary (:func:`coin_lightning.eval.engine.representations.similarity_summary`).

    Raises:
        SystemExit: one-line message for configuration, data and model errors, and for Ctrl-C.
    """
    out = Path(cfg.output_dir)
    with reported(out) as job_dir:
        try:
            return _analyze(cfg, out, job_dir)
        except ProcessesLost as exc:
            raise SystemExit(f"error: {exc}") from None
        except KeyboardInterrupt:
            raise SystemExit("interrupted: the analysis writes its files at the end; nothing was written") from None


def _analyze(cfg: DictConfig, out: Path, job_dir) -> dict:
    from coin_lightning.eval.engine.representations import collect_states, representation_figure, similarity_summary
    from coin_lightning.eval.reports.plots import save_png
    from coin_lightning.eval.reports.tables import markdown_table
    from coin_lightning.io import write_json, write_text

    settings = EvalSettings.from_config(cfg.eval)
    if settings.perturb_mode != "generated":
        raise EvalConfigError("analyze uses generated or file instructions: set eval.perturb_mode=generated")
    check_inputs(cfg)
    a = cfg.analyze
    check_analyze(a, settings, cfg.loss.pooling)
    fabric = _fabric(cfg)
    tasks = load_tasks(settings, cfg.data.root)
    iset = build_instruction_set(settings, [t.name for t in tasks])
    predictor, _ = _start(cfg, fabric, settings)
    job_dir.keep()
    states = collect_states(predictor, tasks, iset, int(a.rows), a.instruction_index, cfg.loss.pooling,
                            bool(cfg.data.append_eos))
    summary = similarity_summary(states)
    if not fabric.is_global_zero:
        return summary
    summary["run"] = {"model": cfg.model.name_or_path, "adapter": cfg.adapter, "rows": int(a.rows),
                      "pooling": cfg.loss.pooling, "append_eos": bool(cfg.data.append_eos),
                      "instruction_index": a.instruction_index, "projection": a.projection,
                      "tasks": [t.name for t in tasks], "instructions": iset.source}
    figure = representation_figure(states, a.projection, int(a.seed))
    body = [[lv, f"{v:.4f}"] for lv, v in summary["per_level"].items()] + [["**overall**", f"{summary['overall']:.4f}"]]
    text = ("# Representation analysis\n\nMean cosine similarity between the representations (loss.pooling="
            f"{cfg.loss.pooling}) of the same input under the clean and the perturbed instruction.\n\n" + markdown_table(["level", "cosine"], body))
    write_text(out / "analysis.md", text)
    save_png(figure, out / "representations.png")
    write_json(out / "analysis.json", summary)  # last: an analysis.json always has its plot
    Console().print(Markdown(text))
    Console().print(f"[bold]Outputs:[/bold] {out}")
    return summary
