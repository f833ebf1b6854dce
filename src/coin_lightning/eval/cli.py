"""Wiring a composed ``conf/eval.yaml`` into an evaluation run (called by ``coin_lightning.evaluate``)."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markdown import Markdown

from coin_lightning.data.records import DataError
from coin_lightning.eval.instructions import InstructionError
from coin_lightning.eval.perturb.word import WordNetMissing
from coin_lightning.eval.predict import Predictor
from coin_lightning.eval.report import FILES, RunDirError
from coin_lightning.eval.run import build_instruction_set, load_tasks, run_evaluation
from coin_lightning.eval.settings import EvalConfigError, EvalSettings
from coin_lightning.model.loading import ModelLoadError
from coin_lightning.model.lora import load_for_inference
from coin_lightning.training.loggers import finish_wandb

log = logging.getLogger(__name__)

USER_ERRORS = (EvalConfigError, InstructionError, DataError, ModelLoadError, RunDirError, WordNetMissing)
"""Errors caused by the configuration or the input: reported in one line, without a traceback."""


def instantiate_loggers(node: Any) -> list[Any]:
    """Instantiate every ``_target_`` entry of the ``logger`` group mapping (``csv``, ``tensorboard``, ...)."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def _remove_empty_run_dir(out: Path) -> None:
    """Delete a job directory that holds nothing but Hydra's records (``.hydra``, ``*.log``)."""
    if out.is_dir() and out.resolve() != Path.cwd().resolve():
        if all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)


def evaluate(cfg: DictConfig) -> dict:
    """Run one evaluation job from a composed ``eval.yaml`` config.

    Validates settings, rows and instructions before loading the model; writes every output into
    ``cfg.output_dir``.

    Returns:
        The metrics dict.

    Raises:
        SystemExit: a one-line message for configuration, instruction-file, data and model errors;
            the job directory is removed when nothing was evaluated, so no half-written run remains.
    """
    out = Path(cfg.output_dir)
    started = False
    try:
        settings = EvalSettings.from_config(cfg.eval)
        tasks = load_tasks(settings, cfg.data.root)
        iset = build_instruction_set(settings, [t.name for t in tasks])
        t0 = time.perf_counter()
        model, tokenizer = load_for_inference(cfg.model, cfg.adapter)
        load_s = time.perf_counter() - t0
        predictor = Predictor(model, tokenizer, cfg.prompt_format, settings.method, settings.batch_size,
                              settings.max_new_tokens, settings.prefix_cache, settings.decode_batch_size,
                              prompt_layout=settings.prompt_layout)
        loggers = instantiate_loggers(cfg.get("logger"))
        started = True
        meta = {"model": cfg.model.name_or_path, "adapter": cfg.adapter, "prompt_format": cfg.prompt_format,
                "data_root": cfg.data.root, "load_seconds": round(load_s, 3),
                "config": OmegaConf.to_container(cfg, resolve=True)}
        metrics = run_evaluation(settings, tasks, iset, predictor, out, meta, loggers)
        Console().print(Markdown((out / FILES["markdown"]).read_text(encoding="utf-8")))
        Console().print(f"[bold]Outputs:[/bold] {out}")
        return metrics
    except USER_ERRORS as exc:
        if not started:
            _remove_empty_run_dir(out)
        raise SystemExit(f"error: {exc}") from None
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
    started = False
    try:
        settings = EvalSettings.from_config(cfg.eval)
        if settings.perturb_mode != "generated":
            raise EvalConfigError("analyze uses generated or file instructions: set eval.perturb_mode=generated")
        tasks = load_tasks(settings, cfg.data.root)
        iset = build_instruction_set(settings, [t.name for t in tasks])
        model, tokenizer = load_for_inference(cfg.model, cfg.adapter)
        predictor = Predictor(model, tokenizer, cfg.prompt_format, batch_size=settings.batch_size,
                              prefix_cache=settings.prefix_cache, prompt_layout=settings.prompt_layout)
        started = True
        a = cfg.analyze
        states = collect_states(predictor, tasks, iset, int(a.rows), a.instruction_index)
        summary = similarity_summary(states)
        summary["run"] = {"model": cfg.model.name_or_path, "adapter": cfg.adapter, "rows": int(a.rows),
                          "instruction_index": a.instruction_index, "projection": a.projection,
                          "tasks": [t.name for t in tasks], "instructions": iset.source}
        write_json(out / "analysis.json", summary)
        body = [[lv, f"{v:.4f}"] for lv, v in summary["per_level"].items()] + [["**overall**", f"{summary['overall']:.4f}"]]
        text = ("# Representation analysis\n\nMean cosine similarity between the last-token representations of the "
                "same input under the clean and the perturbed instruction.\n\n" + markdown_table(["level", "cosine"], body))
        write_text(out / "analysis.md", text)
        save_png(representation_figure(states, a.projection, int(a.seed)), out / "representations.png")
        Console().print(Markdown(text))
        Console().print(f"[bold]Outputs:[/bold] {out}")
        return summary
    except (*USER_ERRORS, ValueError) as exc:
        if not started:
            _remove_empty_run_dir(out)
        raise SystemExit(f"error: {exc}") from None
