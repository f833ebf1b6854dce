"""Sizing the study from the pilot: which tasks the model learns, and how many rows and seeds the
interval of CoIN minus continual tuning needs.

**Tasks** (:func:`task_floor`): a task is kept when every arm's clean accuracy (mean over the pilot's
seeds) beats the task's majority-class rate among the evaluated rows by ``margin`` points; otherwise it
is dropped with the reason. The floor is the lowest clean accuracy of an arm on a kept task.

**Power** (:func:`variance_components`, :func:`half_width`, :func:`plan`). The quantity is the paired
difference ``D`` of perturbed accuracy (treatment arm minus reference arm, the same seeds, rows and
instructions). Its estimate over ``S`` seeds, ``N`` rows (all tasks pooled) and ``I`` perturbed
instructions per task is modelled with three independent sources:

    Var(D) = s2_seed / S + s2_row / (S * N) + s2_instruction / I

- ``s2_row``: the variance across rows of a row's difference (its accuracy over the perturbed
  instructions, treatment minus reference) within one seed, averaged over the pilot's seeds (ddof=1);
- ``s2_seed``: the variance across seeds of the seed's mean difference, less the part the pilot's
  ``N0`` rows explain (``s2_row / N0``), floored at 0;
- ``s2_instruction``: the variance across perturbed instructions of an instruction's difference
  (averaged over seeds and rows), ddof=1. The instruction set is fixed, so this term sets a floor no
  number of rows or seeds removes.

The half-width of the normal interval is ``z * sqrt(Var(D))`` (``z`` = 1.96 at 95%). :func:`plan` takes
the fewest seeds (from ``min_seeds``: training is the expensive part) for which some number of rows
per task within ``max_rows_per_task`` reaches the target, and the fewest such rows:
``N >= s2_row / (S * ((h / z)^2 - s2_seed / S - s2_instruction / I))``. The comparison itself
(``compare --sweep``) uses the hierarchical bootstrap over seeds, rows and instructions; this model
only sizes it.
"""
from __future__ import annotations

import gzip
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

CLEAN = "clean"


@dataclass
class VarianceComponents:
    """Variance components of the paired difference of perturbed accuracy (fractions squared)."""

    seed: float
    """Between-seed variance of a seed's mean difference, net of row sampling."""
    row: float
    """Within-seed variance across rows of a row's difference."""
    instruction: float
    """Variance across perturbed instructions of an instruction's difference."""
    n_seeds: int
    """Seeds in the pilot."""
    n_rows: int
    """Rows in the pilot (all tasks)."""
    n_instructions: int
    """Perturbed instructions per task in the pilot's set."""


def _mean_by(rows: Sequence[dict], key) -> dict:
    acc: dict = defaultdict(list)
    for r in rows:
        acc[key(r)].append(float(r["pred"] == r["gold"]))
    return {k: statistics.fmean(v) for k, v in acc.items()}


def paired_differences(treatment: Sequence[Sequence[dict]], reference: Sequence[Sequence[dict]]):
    """Row and instruction differences of perturbed accuracy from two arms' prediction rows.

    Args:
        treatment, reference: per seed (paired by position), the ``predictions.jsonl`` rows of a job.

    Returns:
        ``(per_seed_rows, per_instruction)``: for each seed, ``{(task, uid): difference}`` (a row's
        accuracy over the perturbed instructions); and ``{(task, perturbation, index): difference}``
        averaged over seeds and rows.

    Raises:
        ValueError: different numbers of seeds, or jobs that scored different rows or instructions.
    """
    if len(treatment) != len(reference) or not treatment:
        raise ValueError(f"paired seeds needed: {len(treatment)} treatment and {len(reference)} reference jobs")
    per_seed, per_inst = [], defaultdict(list)
    for t_rows, r_rows in zip(treatment, reference):
        t = [r for r in t_rows if r["level"] != CLEAN]
        r = [x for x in r_rows if x["level"] != CLEAN]
        row_key = lambda x: (x["task"], x["uid"])  # noqa: E731
        inst_key = lambda x: (x["task"], x["perturbation"], x["instruction_index"])  # noqa: E731
        tr, rr = _mean_by(t, row_key), _mean_by(r, row_key)
        ti, ri = _mean_by(t, inst_key), _mean_by(r, inst_key)
        if tr.keys() != rr.keys() or ti.keys() != ri.keys():
            raise ValueError("the two arms scored different rows or instructions")
        per_seed.append({k: tr[k] - rr[k] for k in tr})
        for k in ti:
            per_inst[k].append(ti[k] - ri[k])
    return per_seed, {k: statistics.fmean(v) for k, v in per_inst.items()}


