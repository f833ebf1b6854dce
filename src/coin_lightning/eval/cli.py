"""Wiring a composed ``conf/eval.yaml`` into an evaluation run (called by ``coin_lightning.evaluate``)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markdown import Markdown

from coin_lightning.errors import exit_if_user_error
from coin_lightning.eval.predict import Predictor
from coin_lightning.eval.report import FILES
from coin_lightning.eval.run import build_instruction_set, load_tasks, run_evaluation
from coin_lightning.eval.settings import EvalConfigError, EvalSettings
from coin_lightning.model.lora import load_for_inference
from coin_lightning.outputs import JobDir
from coin_lightning.training.loggers import finish_wandb

log = logging.getLogger(__name__)


def instantiate_loggers(node: Any) -> list[Any]:
    """Instantiate every ``_target_`` entry of the ``logger`` group mapping (``csv``, ``tensorboard``, ...)."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def check_inputs(cfg: DictConfig) -> None:
    """Check, before the model loads: required values (``???``), ``prompt_format``, ``model`` and ``adapter``.

    Raises:
        ConfigError, EvalConfigError, ModelLoadError: one line naming the key.
    """
    from coin_lightning.config_types import check_required
    from coin_lightning.data.prompts import PROMPT_FORMATS
    from coin_lightning.model.checks import check_adapter, model_args

    check_required(cfg)
    if cfg.prompt_format not in PROMPT_FORMATS:
        raise EvalConfigError(f"prompt_format={cfg.prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
    args = model_args(cfg.model)
    for key, path in (("model.adapter", args.adapter), ("adapter", cfg.adapter)):
        if path:
            check_adapter(str(path), args, key=key)


def check_analyze(node: DictConfig, settings: EvalSettings) -> None:
    """Check the ``analyze`` keys before any representation is computed.

    Raises:
        EvalConfigError: unknown ``analyze.projection`` (or ``umap`` without umap-learn installed),
            ``analyze.rows`` < 2, or ``eval.levels`` without ``clean`` (the reference of every pair).
    """
    import importlib.util

    from coin_lightning.eval.representations import PROJECTIONS

    if node.projection not in PROJECTIONS:
        raise EvalConfigError(f"analyze.projection={node.projection!r} is not one of {', '.join(PROJECTIONS)}")
    if node.projection == "umap" and importlib.util.find_spec("umap") is None:
        raise EvalConfigError("analyze.projection=umap needs umap-learn (pip install umap-learn), or set analyze.projection=pca")
    if not isinstance(node.rows, int) or isinstance(node.rows, bool) or node.rows < 2:
        raise EvalConfigError(f"analyze.rows={node.rows!r} must be an integer >= 2")
    if "clean" not in settings.levels:
        raise EvalConfigError("analyze compares each perturbed instruction with its clean one: keep clean in eval.levels")


def evaluate(cfg: DictConfig) -> dict:
    """Run one evaluation job from a composed ``eval.yaml`` config.

    Validates settings, rows and instructions before loading the model; writes every output into
    ``cfg.output_dir``.

    Returns:
        The metrics dict.

    Raises:
        SystemExit: a one-line message for configuration, instruction-file, data and model errors
            (:func:`coin_lightning.errors.exit_if_user_error`); while nothing was evaluated, what the
            job wrote is removed (:meth:`coin_lightning.outputs.JobDir.discard`), never what was there.
    """
    out = Path(cfg.output_dir)
    job_dir, started = JobDir(out), False
    try:
        settings = EvalSettings.from_config(cfg.eval)
        check_inputs(cfg)
        tasks = load_tasks(settings, cfg.data.root)
        iset = build_instruction_set(settings, [t.name for t in tasks])
        t0 = time.perf_counter()
        model, tokenizer = load_for_inference(cfg.model, cfg.adapter)
        load_s = time.perf_counter() - t0
        predictor = Predictor(model, tokenizer, cfg.prompt_format, settings.method, settings.batch_size,
                              settings.max_new_tokens, settings.prefix_cache, settings.decode_batch_size)
        loggers = instantiate_loggers(cfg.get("logger"))
        started = True
        meta = {"model": cfg.model.name_or_path, "adapter": cfg.adapter, "prompt_format": cfg.prompt_format,
                "data_root": cfg.data.root, "load_seconds": round(load_s, 3),
                "config": OmegaConf.to_container(cfg, resolve=True)}
        metrics = run_evaluation(settings, tasks, iset, predictor, out, meta, loggers)
        Console().print(Markdown((out / FILES["markdown"]).read_text(encoding="utf-8")))
        Console().print(f"[bold]Outputs:[/bold] {out}")
        return metrics
    except Exception as exc:
        if not started:
            job_dir.discard()
        exit_if_user_error(exc)
    finally:
        finish_wandb()


def analyze(cfg: DictConfig) -> dict:
    """Run the representation analysis from a composed ``analyze.yaml`` config.

    Writes ``analysis.json`` (mean cosine similarity overall / per level / perturbation / task),
    ``analysis.md`` and ``representations.png`` into ``cfg.output_dir``.

    Returns:
        The similarity summary (:func:`coin_lightning.eval.representations.similarity_summary`).

    Raises:
        SystemExit: one-line message for configuration, data and model errors.
    """
    from coin_lightning.eval.plots import save_png
    from coin_lightning.eval.report import markdown_table
    from coin_lightning.eval.representations import collect_states, representation_figure, similarity_summary
    from coin_lightning.io import write_json, write_text

    out = Path(cfg.output_dir)
    job_dir, started = JobDir(out), False
    try:
        settings = EvalSettings.from_config(cfg.eval)
        if settings.perturb_mode != "generated":
            raise EvalConfigError("analyze uses generated or file instructions: set eval.perturb_mode=generated")
        check_inputs(cfg)
        check_analyze(cfg.analyze, settings)
        tasks = load_tasks(settings, cfg.data.root)
        iset = build_instruction_set(settings, [t.name for t in tasks])
        model, tokenizer = load_for_inference(cfg.model, cfg.adapter)
        predictor = Predictor(model, tokenizer, cfg.prompt_format, batch_size=settings.batch_size,
                              prefix_cache=settings.prefix_cache)
        started = True
        a = cfg.analyze
        states = collect_states(predictor, tasks, iset, int(a.rows), a.instruction_index)
        summary = similarity_summary(states)
        summary["run"] = {"model": cfg.model.name_or_path, "adapter": cfg.adapter, "rows": int(a.rows),
                          "instruction_index": a.instruction_index, "projection": a.projection,
                          "tasks": [t.name for t in tasks], "instructions": iset.source}
        save_png(representation_figure(states, a.projection, int(a.seed)), out / "representations.png")
        body = [[lv, f"{v:.4f}"] for lv, v in summary["per_level"].items()] + [["**overall**", f"{summary['overall']:.4f}"]]
        text = ("# Representation analysis\n\nMean cosine similarity between the last-token representations of the "
                "same input under the clean and the perturbed instruction.\n\n" + markdown_table(["level", "cosine"], body))
        write_text(out / "analysis.md", text)
        write_json(out / "analysis.json", summary)  # last: an analysis.json always has its plot
        Console().print(Markdown(text))
        Console().print(f"[bold]Outputs:[/bold] {out}")
        return summary
    except Exception as exc:
        if not started:
            job_dir.discard()
        exit_if_user_error(exc)
