"""Metrics over a table of per-example predictions (pure functions), and an evaluation run directory's
result files (:data:`FILES`, :func:`read_metrics`).

A prediction row is a dict with at least ``task``, ``category``, ``perturbation``, ``level``,
``instruction_index``, ``gold`` and ``pred`` (``-1`` = unparseable). From them:

- accuracy per (task, perturbation, instruction), with the share of unparseable answers;
- per (task, level): mean and *population* standard deviation of those accuracies across the
  level's instructions (pooled over its perturbations), the CoIN paper's table (the reference code's
  ``postprocessing.py`` uses ``np.std``);
- per level and per task category: the mean over tasks of the per-(task, level) means (and of the
  stds); overall: clean, perturbed (mean over tasks and non-clean levels) and PDR;
- Performance Drop Rate (PromptBench, Zhu et al. 2023, Sec. 3.2): ``PDR = 1 - acc(perturbed) /
  acc(clean)`` for each perturbed instruction against the clean instruction with the same index
  (each perturbation of a set perturbs the clean instructions in order), averaged over instructions;
  when a perturbation has a different number of instructions than ``clean``, the clean mean is the
  denominator. A clean accuracy of 0 leaves PDR undefined (``None``), and such instructions are left
  out of the averages. Positive PDR = accuracy dropped;
- consistency (:func:`consistency`): the share of inputs answered alike under every instruction of
  a level, whatever the gold label.

Accuracies are fractions in ``[0, 1]``.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from coin_lightning.errors import UserError

CLEAN = "clean"
"""Name of the unperturbed level (and perturbation)."""


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _pstd(xs: Sequence[float]) -> float | None:
    m = _mean(xs)
    return None if m is None else math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def pdr(acc_perturbed: float, acc_clean: float) -> float | None:
    """PromptBench's Performance Drop Rate ``1 - acc_perturbed / acc_clean``; ``None`` if ``acc_clean`` is 0."""
    return None if acc_clean == 0 else 1.0 - acc_perturbed / acc_clean


def per_instruction(rows: Iterable[dict]) -> list[dict]:
    """Accuracy of every (task, perturbation, instruction) with its PDR against the paired clean one.

    Returns:
        Dicts with ``task, category, perturbation, level, instruction_index, instruction, n, correct,
        accuracy, unparseable, pdr`` (``pdr`` is ``None`` for clean instructions and when undefined),
        sorted by task, level, perturbation, index.

    Raises:
        ValueError: a row misses a required key.
    """
    groups: dict[tuple, dict] = {}
    for row in rows:
        try:
            key = (row["task"], row["perturbation"], int(row["instruction_index"]))
            g = groups.setdefault(key, {
                "task": row["task"], "category": row["category"], "perturbation": row["perturbation"],
                "level": row["level"], "instruction_index": int(row["instruction_index"]),
                "instruction": row.get("instruction", ""), "n": 0, "correct": 0, "unparseable_n": 0,
            })
            g["n"] += 1
            g["correct"] += int(int(row["pred"]) == int(row["gold"]))
            g["unparseable_n"] += int(int(row["pred"]) < 0)
        except KeyError as exc:
            raise ValueError(f"prediction row misses key {exc}: {row}") from None
    table = list(groups.values())
    clean, counts = defaultdict(dict), defaultdict(int)
    for g in table:
        g["accuracy"] = g["correct"] / g["n"]
        g["unparseable"] = g.pop("unparseable_n") / g["n"]
        counts[(g["task"], g["perturbation"])] += 1
        if g["perturbation"] == CLEAN:
            clean[g["task"]][g["instruction_index"]] = g["accuracy"]
    for g in table:
        g["pdr"] = None
        base = clean.get(g["task"])
        if g["perturbation"] != CLEAN and base:
            paired = counts[(g["task"], g["perturbation"])] == len(base) and g["instruction_index"] in base
            g["pdr"] = pdr(g["accuracy"], base[g["instruction_index"]] if paired else _mean(list(base.values())))
    return sorted(table, key=lambda g: (g["task"], g["level"], g["perturbation"], g["instruction_index"]))


