"""Paired (and seed-hierarchical) bootstrap confidence intervals of accuracy differences.

Two runs that scored the same rows with the same instructions (same fingerprint) are compared cell by
cell: for every (task, level) the per-example correctness forms a matrix ``[instructions, rows]`` in
each run, and the statistic is the difference of the two runs' means, aggregated exactly as
:func:`coin_lightning.eval.scoring.metrics.summarize` aggregates accuracy (mean over the level's instructions,
then over tasks; "perturbed" = mean over tasks and non-clean levels). Each bootstrap replicate draws,
with replacement and *the same draw for both runs* (paired):

- the validation rows of each task (one draw per task, shared by all its levels), and
- the instructions of each task (when ``resample`` includes ``"instructions"``): a perturbed
  instruction is a perturbation of the clean instruction with the same ``instruction_index`` (as
  PromptBench perturbs each prompt, and as PDR pairs them), so the draw is one of the task's *base*
  instructions, shared by every level whose perturbations each cover the clean indices; a level that
  does not (e.g. a task without a clean level) draws its own instructions,

so the interval covers both sources of sampling variation of a robustness evaluation (which inputs,
which wordings). Intervals are percentile intervals (Efron & Tibshirani 1993, Ch. 13); the point
estimate is the difference on the full data, equal to the deltas of :func:`compare_runs`.

Across training seeds (:func:`hierarchical_bootstrap`, used by ``compare --sweep``), each arm is a
list of runs, one per seed, and replicates draw the seeds too, so the interval also covers the
variation between training runs. Seeds are paired by default (the same draw for both arms: seed ``s``
of one arm is compared with seed ``s`` of the other), which is justified when seed ``s`` gives both
arms the same data order and initialisation; ``pair_seeds=False`` draws each arm's seeds
independently. The *robustness effect* of an arm is its drop from clean (perturbed minus clean
accuracy) minus the reference's drop, with its own interval from the same replicates.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from coin_lightning.data.records import DataError
from coin_lightning.data.sources.base import read_jsonl
from coin_lightning.eval.scoring.metrics import CLEAN, RunDirError

RESAMPLE_UNITS = ("seeds", "rows", "instructions")
"""Units a bootstrap replicate may draw with replacement."""


def read_predictions(run_dir: str | Path) -> list[dict]:
    """Rows of ``<run_dir>/predictions.jsonl`` (read with :func:`coin_lightning.data.sources.base.read_jsonl`).

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
                     confidence: float = 0.95, resample: Sequence[str] = ("rows", "instructions")) -> dict:
    """Bootstrap intervals of accuracy(run) - accuracy(ref), per level, task x level, category x level.

    :func:`hierarchical_bootstrap` with one seed per side.

    Args:
        rows_run, rows_ref: prediction rows of the two runs (``predictions.jsonl``), same rows and
            instructions.
        resamples: bootstrap replicates ``B``.
        seed: seed of the draws (numpy ``default_rng``).
        confidence: interval coverage, e.g. 0.95 -> 2.5 and 97.5 percentiles.
        resample: units drawn with replacement: ``"rows"`` and/or ``"instructions"``.

    Returns:
        See :func:`hierarchical_bootstrap`; deltas are fractions (accuracy points / 100).

    Raises:
        ValueError: the runs scored different cells, rows or instructions; bad arguments.
    """
    return hierarchical_bootstrap([rows_run], [rows_ref], resamples, seed, confidence, resample)


def _check_same(cells: Sequence[dict], reference: dict, what: str) -> None:
    for c in cells:
        if c.keys() != reference.keys():
            raise ValueError(f"{what} scored different (task, level) cells: {sorted(c.keys() ^ reference.keys())}")
        for key in c:
            if c[key]["uids"] != reference[key]["uids"] or c[key]["instructions"] != reference[key]["instructions"]:
                raise ValueError(f"task {key[0]} level {key[1]}: {what} scored different rows or instructions")


def _weights(rng: np.random.Generator, n: int, resamples: int, draw: bool) -> np.ndarray:
    """Float ``[B, n]``: multinomial counts / n of ``resamples`` draws of ``n`` units (uniform 1/n without ``draw``)."""
    if not draw or n == 1:
        return np.full((resamples, n), 1.0 / n)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples) / n


