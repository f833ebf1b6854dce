"""Running an evaluation job (:class:`~coin_lightning.eval.settings.EvalJob`, parsed from ``conf/eval.yaml`` by
``coin_lightning.evaluate``, or from a training run's ``evaluation`` node by ``coin_lightning.train``)."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from coin_lightning.errors import reported
from coin_lightning.eval.engine.distributed import (
    PARTS_DIR,
    Parts,
    ProcessesLost,
    ShardedPredictor,
    check_not_multirun,
    fabric_from_trainer,
    part_key,
    prepare_model,
)
from coin_lightning.eval.engine.predict import Predictor
from coin_lightning.eval.engine.representations import PROJECTIONS, collect_states, similarity_summary
from coin_lightning.eval.reports.tables import markdown_table
from coin_lightning.eval.run import build_instruction_set, load_tasks, run_evaluation
from coin_lightning.eval.scoring.metrics import FILES, fingerprint
from coin_lightning.eval.settings import EvalConfigError, EvalJob
from coin_lightning.io import write_json, write_text
from coin_lightning.losses import POOLINGS
from coin_lightning.model.checks import check_adapter
from coin_lightning.model.lora import load_for_inference
from coin_lightning.training.loggers import finish_wandb, instantiate_group


def _start(job: EvalJob, fabric):
    """Launch Fabric's processes, then load the model onto its device: ``(sharded predictor, seconds)``."""
    fabric.launch()
    t0 = time.perf_counter()
    model, tokenizer = load_for_inference(job.model, job.adapter)
    s = job.settings
    predictor = Predictor(prepare_model(fabric, model), tokenizer, job.prompt_format, method=s.method,
                          batch_size=s.batch_size, max_new_tokens=s.max_new_tokens, prefix_cache=s.prefix_cache,
                          decode_batch_size=s.decode_batch_size, prompt_layout=s.prompt_layout)
    return ShardedPredictor(fabric, predictor), time.perf_counter() - t0


def check(job: EvalJob) -> tuple:
    """Validate an evaluation job without loading a model: the adapters (``model.adapter`` and ``adapter``
    are adapters of ``model``), the ``trainer``, the rows of every task and the instruction set.

    Returns:
        ``(settings, fabric, tasks, instruction set)``; the Fabric is not launched.

    Raises:
        UserError: bad settings or input (one-line messages: EvalConfigError, InstructionError,
            DataError, ModelLoadError, WordNetMissing).
    """
    for key, path in (("model.adapter", job.model.adapter), ("adapter", job.adapter)):
        if path:
            check_adapter(str(path), job.model, key=key)
    fabric = fabric_from_trainer(job.trainer)
    check_not_multirun(fabric)
    tasks = load_tasks(job.settings, job.data_root)
    iset = build_instruction_set(job.settings, [t.name for t in tasks])
    return job.settings, fabric, tasks, iset


def evaluate(job: EvalJob, loggers: list | None = None, log_step: int = 0) -> dict:
    """Run one evaluation job.

    Validates settings, rows, instructions, the ``trainer`` and earlier parts in the output directory
    before loading the model (:func:`check`); runs on the ``trainer``'s devices
    (:mod:`coin_lightning.eval.engine.distributed`); saves each finished (task, level) under ``parts/`` and
    resumes from them (:class:`coin_lightning.eval.engine.distributed.Parts`); rank 0 writes every output into ``job.output_dir``.

    Args:
        job: the typed job (model, adapter, prompt format, data root, settings, trainer, loggers, output).
        loggers: send the results to these loggers (a training run's, which hold its config already)
            instead of instantiating ``job.logger`` and logging ``job.config`` to them.
        log_step: the step the scalars are logged at (a training run's last global step).

    Returns:
        The metrics dict (on every rank).

    Raises:
        SystemExit: a one-line message for configuration, instruction-file, data and model errors (the
            job directory is removed when nothing was evaluated, so no half-written run remains), and
            for Ctrl-C (and SIGTERM under :func:`~coin_lightning.eval.engine.distributed.sigterm_as_interrupt`,
            as the entry point runs it): the finished parts are kept.
    """
    out = Path(job.output_dir)
    rank0 = True
    with reported(out) as job_dir:
        try:
            settings, fabric, tasks, iset = check(job)
            meta = {"model": job.model.name_or_path, "adapter": job.adapter, "prompt_format": job.prompt_format,
                    "data_root": job.data_root}
            parts = Parts(out, part_key(settings, fingerprint({t.name: t.uids for t in tasks}, iset.to_dict()), meta))
            parts.check()
            predictor, load_s = _start(job, fabric)
            parts.write = rank0 = fabric.is_global_zero
            config = job.config if loggers is None else None  # a training run's loggers hold its config already
            if not rank0:
                loggers = []
            elif loggers is None:
                loggers = instantiate_group(job.logger)
            job_dir.keep()  # predictions start: finished parts stay for a resume
            meta.update(load_seconds=round(load_s, 3), devices=fabric.world_size)
            metrics = run_evaluation(settings, tasks, iset, predictor, out, meta, loggers, parts=parts, write=rank0,
                                     config=config, log_step=log_step)
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