def per_task_level(instructions: Sequence[dict]) -> list[dict]:
    """Mean and population std of accuracy across the instructions of each (task, level).

    Returns:
        Dicts with ``task, category, level, mean, std, n_instructions, unparseable, pdr`` (``pdr``: mean
        of the defined per-instruction PDRs, ``None`` for clean or when none is defined).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for g in instructions:
        groups[(g["task"], g["level"])].append(g)
    out = []
    for (task, level), items in groups.items():
        accs = [g["accuracy"] for g in items]
        out.append({
            "task": task, "category": items[0]["category"], "level": level,
            "mean": _mean(accs), "std": _pstd(accs), "n_instructions": len(items),
            "unparseable": _mean([g["unparseable"] for g in items]),
            "pdr": _mean([g["pdr"] for g in items if g["pdr"] is not None]) if level != CLEAN else None,
        })
    return sorted(out, key=lambda r: (r["task"], r["level"]))


def _average(cells: Sequence[dict]) -> dict:
    return {
        "mean": _mean([c["mean"] for c in cells]),
        "std": _mean([c["std"] for c in cells]),
        "pdr": _mean([c["pdr"] for c in cells if c["pdr"] is not None]),
        "unparseable": _mean([c["unparseable"] for c in cells]),
        "n_tasks": len({c["task"] for c in cells}),
    }


def summarize(rows: Sequence[dict], levels: Sequence[str] | None = None) -> dict:
    """All metrics of one evaluation.

    Args:
        rows: prediction rows (see the module docstring).
        levels: level order for the tables (default: as first seen, ``clean`` first).

    Returns:
        ``{"per_instruction": [...], "per_task_level": [...], "per_level": {level: {mean, std, pdr,
        unparseable, n_tasks}}, "per_category": {category: {level: {...}}}, "overall": {clean,
        perturbed, all, pdr, unparseable, n_examples}, "levels": [...], "tasks": [...]}``. Per-level
        and per-category values average the per-(task, level) cells over tasks.

    Raises:
        ValueError: no rows.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no predictions to summarize")
    inst = per_instruction(rows)
    cells = per_task_level(inst)
    seen = list(dict.fromkeys(r["level"] for r in rows))
    order = [lv for lv in (levels or []) if lv in seen] + [lv for lv in seen if lv not in (levels or [])]
    order.sort(key=lambda lv: lv != CLEAN)  # clean first (a stable sort keeps the rest in order)
    task_order = list(dict.fromkeys(r["task"] for r in rows))
    cells.sort(key=lambda c: (task_order.index(c["task"]), order.index(c["level"])))
    inst.sort(key=lambda g: (task_order.index(g["task"]), order.index(g["level"]), g["perturbation"], g["instruction_index"]))
    per_level = {lv: _average([c for c in cells if c["level"] == lv]) for lv in order}
    per_category = {cat: {lv: _average(of) for lv in order
                          if (of := [c for c in cells if c["category"] == cat and c["level"] == lv])}
                    for cat in dict.fromkeys(c["category"] for c in cells)}
    perturbed = [c for c in cells if c["level"] != CLEAN]
    overall = {
        "clean": per_level[CLEAN]["mean"] if CLEAN in per_level else None,
        "perturbed": _mean([c["mean"] for c in perturbed]),
        "all": _mean([c["mean"] for c in cells]),
        "pdr": _mean([c["pdr"] for c in perturbed if c["pdr"] is not None]),
        "unparseable": sum(int(int(r["pred"]) < 0) for r in rows) / len(rows),
        "n_examples": len(rows),
    }
    return {
        "levels": order,
        "tasks": task_order,
        "per_instruction": inst,
        "per_task_level": cells,
        "per_level": per_level,
        "per_category": per_category,
        "overall": overall,
    }


