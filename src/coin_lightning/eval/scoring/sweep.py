"""Comparing the arms of a Hydra multirun across training seeds (``compare --sweep``).

A sweep such as ``python -m coin_lightning.train -m loss.lambda=0,1000 seed=1,2,3`` (with the
evaluation written by every job) leaves one job directory per (arm, seed). Each job directory holds
``.hydra/overrides.yaml`` and the evaluation outputs (``predictions.jsonl``, ``metrics.json``),
either in the job directory itself (an ``evaluate`` job, or a training job that evaluates into its
run directory) or in its ``eval/`` subdirectory (:func:`results_dir`).

Jobs are grouped into *arms* by their overrides other than the seed key (``seed``): the overrides
that differ between arms name them (e.g. ``loss.lambda=0``). Per arm: the mean and the sample std
(``ddof=1``) over seeds of accuracy per level, category and (task, level), of PDR and of
consistency (:func:`coin_lightning.eval.scoring.metrics.consistency`), and a bootstrap interval of the
arm's seed-mean accuracy. Per arm other than the reference (the first arm, or ``reference``): the
difference from the reference and the robustness effect (the arm's drop from clean minus the
reference's) with a hierarchical bootstrap over seeds, rows and instructions
(:func:`coin_lightning.eval.scoring.bootstrap.hierarchical_bootstrap`), twice: with seeds paired (seed
``s`` of the arm against seed ``s`` of the reference) and with each arm's seeds drawn independently.
Pairing is justified when seed ``s`` gives both arms the same data order and LoRA initialisation,
which :func:`seed_pairing` states from the overrides: it holds when the arms differ in ``loss.*``
keys only (the seed alone draws the data order and the initialisation).
"""
from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coin_lightning.eval.scoring.bootstrap import RESAMPLE_UNITS, correctness, hierarchical_bootstrap, read_predictions
from coin_lightning.eval.scoring.comparison import (
    ComparisonError,
    check_comparable,
    job_dirs,
    read_overrides,
    varying_keys,
)
from coin_lightning.eval.scoring.metrics import CLEAN, FILES, RunDirError, consistency, read_metrics

SEED_KEY = "seed"
"""The override that tells the seeds of one arm apart (``--seed-key``)."""

EVAL_SUBDIR = "eval"
"""Subdirectory of a job directory that may hold its evaluation outputs."""


@dataclass
class Job:
    """One evaluated job of a sweep (its predictions reduced to what the comparison needs)."""

    path: Path
    """The Hydra job directory."""
    results: Path
    """The directory holding ``metrics.json`` and ``predictions.jsonl`` (the job's or its ``eval/``)."""
    overrides: dict
    """The job's Hydra overrides, ``key -> value``."""
    seed: object
    """The value of the seed override (``None`` when the job has none)."""
    metrics: dict
    """``metrics.json``."""
    cells: dict
    """:func:`coin_lightning.eval.scoring.bootstrap.correctness` of its predictions."""
    consistency: dict
    """:func:`coin_lightning.eval.scoring.metrics.consistency` of its predictions."""


def results_dir(job: str | Path) -> Path:
    """Where a job's evaluation outputs are: the job directory, else its ``eval/`` subdirectory.

    Raises:
        RunDirError: neither holds ``metrics.json``.
    """
    job = Path(job)
    for d in (job, job / EVAL_SUBDIR):
        if (d / FILES["metrics"]).is_file():
            return d
    raise RunDirError(f"{job}: no {FILES['metrics']} in the job directory or its {EVAL_SUBDIR}/ "
                      "(the job did not evaluate, or has not finished)")


def load_job(path: Path, seed_key: str = SEED_KEY) -> Job:
    """Read one job: overrides, metrics, predictions (reduced to correctness and consistency).

    Raises:
        RunDirError: no overrides, no results, or unreadable predictions (file named).
        ComparisonError: predictions with holes (a row not scored under every instruction).
    """
    overrides = read_overrides(path)
    res = results_dir(path)
    metrics = read_metrics(res)
    rows = read_predictions(res)
    try:
        cells, cons = correctness(rows), consistency(rows)
    except ValueError as exc:
        raise ComparisonError(f"{res / FILES['predictions']}: {exc}") from None
    return Job(path, res, overrides, overrides.pop(seed_key, None), metrics, cells, cons)


