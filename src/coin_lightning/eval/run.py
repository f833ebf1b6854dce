"""The evaluation procedure behind ``python -m coin_lightning.evaluate``.

tasks (seeded rows) x instruction set (file, or the default set with generated perturbations, or an
adversarial search) -> predictions (``generate`` / ``rank``) -> metrics -> files, plots, logger.
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coin_lightning.data.records import DataError
from coin_lightning.eval.engine.distributed import Parts
from coin_lightning.eval.engine.predict import Prediction, Predictor
from coin_lightning.eval.engine.tasks import EvalTask, load_task
from coin_lightning.eval.instructions.defaults import default_instruction_set
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.sets import Entry, InstructionError, InstructionSet, load_instruction_file
from coin_lightning.eval.reports.plots import accuracy_by_level_figure, clean_vs_perturbed_figure, log_results, save_png
from coin_lightning.eval.reports.tables import write_results
from coin_lightning.eval.scoring.metrics import FILES, fingerprint, summarize
from coin_lightning.eval.settings import EvalSettings
from coin_lightning.eval.task_files import load_task_files, load_task_rows, task_instruction_set


def load_tasks(settings: EvalSettings, data_root: str | None) -> list[EvalTask]:
    """Load and sample every task of ``eval.tasks`` (``eval.task_files``', the sources': ``tasks.load_task``).

    GLUE: a seeded sample of ``eval.samples_per_task`` validation rows (``data.root`` or the hub);
    ``mnli_mismatched`` is skipped with a logged note when its split is missing. Embedded tasks:
    ``eval.samples_per_task`` (300 when null) records of their ``test`` split, generated with
    ``eval.seed``; generation tasks use their distinct targets as label words.

    Raises:
        DataError: a missing required split, malformed rows, or no task left.
    """
    own = load_task_files(settings.task_files)
    n, seed = settings.samples_per_task, settings.seed
    tasks = [load_task_rows(own[name], n, seed) if name in own else load_task(name, data_root, n, seed)
             for name in settings.tasks]
    tasks = [t for t in tasks if t is not None]
    if not tasks:
        raise DataError("no evaluation task could be loaded (see the log)")
    return tasks


def perturb_config(settings: EvalSettings) -> PerturbConfig:
    """``eval.perturb`` (checked when the settings were built), limited to the perturbations of ``eval.levels``."""
    cfg = settings.perturb
    keep = tuple(p for p in cfg.perturbations if cfg.levels.get(p) in settings.levels)
    return dataclasses.replace(cfg, perturbations=keep)


def build_instruction_set(settings: EvalSettings, task_names: Sequence[str]) -> InstructionSet:
    """The instruction set to evaluate, restricted to ``eval.levels`` and the tasks.

    ``eval.instructions_file`` is used as written; otherwise the default set with the generated
    perturbations of ``eval.perturb`` (in adversarial mode: the clean and semantic instructions only;
    the search adds the rest).

    Raises:
        InstructionError: a bad file (unknown task or level, empty list ...), or a task without instructions.
    """
    cfg = perturb_config(settings)
    own = load_task_files(settings.task_files)
    builtin = [t for t in task_names if t not in own]
    if settings.instructions_file:
        iset = load_instruction_file(settings.instructions_file, level_map=cfg.levels)
    elif builtin:
        if settings.perturb_mode == "adversarial":
            cfg = dataclasses.replace(cfg, perturbations=())
        iset = default_instruction_set(cfg, tasks=builtin, source=settings.instructions)
    if own_tasks := [own[t] for t in task_names if t in own]:
        own_set = task_instruction_set(own_tasks, cfg)  # the task files' instructions, perturbed as the defaults are
        iset = own_set if not (settings.instructions_file or builtin) else iset.merged(own_set)
    iset = iset.select([p for p in iset.perturbations if iset.level(p) in settings.levels], task_names)
    if bare := [name for name in task_names if not any(iset.resolve_task(name, p) for p in iset.perturbations)]:
        raise InstructionError(f"{iset.source}: no instructions for task {bare[0]!r} at levels {settings.levels}")
    return iset


def prediction_rows(task: EvalTask, entry: Entry, preds: Sequence[Prediction]) -> list[dict]:
    """One JSON-able row per example (the ``predictions.jsonl`` schema)."""
    return [{
        "task": task.name, "category": task.category, "perturbation": entry.perturbation,
        "level": entry.level, "instruction_index": entry.index, "instruction": entry.instruction,
        "uid": rec.uid, "gold": gold, "gold_word": task.label_words[gold], "pred": p.pred,
        "pred_word": task.label_words[p.pred] if p.pred >= 0 else None, "answer": p.answer,
        "correct": p.pred == gold, "scores": p.scores,
    } for rec, gold, p in zip(task.records, task.golds, preds)]


class CachedPredictor:
    """Memoizes predictions per (rows, instruction): ``mnli`` and ``mnli_matched`` share rows, and a
    perturbation that leaves an instruction unchanged costs nothing."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.memo: dict[tuple[str, str], list[Prediction]] = {}  # one entry per model call

    def __call__(self, task: EvalTask, instruction: str) -> list[Prediction]:
        """Predictions for every row of ``task`` under ``instruction`` (computed once)."""
        key = (task.split_key + f"#{len(task.records)}", instruction)
        if key not in self.memo:
            self.memo[key] = self.predictor.predict(instruction, task.contents, task.label_words)
        return self.memo[key]