def variance_components(per_seed_rows: Sequence[dict], per_instruction: dict) -> VarianceComponents:
    """Method-of-moments estimates of the components (module docstring) from
    :func:`paired_differences`. With one seed, ``seed`` is 0 (not estimable); with one row or one
    instruction, that component is 0."""
    n_rows = len(per_seed_rows[0])
    row = statistics.fmean(statistics.variance(d.values()) if len(d) > 1 else 0.0 for d in per_seed_rows)
    means = [statistics.fmean(d.values()) for d in per_seed_rows]
    seed = max(0.0, statistics.variance(means) - row / n_rows) if len(means) > 1 else 0.0
    inst = list(per_instruction.values())
    instruction = statistics.variance(inst) if len(inst) > 1 else 0.0
    tasks = {k[0] for k in per_instruction}
    return VarianceComponents(seed, row, instruction, len(per_seed_rows), n_rows, max(1, len(inst) // max(1, len(tasks))))


def half_width(vc: VarianceComponents, seeds: int, rows: int, instructions: int, confidence: float = 0.95) -> float:
    """Half-width of the normal ``confidence`` interval of the difference (fraction) for ``seeds``
    seeds, ``rows`` rows in all and ``instructions`` perturbed instructions per task."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return z * math.sqrt(vc.seed / seeds + vc.row / (seeds * rows) + vc.instruction / instructions)


def plan(vc: VarianceComponents, target: float, tasks: int, min_seeds: int = 3, max_seeds: int = 10,
         max_rows_per_task: int = 300, confidence: float = 0.95) -> dict:
    """The fewest seeds, then rows per task, whose interval half-width is at most ``target``.

    Args:
        target: the half-width wanted (fraction, e.g. 0.015 for 1.5 points).
        tasks: tasks in the study (rows are drawn per task).

    Returns:
        ``{"seeds", "rows_per_task", "half_width", "feasible", "components"}``; when no size within the
        limits reaches the target: the largest (``max_seeds``, ``max_rows_per_task``) and ``feasible`` false.
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    for s in range(min_seeds, max_seeds + 1):
        room = (target / z) ** 2 - vc.seed / s - vc.instruction / vc.n_instructions
        if room <= 0:
            continue
        per_task = max(1, math.ceil(vc.row / (s * room) / tasks))
        if per_task <= max_rows_per_task:
            return {"seeds": s, "rows_per_task": per_task, "feasible": True, "components": asdict(vc),
                    "half_width": half_width(vc, s, per_task * tasks, vc.n_instructions, confidence)}
    return {"seeds": max_seeds, "rows_per_task": max_rows_per_task, "feasible": False, "components": asdict(vc),
            "half_width": half_width(vc, max_seeds, max_rows_per_task * tasks, vc.n_instructions, confidence)}


def majority_rate(rows: Sequence[dict]) -> dict[str, float]:
    """Per task, the share of its evaluated rows whose gold label is the most frequent one."""
    golds: dict = defaultdict(dict)
    for r in rows:
        golds[r["task"]][r["uid"]] = r["gold"]
    out = {}
    for task, by_uid in golds.items():
        counts = defaultdict(int)
        for g in by_uid.values():
            counts[g] += 1
        out[task] = max(counts.values()) / len(by_uid)
    return out


def task_floor(clean: dict[str, dict[str, float]], majority: dict[str, float], margin: float) -> dict:
    """Which tasks to keep (module docstring).

    Args:
        clean: ``{task: {arm: clean accuracy}}`` (fractions, mean over seeds).
        majority: ``{task: majority-class rate}``.
        margin: points (fraction) above the majority rate every arm must reach.

    Returns:
        ``{"kept": [task], "dropped": {task: reason}, "floor": lowest kept clean accuracy or None,
        "majority": majority, "clean": clean}``.
    """
    kept, dropped = [], {}
    for task, by_arm in clean.items():
        arm, acc = min(by_arm.items(), key=lambda kv: kv[1])
        need = majority[task] + margin
        if acc >= need:
            kept.append(task)
        else:
            dropped[task] = (f"clean accuracy {100 * acc:.1f}% ({arm}) is below the majority-class rate "
                             f"{100 * majority[task]:.1f}% + {100 * margin:g} points: not learned above chance")
    floor = min((min(clean[t].values()) for t in kept), default=None)
    return {"kept": kept, "dropped": dropped, "floor": floor, "majority": majority, "clean": clean}


def clean_accuracy(rows: Sequence[dict]) -> dict[str, float]:
    """Per task, the accuracy (0-1) of prediction rows under the clean instructions."""
    acc: dict = {}
    for r in rows:
        if r["level"] == CLEAN:
            acc.setdefault(r["task"], []).append(float(r["pred"] == r["gold"]))
    return {t: sum(v) / len(v) for t, v in acc.items()}


def mean_clean_accuracy(runs: Sequence[Sequence[dict]]) -> dict[str, float]:
    """Per task, :func:`clean_accuracy` averaged over ``runs`` (one list of prediction rows per seed)."""
    per_seed: dict = {}
    for rows in runs:
        for task, acc in clean_accuracy(rows).items():
            per_seed.setdefault(task, []).append(acc)
    return {t: sum(v) / len(v) for t, v in per_seed.items()}


def size_from_pilot(by_arm: dict[str, list[list[dict]]], margin: float, half_width_points: float, confidence: float,
                    min_seeds: int, max_seeds: int, max_rows_per_task: int) -> dict:
    """The tasks kept and the sweep's sizes from the pilot's predictions.

    Args:
        by_arm: per arm (the first is the reference), the prediction rows of each pilot seed (same seed order).
        margin: :func:`task_floor`'s margin (0-1); the other arguments are ``study.yaml``'s ``power`` keys.

    Returns:
        ``{"tasks": task_floor(...), "plans": {"<arm> - <reference>": plan(...)}, "chosen": {"seeds",
        "rows_per_task", "feasible"}}`` (the largest sizes over the arms); no ``plans`` when no task is kept.
    """
    names = list(by_arm)
    clean: dict = {}
    for arm, runs in by_arm.items():
        for task, acc in mean_clean_accuracy(runs).items():
            clean.setdefault(task, {})[arm] = acc
    tasks = task_floor(clean, majority_rate(by_arm[names[0]][0]), margin)
    if not tasks["kept"]:
        return {"tasks": tasks}
    keep = set(tasks["kept"])

    def only(runs):
        return [[r for r in rows if r["task"] in keep] for rows in runs]

    plans = {}
    for arm in names[1:]:
        vc = variance_components(*paired_differences(only(by_arm[arm]), only(by_arm[names[0]])))
        plans[f"{arm} - {names[0]}"] = plan(vc, half_width_points / 100, len(keep), min_seeds, max_seeds,
                                            max_rows_per_task, confidence)
    chosen = {"seeds": max(x["seeds"] for x in plans.values()),
              "rows_per_task": max(x["rows_per_task"] for x in plans.values()),
              "feasible": all(x["feasible"] for x in plans.values())}
    return {"tasks": tasks, "plans": plans, "chosen": chosen}


def screen(job_dirs: Sequence[str], margin: float) -> dict:
    """:func:`task_floor` of one arm's committed jobs (``<dir>/predictions.jsonl.gz``, one per seed): the
    screen that chose ``study.yaml``'s candidate tasks.

    Raises:
        FileNotFoundError: a directory without ``predictions.jsonl.gz``.
    """
    runs = []
    for d in job_dirs:
        with gzip.open(Path(d) / "predictions.jsonl.gz", "rt", encoding="utf-8") as f:
            runs.append([json.loads(line) for line in f if line.strip()])
    clean = {t: {"screen": acc} for t, acc in mean_clean_accuracy(runs).items()}
    return {"jobs": [str(d) for d in job_dirs], "margin_points": 100 * margin,
            **task_floor(clean, majority_rate(runs[0]), margin)}


if __name__ == "__main__":  # python -m experiments.robustness_study.power OUT.json JOB_DIR... (the task screen)
    import sys

    from omegaconf import OmegaConf

    from coin_lightning.io import write_json

    margin = OmegaConf.load(Path(__file__).with_name("study.yaml")).pilot.margin_points / 100  # the pilot's margin
    write_json(sys.argv[1], screen(sys.argv[2:], margin))