def consistency(rows: Iterable[dict]) -> dict:
    """Consistency: the share of inputs that get the same answer under every instruction of a level.

    For each (task, level), a row (``uid``) is consistent when its prediction (the label id, ``-1``
    = unparseable counting as one more answer) is the same under every instruction of the level,
    pooled over the level's perturbations. Unlike accuracy it does not look at the gold label: a
    model that answers every wording alike is consistent even where it is wrong. A level with a
    single instruction is consistent by definition (1.0).

    Returns:
        ``{"per_task_level": [{task, category, level, consistency, n_rows, n_instructions}],
        "per_level": {level: mean over tasks}, "perturbed": mean over the non-clean cells (``None``
        without them)}``; shares are fractions in ``[0, 1]``.

    Raises:
        ValueError: a row misses a required key, or no rows.
    """
    answers: dict[tuple[str, str], dict[str, set]] = defaultdict(lambda: defaultdict(set))
    instructions: dict[tuple[str, str], set] = defaultdict(set)
    category: dict[tuple[str, str], str] = {}
    for row in rows:
        try:
            key = (row["task"], row["level"])
            answers[key][row["uid"]].add(int(row["pred"]))
            instructions[key].add((row["perturbation"], int(row["instruction_index"])))
            category[key] = row["category"]
        except KeyError as exc:
            raise ValueError(f"prediction row misses key {exc}: {row}") from None
    if not answers:
        raise ValueError("no predictions to measure consistency on")
    cells = [{"task": t, "category": category[(t, lv)], "level": lv,
              "consistency": sum(len(a) == 1 for a in by_uid.values()) / len(by_uid),
              "n_rows": len(by_uid), "n_instructions": len(instructions[(t, lv)])}
             for (t, lv), by_uid in answers.items()]
    levels = sorted(dict.fromkeys(c["level"] for c in cells), key=lambda lv: lv != CLEAN)  # clean first
    return {
        "per_task_level": cells,
        "per_level": {lv: _mean([c["consistency"] for c in cells if c["level"] == lv]) for lv in levels},
        "perturbed": _mean([c["consistency"] for c in cells if c["level"] != CLEAN]),
    }


def digest(obj) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def fingerprint(uids_by_task: dict[str, list[str]], instructions: dict[str, dict[str, list[str]]]) -> dict:
    """What makes two evaluations comparable: the rows scored and the instructions given.

    Args:
        uids_by_task: ``{task: [row uid, ...]}`` in evaluation order.
        instructions: ``{perturbation: {task: [instruction, ...]}}`` as evaluated (for the adversarial
            mode: the instructions the search started from).

    Returns:
        ``{"rows": sha256, "instructions": sha256, "rows_per_task": {task: n}}``.
    """
    return {
        "rows": digest(uids_by_task),
        "instructions": digest(instructions),
        "rows_per_task": {t: len(u) for t, u in uids_by_task.items()},
    }


FILES = {
    "predictions": "predictions.jsonl",
    "metrics": "metrics.json",
    "per_instruction_csv": "metrics_per_instruction.csv",
    "per_task_level_csv": "metrics_per_task_level.csv",
    "markdown": "results.md",
    "accuracy_plot": "accuracy_by_level.png",
    "clean_vs_perturbed_plot": "clean_vs_perturbed.png",
    "adversarial_instructions": "adversarial_instructions.yaml",
}
"""Output file names inside a run directory."""


class RunDirError(UserError, ValueError):
    """A run directory without (readable) evaluation results."""


def read_metrics(run_dir: str | Path) -> dict:
    """Load ``metrics.json`` of a run directory.

    Raises:
        RunDirError: not a directory, no ``metrics.json``, or unreadable / incomplete JSON.
    """
    path = Path(run_dir) / FILES["metrics"]
    if not Path(run_dir).is_dir():
        raise RunDirError(f"{run_dir}: not a directory")
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {FILES['metrics']} (not an evaluation run directory, or it has not finished)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunDirError(f"{path}: unreadable JSON ({exc})") from None
    for key in ("fingerprint", "per_task_level", "per_level", "levels", "tasks"):
        if key not in metrics:
            raise RunDirError(f"{path}: missing key {key!r}")
    return metrics
