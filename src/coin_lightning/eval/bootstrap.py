"""Paired bootstrap confidence intervals of accuracy differences between two evaluation runs.

Two runs that scored the same rows with the same instructions (same fingerprint) are compared cell by
cell: for every (task, level) the per-example correctness forms a matrix ``[instructions, rows]`` in
each run, and the statistic is the difference of the two runs' means, aggregated exactly as
:func:`coin_lightning.eval.metrics.summarize` aggregates accuracy (mean over the level's instructions,
then over tasks; "perturbed" = mean over tasks and non-clean levels). Each bootstrap replicate draws,
with replacement and *the same draw for both runs* (paired):

- the validation rows of each task (one draw per task, shared by all its levels), and
- the instructions of each (task, level) (when ``resample`` includes ``"instructions"``),

so the interval covers both sources of sampling variation of a robustness evaluation (which inputs,
which wordings). Intervals are percentile intervals (Efron & Tibshirani 1993, Ch. 13); the point
estimate is the difference on the full data, equal to the deltas of :func:`compare_runs`.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from coin_lightning.data.records import DataError
from coin_lightning.data.sources.jsonl import read_jsonl
from coin_lightning.eval.metrics import CLEAN
from coin_lightning.eval.report import RunDirError

RESAMPLE_UNITS = ("rows", "instructions")


def read_predictions(run_dir: str | Path) -> list[dict]:
    """Rows of ``<run_dir>/predictions.jsonl`` (read with :func:`coin_lightning.data.sources.jsonl.read_jsonl`).

    Raises:
        RunDirError: the file is missing, or a line is not a JSON object (file and line named).
    """
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        raise RunDirError(f"{path} not found: the bootstrap needs each run's predictions")
    try:
        return [row for _, row in read_jsonl(path)]
    except DataError as exc:
        raise RunDirError(str(exc)) from None


def correctness(rows: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """Per (task, level): ``{"category", "instructions": [(perturbation, index)], "uids": [...],
    "correct": Float [n_instructions, n_rows]}`` (1.0 = the prediction equals the gold label).

    Raises:
        ValueError: a row misses a key, or a (task, level) does not score every row under every
            instruction (the matrix would have holes).
    """
    cells: dict[tuple[str, str], dict] = defaultdict(lambda: {"values": {}, "category": None})
    for r in rows:
        try:
            cell = cells[(r["task"], r["level"])]
            cell["category"] = r["category"]
            cell["values"][((r["perturbation"], int(r["instruction_index"])), r["uid"])] = float(int(r["pred"]) == int(r["gold"]))
        except KeyError as exc:
            raise ValueError(f"prediction row misses key {exc}: {r}") from None
    out = {}
    for key, cell in cells.items():
        instructions = sorted({i for i, _ in cell["values"]})
        uids = sorted({u for _, u in cell["values"]})
        if len(cell["values"]) != len(instructions) * len(uids):
            raise ValueError(f"task {key[0]} level {key[1]}: not every row was scored under every instruction")
        mat = np.array([[cell["values"][(i, u)] for u in uids] for i in instructions])
        out[key] = {"category": cell["category"], "instructions": instructions, "uids": uids, "correct": mat}
    return out


def paired_bootstrap(rows_run: Sequence[dict], rows_ref: Sequence[dict], resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95, resample: Sequence[str] = RESAMPLE_UNITS) -> dict:
    """Bootstrap intervals of accuracy(run) - accuracy(ref), per level, task x level, category x level.

    Args:
        rows_run, rows_ref: prediction rows of the two runs (``predictions.jsonl``), same rows and
            instructions.
        resamples: bootstrap replicates ``B``.
        seed: seed of the draws (numpy ``default_rng``).
        confidence: interval coverage, e.g. 0.95 -> 2.5 and 97.5 percentiles.
        resample: units drawn with replacement: ``"rows"`` and/or ``"instructions"``.

    Returns:
        ``{"resamples", "confidence", "seed", "resample", "per_level": {level: {delta, low, high}},
        "perturbed": {...} (``None`` without perturbed levels), "per_category": {category: {level: {...}}}, "per_task_level":
        [{task, level, delta, low, high}]}``; deltas are fractions (accuracy points / 100).

    Raises:
        ValueError: the runs scored different cells, rows or instructions; bad arguments.
    """
    bad = set(resample) - set(RESAMPLE_UNITS)
    if bad or not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"bad bootstrap arguments: resample={list(resample)}, confidence={confidence}, resamples={resamples}")
    a, b = correctness(rows_run), correctness(rows_ref)
    if a.keys() != b.keys():
        raise ValueError(f"the runs scored different (task, level) cells: {sorted(a.keys() ^ b.keys())}")
    for key in a:
        if a[key]["uids"] != b[key]["uids"] or a[key]["instructions"] != b[key]["instructions"]:
            raise ValueError(f"task {key[0]} level {key[1]}: the runs scored different rows or instructions")
    rng = np.random.default_rng(seed)
    tasks = list(dict.fromkeys(t for t, _ in a))
    row_weights = {}
    for t in tasks:
        n = len(next(a[k]["uids"] for k in a if k[0] == t))
        row_weights[t] = (rng.multinomial(n, np.full(n, 1.0 / n), size=resamples) / n if "rows" in resample
                          else np.full((resamples, n), 1.0 / n))
    samples, point = {}, {}
    for key in sorted(a):
        diff = a[key]["correct"] - b[key]["correct"]          # [instructions, rows]
        k = diff.shape[0]
        inst_w = (rng.multinomial(k, np.full(k, 1.0 / k), size=resamples) / k if "instructions" in resample
                  else np.full((resamples, k), 1.0 / k))
        samples[key] = np.einsum("bi,ir,br->b", inst_w, diff, row_weights[key[0]])
        point[key] = float(diff.mean())

    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2

    def interval(keys: list[tuple[str, str]]) -> dict | None:
        if not keys:
            return None
        s = np.mean([samples[k] for k in keys], axis=0)
        return {"delta": float(np.mean([point[k] for k in keys])),
                "low": float(np.percentile(s, lo_q)), "high": float(np.percentile(s, hi_q))}

    levels = list(dict.fromkeys(lv for _, lv in sorted(a, key=lambda k: (k[1] != CLEAN, k[1]))))
    categories = list(dict.fromkeys(a[k]["category"] for k in sorted(a)))
    return {
        "resamples": resamples, "confidence": confidence, "seed": seed, "resample": list(resample),
        "per_level": {lv: interval([k for k in a if k[1] == lv]) for lv in levels},
        "perturbed": interval([k for k in a if k[1] != CLEAN]),
        "per_category": {c: {lv: interval([k for k in a if k[1] == lv and a[k]["category"] == c])
                             for lv in levels if any(k[1] == lv and a[k]["category"] == c for k in a)}
                         for c in categories},
        "per_task_level": [{"task": k[0], "level": k[1], **interval([k])} for k in sorted(a)],
    }