def group_arms(jobs: Sequence[Job]) -> dict[str, list[Job]]:
    """Jobs by arm, in order of first appearance; within an arm, sorted by seed.

    An arm's name is ``key=value`` of every override (seed excluded) whose value differs between
    jobs, joined by ``,``; ``all`` when none differs (a single arm).

    Raises:
        ComparisonError: two jobs of one arm with the same seed.
    """
    varying = varying_keys([j.overrides for j in jobs])
    arms: dict[str, list[Job]] = {}
    for j in jobs:
        name = ",".join(f"{k}={j.overrides.get(k)}" for k in varying) or "all"
        arms.setdefault(name, []).append(j)
    for name, members in arms.items():
        seeds = [repr(j.seed) for j in members]
        dup = next((s for s in seeds if seeds.count(s) > 1), None)
        if dup is not None:
            paths = ", ".join(str(j.path) for j in members if repr(j.seed) == dup)
            raise ComparisonError(f"arm {name}: jobs {paths} have the same seed {dup} (vary the seed with the seed key)")
        members.sort(key=lambda j: (str(type(j.seed)), j.seed if j.seed is not None else 0))
    return arms


def _spread(seeds: Sequence, values: Sequence) -> dict:
    """``{"mean", "std", "values": {seed: value}}`` over seeds (a value per seed); ``std`` is the sample std
    (``None`` with fewer than two seeds); ``None`` values (undefined PDR) are left out of mean and std."""
    xs = [v for v in values if v is not None]
    return {"mean": statistics.fmean(xs) if xs else None, "std": statistics.stdev(xs) if len(xs) > 1 else None,
            "values": {str(s): v for s, v in zip(seeds, values)}}


def arm_summary(members: Sequence[Job], resamples: int, seed: int, confidence: float) -> dict:
    """Per-arm numbers: accuracy (mean/std over seeds, bootstrap interval of the seed mean), PDR and
    consistency, per level, ``perturbed``, category and (task, level)."""
    point = [hierarchical_bootstrap([j.cells], None, 0) for j in members]   # each seed's accuracies
    seeds = [j.seed for j in members]
    own = hierarchical_bootstrap([j.cells for j in members], None, resamples, seed, confidence)
    spread = functools.partial(_spread, seeds)

    levels = list(point[0]["per_level"])
    point_cells = [{**p["per_level"], "perturbed": p["perturbed"]} for p in point]
    own_cells = {**own["per_level"], "perturbed": own["perturbed"]}  # "perturbed" is None without a perturbed level
    accuracy = {lv: {**spread([p[lv]["delta"] for p in point_cells]), "low": c["low"], "high": c["high"]}
                for lv, c in own_cells.items() if c is not None}
    pdr = {lv: spread([j.metrics["per_level"].get(lv, {}).get("pdr") for j in members]) for lv in levels if lv != CLEAN}
    pdr["perturbed"] = spread([j.metrics.get("overall", {}).get("pdr") for j in members])
    cons = {lv: spread([j.consistency["per_level"].get(lv) for j in members]) for lv in levels}
    cons["perturbed"] = spread([j.consistency["perturbed"] for j in members])
    return {
        "overrides": dict(members[0].overrides),
        "seeds": seeds, "jobs": [str(j.path) for j in members],
        "accuracy": accuracy, "pdr": pdr, "consistency": cons,
        "per_category": {c: {lv: spread([p["per_category"][c][lv]["delta"] for p in point]) for lv in by}
                         for c, by in point[0]["per_category"].items()},
        "per_task_level": [{"task": cell["task"], "level": cell["level"],
                            **spread([p["per_task_level"][i]["delta"] for p in point])}
                           for i, cell in enumerate(point[0]["per_task_level"])],
    }


PAIRING_SAFE_PREFIXES = ("loss.",)
"""Overrides that change neither the data order nor the LoRA initialisation drawn from the seed."""


