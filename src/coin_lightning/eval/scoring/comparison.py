"""Comparing evaluation runs: side by side with per-level deltas, and accuracy along a Hydra sweep.

Runs are comparable only when they scored the same rows with the same instructions; every run stores
a fingerprint of both (``metrics.json`` ``fingerprint``), and :func:`check_comparable` refuses
mismatches. A sweep (``python -m coin_lightning.evaluate -m eval.perturb.character.max_words=1,2,4``)
changes the instructions on purpose, so only its rows must match.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from coin_lightning.errors import UserError
from coin_lightning.eval.scoring.bootstrap import paired_bootstrap, read_predictions
from coin_lightning.eval.scoring.metrics import RunDirError, read_metrics


class ComparisonError(UserError, ValueError):
    """Runs that cannot be compared (different rows or instructions, or no varying sweep parameter)."""


def run_name(run_dir: str | Path, metrics: dict) -> str:
    """A short label: the adapter's directory (its parent when it is named ``adapter``), else the model."""
    run = metrics.get("run", {})
    if adapter := run.get("adapter"):
        p = Path(str(adapter))
        return p.parent.name if p.name in ("adapter", "final", "") else p.name
    return str(run.get("model") or Path(run_dir).name)


def check_comparable(run_dirs: Sequence[str | Path], metrics: Sequence[dict], keys: Sequence[str] = ("rows", "instructions")) -> None:
    """Raise :class:`ComparisonError` unless every run has the first run's fingerprint ``keys``.

    The message names both run directories and what differs (rows or instructions).
    """
    base = metrics[0]["fingerprint"]
    for d, m in zip(run_dirs[1:], metrics[1:]):
        for key in keys:
            if m["fingerprint"].get(key) != base.get(key):
                what = {"rows": "evaluated different rows (eval.tasks / samples_per_task / seed / data)",
                        "instructions": "used different instructions"}.get(key, f"differ in {key}")
                raise ComparisonError(f"{d} {what} than {run_dirs[0]}; refusing to compare")


def _delta(v: float | None, base: float | None) -> float | None:
    return None if v is None or base is None else v - base


def compare_runs(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None, bootstrap: int = 0,
                 seed: int = 0, confidence: float = 0.95) -> dict:
    """Side-by-side numbers of two or more comparable runs; the first run is the baseline of the deltas.

    Args:
        run_dirs: evaluation run directories; the first is the baseline.
        names: a label per run (default :func:`run_name`).
        bootstrap: replicates of the paired bootstrap (:mod:`coin_lightning.eval.scoring.bootstrap`; rows and
            instructions resampled) giving a ``confidence`` interval of every delta; 0 = none.
        seed: seed of the bootstrap draws.

    Returns:
        ``{"names", "run_dirs", "levels", "tasks", "per_level": {level: {name: {mean, std, pdr, delta}}},
        "per_category": {category: {level: {name: mean}}}, "per_task_level": [{task, level, <name>:
        mean, "<name> delta": ...}], "overall": {name: {...}},
        "bootstrap": {name: paired_bootstrap(...)} (runs after the first; only with ``bootstrap > 0``)}``;
        deltas are accuracy differences (fractions) to the baseline.

    Raises:
        RunDirError: a directory without results.
        ComparisonError: fewer than two runs, mismatched fingerprints, or a wrong number of names.
    """
    if len(run_dirs) < 2:
        raise ComparisonError("compare needs at least two run directories")
    if bootstrap < 0:
        raise ComparisonError(f"--bootstrap {bootstrap}: the number of replicates must be >= 0")
    metrics = [read_metrics(d) for d in run_dirs]
    check_comparable(run_dirs, metrics)
    names = list(names) if names else [run_name(d, m) for d, m in zip(run_dirs, metrics)]
    if len(names) != len(run_dirs):
        raise ComparisonError(f"{len(names)} names for {len(run_dirs)} runs")
    if len(set(names)) < len(names):
        names = [f"{n} ({Path(d).name})" for n, d in zip(names, run_dirs)]
    levels, tasks = metrics[0]["levels"], metrics[0]["tasks"]
    per_level = {}
    for lv in levels + ["perturbed"]:
        vals = [{"mean": m["overall"]["perturbed"], "std": None, "pdr": m["overall"]["pdr"]} if lv == "perturbed"
                else {k: m["per_level"][lv][k] for k in ("mean", "std", "pdr")} for m in metrics]
        per_level[lv] = {n: {**v, "delta": _delta(v["mean"], vals[0]["mean"])} for n, v in zip(names, vals)}
    means = [{(c["task"], c["level"]): c["mean"] for c in m["per_task_level"]} for m in metrics]
    cells = [{"task": t, "level": lv} for t in tasks for lv in levels]
    for row in cells:
        vals = [by.get((row["task"], row["level"])) for by in means]
        for n, v in zip(names, vals):
            row.update({n: v, f"{n} delta": _delta(v, vals[0])})
    per_category = {c: {lv: {n: m["per_category"][c][lv]["mean"] for n, m in zip(names, metrics)
                             if lv in m["per_category"].get(c, {})} for lv in by}
                    for c, by in metrics[0].get("per_category", {}).items()}
    out = {"names": names, "run_dirs": [str(d) for d in run_dirs], "levels": levels, "tasks": tasks,
           "per_level": per_level, "per_category": per_category, "per_task_level": cells,
           "overall": {n: m["overall"] for n, m in zip(names, metrics)}, "fingerprint": metrics[0]["fingerprint"]}
    if bootstrap > 0:
        ref = read_predictions(run_dirs[0])
        try:
            out["bootstrap"] = {n: paired_bootstrap(read_predictions(d), ref, bootstrap, seed, confidence)
                                for n, d in zip(names[1:], run_dirs[1:])}
        except ValueError as exc:
            raise ComparisonError(f"bootstrap: {exc}") from None
    return out


