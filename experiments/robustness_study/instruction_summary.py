"""``results/instruction_regime/summary.json`` and ``drop_by_level.png`` of the instruction-regime study.

Schema (accuracies, drops and rates in points, i.e. %)::

    {"primary_metric": "exact_match",
     "regime": {"description", "tasks", "pilots": [{"setting", "overrides", "continual_drop", "off_label_rate"}],
                "lambda_pilots": [{"setting", "arm", "lambda", "pooling", "seed", "clean", "perturbed", "drop",
                                   "off_label_rate"}]},
     "gate": {"continual_drop", "off_label_rate", "passed", "thresholds"},
     "arms": {name: {"lambda", "pooling", "append_eos", "seeds", "clean", "perturbed", "drop", "drop_per_level",
                     "consistency", "off_label_rate"}},
     "pairing": {"holds", "varying", "reason"},
     "robustness_effect": {"<arm> - continual": {"mean", "ci95", "ci95_independent_seeds", "per_level"}},
     "delta_perturbed": {"<arm> - continual": {"mean", "ci95", "ci95_independent_seeds"}},
     "target": {"half_width_points", "reached", "met", "by_unit": {"<arm> - continual": {unit: half_width}}}}

- ``drop`` = clean minus perturbed accuracy (positive: the arm loses accuracy when the instruction is perturbed);
  ``drop_per_level`` the same per level.
- ``robustness_effect`` = continual's drop minus the arm's drop (``compare --sweep``'s ``robustness_effect``:
  the arm's perturbed-minus-clean change minus continual's), so **positive means the arm is more robust**;
  ``ci95`` pairs seeds (seed s of both arms), ``ci95_independent_seeds`` draws each arm's seeds independently.
- ``off_label_rate``: answers outside the task's label words (``yes``/``no``), over every evaluated instruction
  (all unseen in training), mean over seeds.
- ``target.by_unit``: the robustness effect's half-width when the bootstrap draws only the seeds, only the rows,
  only the instructions, or rows and instructions (:func:`half_widths_by_unit`).
- ``consistency``: inputs answered the same under every perturbed instruction of a level (mean over levels, seeds).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from coin_lightning.eval.scoring.bootstrap import correctness, hierarchical_bootstrap, read_predictions  # noqa: E402
from coin_lightning.eval.scoring.sweep import results_dir  # noqa: E402
from coin_lightning.io import write_json  # noqa: E402
from experiments.robustness_study.instruction_regime import TASKS  # noqa: E402
from experiments.robustness_study.jobs import portable  # noqa: E402

DESCRIPTION = ("Two yes/no tasks over the same GLUE sst2 sentences, told apart by the instruction alone: "
               "sst2_positive ('does the review praise the film?') and sst2_negative ('does it pan the film?'). "
               "Evaluation instructions are unseen in training and do not name the answer words.")


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 3)


def _ci(d: dict) -> list:
    return [_pct(d["low"]), _pct(d["high"])]


def pilot_record(job: Path) -> dict:
    """One pilot's setting, drop (clean minus perturbed, points) and off-label rate (%), from its small outputs
    in ``results/jobs/pilot/<setting>``: ``continual_drop`` for a regime pilot (continual tuning); ``arm``,
    ``lambda``, ``pooling``, ``seed`` and ``drop`` for a lambda pilot of a CoIN arm (its job record names the arm)."""
    m = json.loads((job / "metrics.json").read_text(encoding="utf-8"))["overall"]
    rec = json.loads((job / "job.json").read_text(encoding="utf-8"))
    drop = {"continual_drop": _pct(m["clean"] - m["perturbed"])}
    if "arm" in rec:
        drop = {"arm": rec["arm"], "lambda": rec["lambda"], "pooling": rec["pooling"], "seed": rec["seed"],
                "drop": _pct(m["clean"] - m["perturbed"])}
    return {"setting": rec.get("setting", job.name), **({} if "arm" in rec else {"overrides": rec.get("overrides", [])}),
            **drop, "off_label_rate": _pct(m["unparseable"]), "clean": _pct(m["clean"]), "perturbed": _pct(m["perturbed"])}


def seed_cells(jobs: list[str]) -> list[dict]:
    """Each job's (one per seed) correctness cells (:func:`correctness` of its predictions), read once and
    shared by the intervals below."""
    return [correctness(read_predictions(results_dir(j))) for j in jobs]


def drop_intervals(cells: list[dict], resamples: int) -> dict:
    """Per level, an arm's drop from clean (points) with its 95% interval (seeds, rows and instructions
    resampled: :func:`hierarchical_bootstrap` of the arm alone); ``cells``: :func:`seed_cells` of its jobs."""
    own = hierarchical_bootstrap(cells, None, resamples, 0)["robustness_effect"]
    return {lv: {"mean": -_pct(e["delta"]), "ci95": [-_pct(e["high"]), -_pct(e["low"])]} for lv, e in own.items()}


HALF_WIDTH_UNITS = {"seeds": ("seeds",), "rows": ("rows",), "instructions": ("instructions",),
                    "rows+instructions": ("rows", "instructions")}
"""The resampled units of each half-width in ``target.by_unit``."""


def half_widths_by_unit(arm: list[dict], ref: list[dict], resamples: int) -> dict:
    """The robustness effect's 95% half-width (points, seeds paired) when the bootstrap draws only some units
    (:data:`HALF_WIDTH_UNITS`): which source of variation sets the interval's width. ``arm``, ``ref``:
    :func:`seed_cells` of each arm's jobs, in seed order."""
    out = {}
    for name, units in HALF_WIDTH_UNITS.items():
        e = hierarchical_bootstrap(arm, ref, resamples, 0, resample=units)["robustness_effect"]["perturbed"]
        out[name] = round((_pct(e["high"]) - _pct(e["low"])) / 2, 3)
    return out