def probe_task(task: EvalTask, size: int, seed: int) -> EvalTask:
    """A seeded subset of ``size`` of ``task``'s rows, in order (the adversarial probe set)."""
    idx = sorted(random.Random(f"probe/{seed}/{task.split_key}").sample(range(len(task.records)), min(size, len(task.records))))
    return dataclasses.replace(
        task, records=[task.records[i] for i in idx], contents=[task.contents[i] for i in idx],
        golds=[task.golds[i] for i in idx], split_key=task.split_key + "/probe",
    )


def attack(settings: EvalSettings, base: InstructionSet, tasks: Sequence[EvalTask], predict: CachedPredictor,
           run_dir: str | Path, meta: dict) -> InstructionSet:
    """Adversarial instructions: attack every clean instruction with each perturbation of
    ``eval.perturb.perturbations`` (greedy search, ``eval.query_budget`` probe-set queries each;
    :func:`coin_lightning.eval.instructions.adversarial.attack_instruction_set`), scoring candidates with this
    model on ``eval.probe_size`` rows per task (a seeded subset of the evaluation rows, as PromptBench
    attacks on the evaluated data). The found set is saved as ``adversarial_instructions.yaml``."""
    from coin_lightning.eval.instructions.adversarial import attack_instruction_set

    probes = {t.name: probe_task(t, settings.probe_size, settings.seed) for t in tasks}

    def accuracy(task_name: str, instruction: str) -> float:
        probe = probes[task_name]
        preds = predict(probe, instruction)
        return sum(p.pred == g for p, g in zip(preds, probe.golds)) / len(probe.golds)

    identity = {k: meta.get(k) for k in ("model", "adapter", "prompt_format", "data_root")}  # not load_seconds
    key = {**identity, "method": settings.method, "probe_rows": {n: t.uids for n, t in probes.items()}}
    cache = Path(run_dir) / FILES["adversarial_instructions"]
    return attack_instruction_set(base, accuracy, perturb_config(settings), query_budget=settings.query_budget,
                                  tasks=[t.name for t in tasks], cache_path=cache, fingerprint=key)


