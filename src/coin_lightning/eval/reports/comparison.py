"""Markdown and files of run comparisons and sweeps (``compare``): accuracy and PDR per level, category and
task, with bootstrap intervals of the differences (the numbers come from
:mod:`coin_lightning.eval.scoring.comparison` and :mod:`coin_lightning.eval.scoring.sweep`).

:func:`write_comparison` writes a comparison of run directories. :func:`write_sweep` writes
``compare --sweep``: a sweep whose varying overrides are all ``eval.perturb.*`` keys (or any sweep
given ``--param``) changes the instructions on purpose and is plotted against the swept value
(``sweep.md``/``.json``/``.png``, :func:`coin_lightning.eval.scoring.comparison.sweep_points`); any other
sweep is compared arm by arm across seeds (:func:`coin_lightning.eval.scoring.sweep.compare_sweep`:
``comparison.md``, ``comparison.json``, ``accuracy_by_level.png``, ``consistency.png``, ``differences.png``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from coin_lightning.eval.reports.plots import (
    arms_figure,
    comparison_figure,
    paired_differences_figure,
    save_png,
    sweep_figure,
)
from coin_lightning.eval.reports.tables import markdown_table, mean_std, pct
from coin_lightning.eval.scoring.comparison import compare_runs, sweep_points
from coin_lightning.eval.scoring.sweep import SEED_KEY, compare_sweep, is_strength_sweep
from coin_lightning.io import write_json, write_text


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
        if part == "per_category":
            return [([c, lv], x) for c, by in b["per_category"].items() for lv, x in by.items()]
        if part == "per_task_level":
            return [([r["task"], r["level"]], r) for r in b["per_task_level"]]
        by_level = {**b["per_level"], "perturbed": b["perturbed"]} if part == "per_level" else b[part] or {}
        return [([lv], x) for lv, x in by_level.items()]

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
    body = [[lv] + [mean_std(by[n]) for n in names] + [signed_points(by[n]["delta"]) for n in names[1:]]
            for lv, by in cmp["per_level"].items()]
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


def sweep_comparison_markdown(cmp: dict) -> str:
    """Markdown of :func:`coin_lightning.eval.scoring.sweep.compare_sweep`: arms, accuracy per level (mean ±
    std over seeds, %), PDR, consistency, paired differences from the reference with bootstrap
    intervals, then per category and per task."""
    names, ref, arms = cmp["arm_names"], cmp["reference"], cmp["arms"]
    others = [n for n in names if n != ref]
    keys = [f"{n} - {ref}" for n in others]
    boot = cmp["bootstrap"]
    arm_body = [[f"`{n}`", ", ".join(str(s) for s in a["seeds"]), str(len(a["jobs"])),
                 ", ".join(Path(j).name for j in a["jobs"])] for n, a in arms.items()]
    parts = [
        "# Sweep comparison\n\n",
        f"Sweep `{cmp['sweep_dir']}`; arms by their overrides other than `{cmp['seed_key']}`; reference arm `{ref}`.\n\n",
        markdown_table(["arm", "seeds", "jobs", "job dirs"], arm_body),
    ]
    for what, text in (("accuracy", "\nAccuracy (%) per level: mean ± std over seeds (sample std) of the mean over tasks "
                                    "[bootstrap interval of the seed mean: seeds, rows and instructions resampled].\n\n"),
                       ("pdr", "\nPerformance Drop Rate (%, mean ± std over seeds).\n\n"),
                       ("consistency", "\nConsistency (% of inputs with the same answer under every instruction of the "
                                       "level; mean ± std over seeds).\n\n")):
        parts += [text, markdown_table(["level"] + names, [[lv] + [mean_std(arms[n][what][lv]) for n in names]
                                                           for lv in arms[ref][what]])]
    if others:
        d = cmp["delta"]
        how = (f"hierarchical bootstrap, {boot['resamples']} resamples of seeds, rows and instructions "
               f"(paired; seed {boot['seed']}), {100 * boot['confidence']:g}% percentile interval"
               if boot["resamples"] else "no bootstrap (--bootstrap 0)")
        both = [f"{k} ({pairing})" for k in keys for pairing in ("paired", "independent seeds")]
        columns = [x[k] for k in keys for x in (d, cmp["delta_independent"])]
        parts += [f"\nΔ accuracy points vs `{ref}` ({how}). Seed pairing: {cmp['pairing']['reason']}.\n\n",
                  markdown_table(["level"] + both, interval_rows(columns, "per_level"))]
        if effect_body := interval_rows(columns, "robustness_effect"):
            parts += ["\nRobustness effect (points): the arm's drop from clean (level minus clean) minus the "
                      f"reference's drop; above 0 = the arm loses less than `{ref}` under perturbation.\n\n",
                      markdown_table(["level"] + both, effect_body)]
        parts += ["\nBy task category (paired).\n\n",
                  markdown_table(["category", "level"] + keys, interval_rows([d[k] for k in keys], "per_category"))]
    cat_acc = [[c, lv] + [mean_std(arms[n]["per_category"].get(c, {}).get(lv)) for n in names]
               for c, by in arms[ref]["per_category"].items() for lv in by]
    parts += ["\nAccuracy (%) per task category (mean ± std over seeds).\n\n",
              markdown_table(["category", "level"] + names, cat_acc)]
    deltas = interval_rows([cmp["delta"][k] for k in keys], "per_task_level") if others else None
    task_body = [[cell["task"], cell["level"]] + [mean_std(arms[n]["per_task_level"][i]) for n in names]
                 + (deltas[i][2:] if others else []) for i, cell in enumerate(arms[ref]["per_task_level"])]
    parts += ["\nPer task: accuracy (%, mean ± std over seeds)" + (" and Δ vs the reference.\n\n" if others else ".\n\n"),
              markdown_table(["task", "level"] + names + [f"Δ {n}" for n in others], task_body)]
    return "".join(parts)


def write_report(out: str | Path, stem: str, text: str, data: dict, figures: dict[str, Figure]) -> str:
    """Write ``<stem>.md`` (``text``), ``<stem>.json`` (``data``) and each figure as ``<name>.png`` into
    ``out``; return ``text``."""
    write_text(Path(out) / f"{stem}.md", text)
    write_json(Path(out) / f"{stem}.json", data)
    for name, fig in figures.items():
        save_png(fig, Path(out) / f"{name}.png")
    return text


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None,
                     bootstrap: int = 1000, seed: int = 0) -> str:
    """Compare run directories (:func:`coin_lightning.eval.scoring.comparison.compare_runs`) and write
    ``comparison.md``/``.json``/``.png`` and, with a bootstrap, ``differences.png`` (the paired differences
    per level with their intervals) into ``out``; return the markdown.

    Raises:
        RunDirError, ComparisonError: see ``compare_runs``; nothing is written then.
    """
    cmp = compare_runs(run_dirs, names, bootstrap=bootstrap, seed=seed)
    figures = {"comparison": comparison_figure(cmp)}
    if cmp.get("bootstrap"):  # the headline: paired differences per level with their intervals
        figures["differences"] = paired_differences_figure({f"{n} - {cmp['names'][0]}": d for n, d in cmp["bootstrap"].items()})
    return write_report(out, "comparison", comparison_markdown(cmp), cmp, figures)


def write_sweep(sweep_dir: str | Path, out: str | Path, param: str | None = None, reference: str | None = None,
                bootstrap: int = 1000, seed: int = 0, seed_key: str = SEED_KEY) -> str:
    """Compare a Hydra multirun and write the outputs into ``out``; return the markdown.

    A strength sweep (``param`` given, or only ``eval.perturb.*`` overrides varying) gives
    ``sweep.md``/``sweep.json``/``sweep.png``; otherwise the arms comparison gives ``comparison.md``,
    ``comparison.json``, ``accuracy_by_level.png``, ``consistency.png`` and (with a reference to compare
    with) ``differences.png``.

    Raises:
        RunDirError, ComparisonError: see :func:`coin_lightning.eval.scoring.comparison.sweep_points` and
            :func:`coin_lightning.eval.scoring.sweep.compare_sweep`; nothing is written then.
    """
    if param is not None or is_strength_sweep(sweep_dir, seed_key):
        parameter, points = sweep_points(sweep_dir, param)
        data = {"parameter": parameter, "points": [{"value": v, "job": str(j), "per_level": m["per_level"],
                                                    "overall": m["overall"]} for v, m, j in points]}
        return write_report(out, "sweep", sweep_markdown(parameter, points), data,
                            {"sweep": sweep_figure(parameter, [(v, m) for v, m, _ in points])})
    cmp = compare_sweep(sweep_dir, reference, bootstrap, seed, seed_key)
    figures = {"accuracy_by_level": arms_figure(cmp, "accuracy"), "consistency": arms_figure(cmp, "consistency")}
    if cmp.get("delta"):
        figures["differences"] = paired_differences_figure(cmp["delta"])
    return write_report(out, "comparison", sweep_comparison_markdown(cmp), cmp, figures)