def drop_figure(drops: dict[str, dict], path: Path) -> Path:
    """Grouped bars: each arm's drop per level with its 95% interval."""
    levels = list(next(iter(drops.values())))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(drops)
    for i, (arm, by) in enumerate(drops.items()):
        xs = [k + (i - (len(drops) - 1) / 2) * width for k in range(len(levels))]
        means = [by[lv]["mean"] for lv in levels]
        err = [[m - by[lv]["ci95"][0] for lv, m in zip(levels, means)], [by[lv]["ci95"][1] - m for lv, m in zip(levels, means)]]
        ax.bar(xs, means, width, yerr=err, capsize=3, label=arm)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylabel("drop from clean (accuracy points)")
    ax.set_title("Drop from clean instructions per level (95% intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(cfg, compared: Path, results: Path, work: Path | None = None) -> dict:
    """Copy ``comparison.{md,json}`` from ``compared`` into ``results`` (their paths :func:`portable`, the
    work directory ``work`` as ``<work>``); write ``summary.json`` (schema in the module docstring) and
    ``drop_by_level.png``; return the summary."""
    for f in ("comparison.md", "comparison.json"):  # committed: no path of this machine
        (results / f).write_text(portable((compared / f).read_text(encoding="utf-8"), work), encoding="utf-8")
    cmp = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    names = {}
    for cname, a in cmp["arms"].items():
        lam, pooling = float(a["overrides"]["loss.lambda"]), a["overrides"]["loss.pooling"]
        names[cname] = next(n for n, v in cfg.arms.items() if float(v["lambda"]) == lam and v.pooling == pooling)
    ref = names[cmp["reference"]]
    arms, drops, cells = {}, {}, {}
    for cname, a in cmp["arms"].items():
        name = names[cname]
        acc = a["accuracy"]
        unparseable = [json.loads((results / "jobs" / "sweep" / f"{name}_seed{s}" / "metrics.json").read_text(
            encoding="utf-8"))["overall"]["unparseable"] for s in a["seeds"]]
        cells[name] = seed_cells(a["jobs"])
        drops[name] = drop_intervals(cells[name], int(cfg.bootstrap))
        arms[name] = {"lambda": float(a["overrides"]["loss.lambda"]), "pooling": a["overrides"]["loss.pooling"],
                      "append_eos": bool(a["overrides"]["data.append_eos"]), "seeds": a["seeds"],
                      "clean": _pct(acc["clean"]["mean"]), "perturbed": _pct(acc["perturbed"]["mean"]),
                      "drop": _pct(acc["clean"]["mean"] - acc["perturbed"]["mean"]),
                      "drop_per_level": drops[name], "consistency": _pct(a["consistency"]["perturbed"]["mean"]),
                      "off_label_rate": _pct(statistics.fmean(unparseable))}
    arms = {n: arms[n] for n in cfg.arms if n in arms}
    effect, delta = {}, {}
    for key, d in cmp["delta"].items():
        arm, ind = names[key.split(" - ")[0]], cmp["delta_independent"][key]
        e, ei = d["robustness_effect"], ind["robustness_effect"]
        effect[f"{arm} - {ref}"] = {"mean": _pct(e["perturbed"]["delta"]), "ci95": _ci(e["perturbed"]),
                                    "ci95_independent_seeds": _ci(ei["perturbed"]),
                                    "per_level": {lv: {"mean": _pct(v["delta"]), "ci95": _ci(v),
                                                       "ci95_independent_seeds": _ci(ei[lv])}
                                                  for lv, v in e.items() if lv != "perturbed"}}
        delta[f"{arm} - {ref}"] = {"mean": _pct(d["perturbed"]["delta"]), "ci95": _ci(d["perturbed"]),
                                   "ci95_independent_seeds": _ci(ind["perturbed"])}
    pilots = [pilot_record(p) for p in sorted((results / "jobs" / "pilot").iterdir()) if (p / "job.json").is_file()]
    pilots, lambda_pilots = [p for p in pilots if "arm" not in p], [p for p in pilots if "arm" in p]
    g = cfg.gate
    cont = arms[ref]
    half = {k: round((v["ci95"][1] - v["ci95"][0]) / 2, 3) for k, v in effect.items()}
    by_unit = {k: half_widths_by_unit(cells[k.split(" - ")[0]], cells[ref], int(cfg.bootstrap)) for k in effect}
    summary = {
        "primary_metric": "exact_match" if cfg.eval.method == "generate" else str(cfg.eval.method),
        "regime": {"description": DESCRIPTION, "tasks": list(TASKS), "setting": str(cfg.setting),
                   "rows_per_task": int(cfg.eval.rows_per_task), "pilots": pilots, "lambda_pilots": lambda_pilots},
        "gate": {"continual_drop": cont["drop"], "off_label_rate": cont["off_label_rate"],
                 "passed": cont["drop"] >= g.drop_points or cont["off_label_rate"] >= g.off_label_percent,
                 "thresholds": {"drop_points": g.drop_points, "off_label_percent": g.off_label_percent},
                 "measured_on": f"the {ref} arm, mean over seeds"},
        "arms": arms, "pairing": cmp["pairing"], "robustness_effect": effect, "delta_perturbed": delta,
        "target": {"half_width_points": 1.5, "reached": half, "met": all(h <= 1.5 for h in half.values()),
                   "by_unit": by_unit},
    }
    write_json(results / "summary.json", summary)
    drop_figure(drops, results / "drop_by_level.png")
    return summary