def analyze(job: EvalJob) -> dict:
    """Run the representation analysis of a job parsed from ``analyze.yaml``.

    Writes ``analysis.json`` (mean cosine similarity overall / per level / perturbation / task),
    ``analysis.md`` and ``representations.png`` into ``job.output_dir``.

    Returns:
        The similarity summary (:func:`coin_lightning.eval.engine.representations.similarity_summary`).

    Raises:
        SystemExit: one-line message for configuration, data and model errors, and for Ctrl-C.
    """
    out = Path(job.output_dir)
    with reported(out) as job_dir:
        try:
            return _analyze(job, out, job_dir)
        except ProcessesLost as exc:
            raise SystemExit(f"error: {exc}") from None
        except KeyboardInterrupt:
            raise SystemExit("interrupted: the analysis writes its files at the end; nothing was written") from None


def _analyze(job: EvalJob, out: Path, job_dir) -> dict:
    """:func:`analyze` in its job directory; first checks the ``analyze`` keys.

    Raises:
        EvalConfigError: ``eval.perturb_mode`` not ``generated``, unknown ``analyze.projection`` (or ``umap``
            without umap-learn installed), ``analyze.rows`` < 2, ``eval.levels`` without ``clean`` (the
            reference of every pair), or an unknown ``loss.pooling``.
    """
    from coin_lightning.eval.reports.plots import representation_figure, save_png  # looked up when called

    if job.settings.perturb_mode != "generated":
        raise EvalConfigError("analyze uses generated or file instructions: set eval.perturb_mode=generated")
    a = job.analyze
    projection, rows = a.get("projection"), a.get("rows")
    if projection not in PROJECTIONS:
        raise EvalConfigError(f"analyze.projection={projection!r} is not one of {', '.join(PROJECTIONS)}")
    if projection == "umap" and importlib.util.find_spec("umap") is None:
        raise EvalConfigError("analyze.projection=umap needs umap-learn, the analyze extra (pip install umap-learn, or '.[analyze]' from a clone), or set analyze.projection=pca")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 2:
        raise EvalConfigError(f"analyze.rows={rows!r} must be an integer >= 2")
    if "clean" not in job.settings.levels:
        raise EvalConfigError("analyze compares each perturbed instruction with its clean one: keep clean in eval.levels")
    if job.pooling not in POOLINGS:
        raise EvalConfigError(f"loss.pooling={job.pooling!r} is unknown; choose one of {', '.join(POOLINGS)}")
    _, fabric, tasks, iset = check(job)
    predictor, _ = _start(job, fabric)
    job_dir.keep()
    states = collect_states(predictor, tasks, iset, rows, a.get("instruction_index"), job.pooling, job.append_eos)
    summary = similarity_summary(states)
    if not fabric.is_global_zero:
        return summary
    summary["run"] = {"model": job.model.name_or_path, "adapter": job.adapter, "rows": rows,
                      "pooling": job.pooling, "append_eos": job.append_eos,
                      "instruction_index": a.get("instruction_index"), "projection": a["projection"],
                      "tasks": [t.name for t in tasks], "instructions": iset.source}
    figure = representation_figure(states, a["projection"], int(a.get("seed", 0)))
    body = [[lv, f"{v:.4f}"] for lv, v in summary["per_level"].items()] + [["**overall**", f"{summary['overall']:.4f}"]]
    text = ("# Representation analysis\n\nMean cosine similarity between the representations (loss.pooling="
            f"{job.pooling}) of the same input under the clean and the perturbed instruction.\n\n" + markdown_table(["level", "cosine"], body))
    write_text(out / "analysis.md", text)
    save_png(figure, out / "representations.png")
    write_json(out / "analysis.json", summary)  # last: an analysis.json always has its plot
    Console().print(Markdown(text))
    Console().print(f"[bold]Outputs:[/bold] {out}")
    return summary