def _value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def varying_keys(overrides: Sequence[dict], exclude: Sequence[str] = ()) -> list[str]:
    """The override keys (sorted) whose value differs between jobs, ``exclude`` left out."""
    keys = sorted({k for o in overrides for k in o if k not in exclude})
    return [k for k in keys if len({repr(o.get(k)) for o in overrides}) > 1]


def read_overrides(job_dir: str | Path) -> dict:
    """``key -> value`` from a Hydra job's ``.hydra/overrides.yaml`` (values parsed as YAML scalars);
    a deletion without a value (``~key``) maps to ``None``.

    Raises:
        RunDirError: the file is missing or not a list of ``key=value`` (or ``~key``) strings.
    """
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise RunDirError(f"{job_dir}: no .hydra/overrides.yaml (not a Hydra job directory)")
    items = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(items, list) or not all(isinstance(i, str) and ("=" in i or i.startswith("~")) for i in items):
        raise RunDirError(f"{path}: expected a list of key=value overrides")
    pairs = (i.split("=", 1) if "=" in i else (i, None) for i in items)
    return {k.lstrip("+~"): None if v is None else _value(v) for k, v in pairs}


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The job directories of a Hydra multirun directory (those with a ``.hydra`` folder), in job order
    (numeric names by number).

    Raises:
        RunDirError: not a directory, or no job directories in it.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RunDirError(f"{sweep_dir}: not a directory")
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    if not jobs:
        raise RunDirError(f"{sweep_dir}: no Hydra job directories (expected <sweep>/<n>/.hydra)")
    return sorted(jobs, key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))


def sweep_points(sweep_dir: str | Path, parameter: str | None = None) -> tuple[str, list[tuple[object, dict, Path]]]:
    """The jobs of a Hydra multirun directory as ``(parameter value, metrics, job dir)``, sorted by value.

    Args:
        sweep_dir: the multirun directory (its numbered job subdirectories hold ``metrics.json``).
        parameter: the swept override key; default: the only key whose value differs between jobs.

    Raises:
        RunDirError: no job directories, or a job without results.
        ComparisonError: no (or more than one, without ``parameter``) varying key; jobs on different rows.
    """
    jobs = job_dirs(sweep_dir)
    overrides = [read_overrides(j) for j in jobs]
    metrics = [read_metrics(j) for j in jobs]
    if parameter is None:
        varying = varying_keys(overrides)
        if len(varying) != 1:
            raise ComparisonError(f"{sweep_dir}: {len(varying)} overrides vary between jobs ({', '.join(varying) or 'none'}); "
                                  "name the swept one with --param")
        parameter = varying[0]
    for j, o in zip(jobs, overrides):
        if parameter not in o:
            raise ComparisonError(f"{j}: no override {parameter!r}")
    check_comparable([str(j) for j in jobs], metrics, keys=("rows",))
    points = sorted(((o[parameter], m, j) for o, m, j in zip(overrides, metrics, jobs)), key=lambda p: (str(type(p[0])), p[0]))
    return parameter, points