def evaluate_tasks(tasks: Sequence[EvalTask], iset: InstructionSet, predict: CachedPredictor, progress: bool,
                   parts: Parts, finished: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """Predict every (task, instruction) of the set and return the prediction rows.

    Rows come task by task, level by level (in the set's order of levels). The rows of a (task,
    level) found in ``finished`` are taken from there; every other (task, level) is saved to
    ``parts`` as soon as its instructions are done.
    """
    from rich.progress import Progress

    plan: list[tuple[EvalTask, str, list[Entry]]] = []  # (task, level, its entries)
    for task in tasks:
        entries = iset.entries(task.name)
        plan += [(task, lv, [e for e in entries if e.level == lv]) for lv in dict.fromkeys(e.level for e in entries)]
    rows: list[dict] = []
    todo = sum(len(e) for t, lv, e in plan if (t.name, lv) not in finished)
    with Progress(transient=True, disable=not progress) as bar:
        job = bar.add_task("evaluating", total=todo)
        for task, level, entries in plan:
            if (part := finished.get((task.name, level))) is None:
                part = []
                for entry in entries:
                    bar.update(job, description=f"{task.name} / {entry.perturbation} #{entry.index}")
                    part.extend(prediction_rows(task, entry, predict(task, entry.instruction)))
                    bar.advance(job)
                parts.save(task.name, level, part)
            rows.extend(part)
    return rows


def run_evaluation(settings: EvalSettings, tasks: Sequence[EvalTask], iset: InstructionSet, predictor: Predictor,
                   run_dir: str | Path, meta: dict, loggers: Sequence[Any], *, parts: Parts, write: bool,
                   config: dict | None, log_step: int) -> dict:
    """Evaluate, then write every output into ``run_dir`` and send config, metrics, tables and figures
    to ``loggers``.

    Args:
        predictor: a :class:`Predictor` or a
            :class:`~coin_lightning.eval.engine.distributed.ShardedPredictor` (same interface).
        meta: the run's ``model``, ``adapter``, ``prompt_format``, ... (recorded in ``metrics["run"]``).
        parts: resume from its finished (task, level) parts and save the others as they finish
            (:class:`coin_lightning.eval.engine.distributed.Parts`).
        write: write files and show progress (``False`` on every process but rank 0); the metrics are
            returned either way.
        config: the resolved job config, for each logger's ``log_hyperparams`` (``None``: not logged).
        log_step: the step the scalars and figures are logged at.

    Returns:
        The metrics dict (also ``run_dir/metrics.json``).
    """
    start = time.perf_counter()
    predict = CachedPredictor(predictor)
    given = iset.to_dict()
    if settings.perturb_mode == "adversarial":
        given = {"base": given, "adversarial": {"query_budget": settings.query_budget, "probe_size": settings.probe_size,
                                                "perturb": perturb_config(settings).to_dict()}}
        # every rank takes part in the search and reads the same cache (identical writes are atomic)
        iset = attack(settings, iset, tasks, predict, run_dir, meta)
    # Every rank reads the finished parts itself: rank 0 cannot save a new one before the others have
    # read them (each part needs their predictions), so all ranks skip the same parts.
    finished = parts.finished()
    rows = evaluate_tasks(tasks, iset, predict, write, parts, finished)
    wall = time.perf_counter() - start
    metrics = summarize(rows, settings.levels)
    metrics["fingerprint"] = fingerprint({t.name: t.uids for t in tasks}, given)
    metrics["run"] = {
        **meta, "method": settings.method, "prefix_cache": settings.prefix_cache, "prompt_layout": settings.prompt_layout,
        "samples_per_task": settings.samples_per_task, "seed": settings.seed, "perturb_mode": settings.perturb_mode,
        "query_budget": settings.query_budget if settings.perturb_mode == "adversarial" else None,
        "instructions": iset.source, "eval_seconds": round(wall, 3), "n_predictions": len(rows),
        "model_calls": len(predict.memo), "resumed_parts": len(finished),
    }
    metrics["label_words"] = {t.name: list(t.label_words) for t in tasks}
    if not write:
        return metrics
    title = f"Evaluation of {meta['model']}" + (f" + {meta['adapter']}" if meta["adapter"] else "")
    write_results(run_dir, rows, metrics, title)
    figures = {"accuracy_by_level": accuracy_by_level_figure(metrics), "clean_vs_perturbed": clean_vs_perturbed_figure(metrics)}
    log_results(loggers, metrics, figures, config, log_step)
    save_png(figures["accuracy_by_level"], Path(run_dir) / FILES["accuracy_plot"])
    save_png(figures["clean_vs_perturbed"], Path(run_dir) / FILES["clean_vs_perturbed_plot"])
    return metrics