def seed_pairing(arm_overrides: Sequence[dict]) -> dict:
    """Whether seed ``s`` of every arm saw the same data order and LoRA initialisation.

    Args:
        arm_overrides: each arm's overrides (seed excluded).

    Returns:
        ``{"holds": bool, "varying": [keys that differ between arms], "reason": str}``.
    """
    varying = varying_keys(list(arm_overrides))
    other = [k for k in varying if not k.startswith(PAIRING_SAFE_PREFIXES)]
    reason = (f"the arms also differ in {', '.join(other)}, which may change the data order or the "
              "initialisation drawn from a seed: read the independent-seed intervals" if other else
              "the arms differ only in " + (", ".join(varying) or "nothing") + ": a seed gives every arm the "
              "same data order and LoRA initialisation, so seeds are paired")
    return {"holds": not other, "varying": varying, "reason": reason}


def compare_sweep(sweep_dir: str | Path, reference: str | None = None, bootstrap: int = 1000, seed: int = 0,
                  seed_key: str = SEED_KEY, confidence: float = 0.95) -> dict:
    """Aggregate a multirun across seeds and compare every arm with the reference arm.

    Args:
        sweep_dir: the Hydra multirun directory.
        reference: the reference arm's name (default: the first arm in job order).
        bootstrap: replicates of every bootstrap; 0 = point estimates only.
        seed: seed of the bootstrap draws.
        seed_key: the override naming the training seed.
        confidence: interval coverage.

    Returns:
        ``{"sweep_dir", "seed_key", "reference", "arm_names", "levels", "tasks", "fingerprint",
        "bootstrap": {resamples, confidence, seed, resample}, "pairing": seed_pairing(...), "arms":
        {name: arm_summary(...)}, "delta": {"<arm> - <reference>": hierarchical_bootstrap(...)},
        "delta_independent": {... the same with pair_seeds=False}}``; values are fractions.

    Raises:
        RunDirError: no job directories, or a job without (readable) results.
        ComparisonError: negative ``bootstrap``, jobs that scored different rows or instructions,
            an unknown reference, arms with different seed sets, a repeated seed within an arm.
    """
    if bootstrap < 0:
        raise ComparisonError(f"--bootstrap {bootstrap}: the number of replicates must be >= 0")
    jobs = [load_job(p, seed_key) for p in job_dirs(sweep_dir)]
    check_comparable([str(j.results) for j in jobs], [j.metrics for j in jobs])
    arms = group_arms(jobs)
    names = list(arms)
    ref = names[0] if reference is None else reference
    if ref not in arms:
        raise ComparisonError(f"--reference {ref!r} is not an arm of {sweep_dir}; arms: {'; '.join(names)}")
    ref_seeds = [repr(j.seed) for j in arms[ref]]
    for name in names:
        seeds = [repr(j.seed) for j in arms[name]]
        if seeds != ref_seeds:
            raise ComparisonError(f"arm {name} has seeds [{', '.join(seeds)}] but the reference arm {ref} has "
                                  f"[{', '.join(ref_seeds)}]: a paired comparison needs the same seeds")
    first = jobs[0].metrics
    return {
        "sweep_dir": str(sweep_dir), "seed_key": seed_key, "reference": ref, "arm_names": names,
        "levels": first["levels"], "tasks": first["tasks"], "fingerprint": first["fingerprint"],
        "bootstrap": {"resamples": bootstrap, "confidence": confidence, "seed": seed, "resample": list(RESAMPLE_UNITS)},
        "pairing": seed_pairing([arms[n][0].overrides for n in names]),
        "arms": {n: arm_summary(arms[n], bootstrap, seed, confidence) for n in names},
        **{key: {f"{n} - {ref}": hierarchical_bootstrap([j.cells for j in arms[n]], [j.cells for j in arms[ref]],
                                                        bootstrap, seed, confidence, pair_seeds=paired)
                 for n in names if n != ref}
           for key, paired in (("delta", True), ("delta_independent", False))},
    }


def is_strength_sweep(sweep_dir: str | Path, seed_key: str = SEED_KEY) -> bool:
    """True when every override that varies between the jobs is an ``eval.perturb.*`` key: a
    perturbation-strength sweep, whose instructions differ by design (plotted against the value)."""
    varying = varying_keys([read_overrides(j) for j in job_dirs(sweep_dir)], exclude=(seed_key,))
    return bool(varying) and all(k.startswith("eval.perturb.") for k in varying)