def _instruction_weights(rng: np.random.Generator, cells: dict, resamples: int, draw: bool) -> dict:
    """Per (task, level): Float ``[B, n_instructions]``, each replicate's weight of each instruction.

    Every (task, level) whose perturbations each cover exactly the task's clean indices shares one draw
    of the base instructions (weight ``w[index] / n_perturbations``); any other cell draws its own."""
    base = {t: [i for _, i in c["instructions"]] for (t, lv), c in cells.items() if lv == CLEAN}
    base_w = {t: _weights(rng, len(idx), resamples, draw) for t, idx in sorted(base.items())}
    out = {}
    for key in sorted(cells):
        insts, idx = cells[key]["instructions"], base.get(key[0])
        by_pert = defaultdict(list)
        for p, i in insts:
            by_pert[p].append(i)
        if idx is not None and all(sorted(v) == sorted(idx) for v in by_pert.values()):
            col = {i: c for c, i in enumerate(idx)}
            out[key] = np.stack([base_w[key[0]][:, col[i]] for _, i in insts], axis=1) / len(by_pert)
        else:
            out[key] = _weights(rng, len(insts), resamples, draw)
    return out


def hierarchical_bootstrap(runs: Sequence[Sequence[dict]], refs: Sequence[Sequence[dict]] | None = None,
                           resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                           resample: Sequence[str] = RESAMPLE_UNITS, pair_seeds: bool = True) -> dict:
    """Bootstrap intervals of the seed-mean accuracy of ``runs`` minus that of ``refs`` (paired by seed).

    ``runs[s]`` and ``refs[s]`` are the prediction rows of training seed ``s`` of two arms (the same
    position = the same seed). Every run must have scored the same cells, rows and instructions. The
    statistic of one (task, level) cell is ``mean_s mean_{i, r} (C_run[s, i, r] - C_ref[s, i, r])``
    over the correctness ``C`` of instruction ``i`` on row ``r``; levels, categories and "perturbed"
    average cells as :func:`coin_lightning.eval.scoring.metrics.summarize` does. Seeds, rows and
    instructions are crossed factors (every seed scores every row under every instruction), so each
    replicate draws each factor once, with replacement (the pigeonhole bootstrap of crossed random
    effects, Owen 2007, Ann. Appl. Stat. 1(1)): the seeds (``"seeds"``), the rows of each task (one
    draw per task, shared by its levels) and the base instructions of each task (one draw per task,
    shared by the clean instruction and its perturbations at every level; see the module docstring); the same draw
    serves both arms and every drawn seed, so the comparison stays paired.

    Args:
        runs: prediction rows per seed of the compared arm (or their :func:`correctness` dicts).
        refs: prediction rows (or :func:`correctness` dicts) per seed of the reference arm (same length, same seed order); ``None``
            gives intervals of ``runs``' own accuracy.
        resamples: replicates ``B``; 0 gives the point estimates with ``low``/``high`` ``None``.
        seed: seed of the draws (numpy ``default_rng``; rows, then instructions, then seeds are drawn).
        confidence: interval coverage, e.g. 0.95 -> 2.5 and 97.5 percentiles.
        resample: units drawn with replacement, a subset of ``("seeds", "rows", "instructions")``.
        pair_seeds: draw the same seeds for both arms (default); ``False`` draws each arm's seeds
            independently (rows and instructions stay shared: both arms scored the same ones), and the
            arms may then have different numbers of seeds.

    Returns:
        ``{"resamples", "confidence", "seed", "resample", "pair_seeds", "seeds": S, "per_level":
        {level: {delta, low, high}}, "perturbed": {...}, "robustness_effect": {level: {...},
        "perturbed": {...}}, "per_category": {category: {level: {...}}}, "per_task_level": [{task,
        level, delta, low, high}]}``; ``perturbed`` and ``robustness_effect`` are ``None`` without a
        clean and a perturbed level. ``robustness_effect[level]`` is ``delta(level) - delta(clean)``:
        the arm's drop from clean minus the reference's. Values are fractions (accuracy points / 100).

    Raises:
        ValueError: no runs, a different number of seeds on the two sides (paired), runs that scored
            different cells, rows or instructions, or bad arguments.
    """
    bad = set(resample) - set(RESAMPLE_UNITS)
    if bad or not 0 < confidence < 1 or resamples < 0:
        raise ValueError(f"bad bootstrap arguments: resample={list(resample)}, confidence={confidence}, resamples={resamples}")
    if not runs:
        raise ValueError("no runs to bootstrap")
    if refs is not None and pair_seeds and len(refs) != len(runs):
        raise ValueError(f"{len(runs)} seeds against {len(refs)} reference seeds: a paired comparison needs the same seeds")
    a = [r if isinstance(r, dict) else correctness(r) for r in runs]
    b = [r if isinstance(r, dict) else correctness(r) for r in refs] if refs is not None else None
    first = a[0]
    _check_same(a[1:], first, "the seeds")
    _check_same(b or [], first, "the runs")
    paired = b is None or pair_seeds
    if paired:  # one stack of per-seed differences
        sides = [(1.0, {key: np.stack([x[key]["correct"] - (y[key]["correct"] if b is not None else 0.0)
                                       for x, y in zip(a, b if b is not None else a)]) for key in first})]
    else:  # each arm's own seeds, drawn independently
        sides = [(sign, {key: np.stack([x[key]["correct"] for x in arm]) for key in first}) for sign, arm in ((1.0, a), (-1.0, b))]
    B = max(resamples, 1)
    rng = np.random.default_rng(seed)
    tasks = list(dict.fromkeys(t for t, _ in first))
    draw = set(resample) if resamples else set()
    row_weights = {t: _weights(rng, len(next(first[k]["uids"] for k in first if k[0] == t)), B, "rows" in draw)
                   for t in tasks}
    inst_weights = _instruction_weights(rng, first, B, "instructions" in draw)
    samples = {key: np.zeros(B) for key in first}
    point = {key: 0.0 for key in first}
    for sign, stacks in sides:
        seed_w = _weights(rng, len(next(iter(stacks.values()))), B, "seeds" in draw)   # [B, S]
        for key in sorted(first):
            per_seed = np.einsum("bi,sir,br->bs", inst_weights[key], stacks[key], row_weights[key[0]])   # [B, S]
            samples[key] += sign * np.einsum("bs,bs->b", seed_w, per_seed)
            point[key] += sign * float(stacks[key].mean())

    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2

    def interval(keys: list[tuple[str, str]], minus: list[tuple[str, str]] = ()) -> dict | None:
        if not keys:
            return None
        s = np.mean([samples[k] for k in keys], axis=0)
        delta = float(np.mean([point[k] for k in keys]))
        if minus:  # a difference of two cell means, replicate by replicate
            s = s - np.mean([samples[k] for k in minus], axis=0)
            delta -= float(np.mean([point[k] for k in minus]))
        low, high = (float(np.percentile(s, lo_q)), float(np.percentile(s, hi_q))) if resamples else (None, None)
        return {"delta": delta, "low": low, "high": high}

    levels = list(dict.fromkeys(lv for _, lv in sorted(first, key=lambda k: (k[1] != CLEAN, k[1]))))
    categories = list(dict.fromkeys(first[k]["category"] for k in sorted(first)))
    clean = [k for k in first if k[1] == CLEAN]
    perturbed = [k for k in first if k[1] != CLEAN]
    effect = None
    if clean and perturbed:
        effect = {lv: interval([k for k in first if k[1] == lv], clean) for lv in levels if lv != CLEAN}
        effect["perturbed"] = interval(perturbed, clean)
    return {
        "resamples": resamples, "confidence": confidence, "seed": seed, "resample": list(resample), "seeds": len(runs),
        "pair_seeds": paired,
        "per_level": {lv: interval([k for k in first if k[1] == lv]) for lv in levels},
        "perturbed": interval(perturbed),
        "robustness_effect": effect,
        "per_category": {c: {lv: x for lv in levels  # interval() is None for a level the category lacks
                             if (x := interval([k for k in first if k[1] == lv and first[k]["category"] == c]))}
                         for c in categories},
        "per_task_level": [{"task": k[0], "level": k[1], **interval([k])}
                           for k in sorted(first, key=lambda k: (k[0], levels.index(k[1])))],
    }
