"""Markdown of run comparisons and sweeps: accuracy and PDR per level, category and task, with bootstrap
intervals of the differences (the numbers come from :mod:`coin_lightning.eval.scoring.comparison`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from coin_lightning.eval.reports.tables import markdown_table, pct


def signed_points(x: float | None) -> str:
    """A difference of fractions in signed accuracy points (``+1.25``), ``"-"`` for ``None``."""
    if x is None:
        return "-"
    v = 100 * x
    return f"{0.0 if abs(v) < 0.005 else v:+.2f}"  # no "-0.00" for float noise


def interval_text(c: dict | None) -> str:
    """``delta [low, high]`` in signed points; the delta alone without bounds; ``"-"`` for ``None``."""
    if c is None:
        return "-"
    if c.get("low") is None:
        return signed_points(c["delta"])
    return f"{signed_points(c['delta'])} [{signed_points(c['low'])}, {signed_points(c['high'])}]"


def interval_rows(boots: Sequence[dict], part: str) -> list[list[str]]:
    """Table rows of :func:`interval_text` cells, a column per bootstrap result (all of the same cells):
    ``part`` is ``per_level`` (then ``perturbed``), ``per_category``, ``per_task_level`` or
    ``robustness_effect``."""
    def cells(b: dict) -> list[tuple[list[str], dict | None]]:
        if part == "per_level":
            return [([lv], c) for lv, c in b["per_level"].items()] + [(["perturbed"], b["perturbed"])]
        if part == "per_category":
            return [([c, lv], x) for c, by in b["per_category"].items() for lv, x in by.items()]
        if part == "per_task_level":
            return [([r["task"], r["level"]], r) for r in b["per_task_level"]]
        return [([lv], x) for lv, x in (b[part] or {}).items()]

    columns = [cells(b) for b in boots]
    return [labels + [interval_text(col[i][1]) for col in columns] for i, (labels, _) in enumerate(columns[0])]


def bootstrap_markdown(cmp: dict) -> str:
    """Markdown tables of the bootstrap intervals (per level, per category, per task); '' without them."""
    boot = cmp.get("bootstrap")
    if not boot:
        return ""
    names, first = list(boot), next(iter(boot.values()))
    parts = [f"\nPaired bootstrap: Δ accuracy points vs `{cmp['names'][0]}` [{100 * first['confidence']:g}% interval], "
             f"{first['resamples']} resamples of {' and '.join(first['resample'])} (seed {first['seed']}).\n\n"]
    for text, part, labels in (("", "per_level", ["level"]), ("\nBy task category.\n\n", "per_category", ["category", "level"]),
                               ("\nBy task.\n\n", "per_task_level", ["task", "level"])):
        parts += [text, markdown_table(labels + names, interval_rows(list(boot.values()), part))]
    return "".join(parts)


def comparison_markdown(cmp: dict) -> str:
    """Markdown: accuracy per level (mean ± std, %), deltas to the first run, PDR; per task; bootstrap."""
    names, base = cmp["names"], cmp["names"][0]
    header = ["level"] + [f"{n}" for n in names] + [f"Δ {n} vs {base}" for n in names[1:]]
    body = []
    for lv, by in cmp["per_level"].items():
        cells = [f"{pct(by[n]['mean'])}" + (f" ± {pct(by[n]['std'])}" if by[n]["std"] is not None else "") for n in names]
        body.append([lv] + cells + [signed_points(by[n]["delta"]) for n in names[1:]])
    pdr_body = [[lv] + [pct(by[n]["pdr"]) for n in names] for lv, by in cmp["per_level"].items() if lv != "clean"]
    cat_body = [[c, lv] + [pct(by.get(n)) for n in names] for c, levels in cmp.get("per_category", {}).items()
                for lv, by in levels.items()]
    task_header = ["task", "level"] + names + [f"Δ {n}" for n in names[1:]]
    task_body = [[r["task"], r["level"]] + [pct(r[n]) for n in names] + [signed_points(r[f"{n} delta"]) for n in names[1:]]
                 for r in cmp["per_task_level"]]
    return "".join([
        "# Comparison\n\n", "Runs: " + ", ".join(f"`{n}` = {d}" for n, d in zip(names, cmp["run_dirs"])) + "\n\n",
        "Accuracy (%) per perturbation level (mean over tasks of the mean across instructions ± mean std); "
        "Δ in accuracy points.\n\n", markdown_table(header, body),
        "\nPerformance Drop Rate (%).\n\n", markdown_table(["level"] + names, pdr_body),
        "\nPer task category (mean over its tasks).\n\n", markdown_table(["category", "level"] + names, cat_body),
        "\nPer task.\n\n", markdown_table(task_header, task_body), bootstrap_markdown(cmp),
    ])


def sweep_markdown(parameter: str, points: Sequence[tuple[object, dict, Path]]) -> str:
    """Markdown: accuracy (%) per level and PDR for each value of the swept parameter."""
    levels = list(dict.fromkeys(lv for _, m, _ in points for lv in m["levels"]))
    body = [[str(v)] + [pct(m["per_level"].get(lv, {}).get("mean")) for lv in levels] + [pct(m["overall"]["pdr"]), str(j)]
            for v, m, j in points]
    return f"# Sweep over `{parameter}`\n\nAccuracy (%) per level.\n\n" + markdown_table([parameter] + levels + ["PDR", "job"], body)
