"""Writing ``compare --sweep``: the arms-across-seeds comparison, or accuracy along a strength sweep.

:func:`write_sweep` decides which: a sweep whose varying overrides are all ``eval.perturb.*`` keys
(or any sweep given ``--param``) changes the instructions on purpose and is plotted against the swept
value (``sweep.md``/``.json``/``.png``, :func:`coin_lightning.eval.scoring.comparison.sweep_points`); any
other sweep is compared arm by arm across seeds (:func:`coin_lightning.eval.scoring.sweep.compare_sweep`:
``comparison.md``, ``comparison.json``, ``accuracy_by_level.png``, ``consistency.png``).
"""
from __future__ import annotations

from pathlib import Path

from coin_lightning.eval.reports.comparison import interval_rows, sweep_markdown
from coin_lightning.eval.reports.plots import (
    arms_accuracy_figure,
    arms_consistency_figure,
    paired_differences_figure,
    save_png,
    sweep_figure,
)
from coin_lightning.eval.reports.tables import markdown_table, pct
from coin_lightning.eval.scoring.comparison import sweep_points
from coin_lightning.eval.scoring.sweep import SEED_KEY, compare_sweep, is_strength_sweep
from coin_lightning.io import write_json, write_text

SWEEP_FILES = {
    "markdown": "comparison.md",
    "json": "comparison.json",
    "accuracy_plot": "accuracy_by_level.png",
    "consistency_plot": "consistency.png",
    "differences_plot": "differences.png",
}
"""Output file names of the arms comparison inside ``--out``."""


def _mean_std(s: dict | None) -> str:
    """``mean ± std`` over seeds (%), then `` [low, high]`` when ``s`` has a bootstrap interval; ``"-"`` for none."""
    if s is None or s["mean"] is None:
        return "-"
    text = pct(s["mean"]) + (f" ± {pct(s['std'])}" if s["std"] is not None else "")
    return text + (f" [{pct(s['low'])}, {pct(s['high'])}]" if s.get("low") is not None else "")


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
        parts += [text, markdown_table(["level"] + names, [[lv] + [_mean_std(arms[n][what][lv]) for n in names]
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
    cat_acc = [[c, lv] + [_mean_std(arms[n]["per_category"].get(c, {}).get(lv)) for n in names]
               for c, by in arms[ref]["per_category"].items() for lv in by]
    parts += ["\nAccuracy (%) per task category (mean ± std over seeds).\n\n",
              markdown_table(["category", "level"] + names, cat_acc)]
    deltas = interval_rows([cmp["delta"][k] for k in keys], "per_task_level") if others else None
    task_body = [[cell["task"], cell["level"]] + [_mean_std(arms[n]["per_task_level"][i]) for n in names]
                 + (deltas[i][2:] if others else []) for i, cell in enumerate(arms[ref]["per_task_level"])]
    parts += ["\nPer task: accuracy (%, mean ± std over seeds)" + (" and Δ vs the reference.\n\n" if others else ".\n\n"),
              markdown_table(["task", "level"] + names + [f"Δ {n}" for n in others], task_body)]
    return "".join(parts)


def write_sweep(sweep_dir: str | Path, out: str | Path, param: str | None = None, reference: str | None = None,
                bootstrap: int = 1000, seed: int = 0, seed_key: str = SEED_KEY) -> str:
    """Compare a Hydra multirun and write the outputs into ``out``; return the markdown.

    A strength sweep (``param`` given, or only ``eval.perturb.*`` overrides varying) gives
    ``sweep.md``/``sweep.json``/``sweep.png``; otherwise the arms comparison gives :data:`SWEEP_FILES`.

    Raises:
        RunDirError, ComparisonError: see :func:`coin_lightning.eval.scoring.comparison.sweep_points` and
            :func:`coin_lightning.eval.scoring.sweep.compare_sweep`; nothing is written then.
    """
    out = Path(out)
    if param is not None or is_strength_sweep(sweep_dir, seed_key):
        parameter, points = sweep_points(sweep_dir, param)
        text = sweep_markdown(parameter, points)
        write_text(out / "sweep.md", text)
        write_json(out / "sweep.json", {"parameter": parameter, "points": [
            {"value": v, "job": str(j), "per_level": m["per_level"], "overall": m["overall"]} for v, m, j in points]})
        save_png(sweep_figure(parameter, [(v, m) for v, m, _ in points]), out / "sweep.png")
        return text
    cmp = compare_sweep(sweep_dir, reference, bootstrap, seed, seed_key)
    text = sweep_comparison_markdown(cmp)
    write_text(out / SWEEP_FILES["markdown"], text)
    write_json(out / SWEEP_FILES["json"], cmp)
    save_png(arms_accuracy_figure(cmp), out / SWEEP_FILES["accuracy_plot"])
    save_png(arms_consistency_figure(cmp), out / SWEEP_FILES["consistency_plot"])
    if cmp.get("delta"):
        save_png(paired_differences_figure(cmp["delta"]), out / SWEEP_FILES["differences_plot"])
    return text
