"""``results/summary.json`` and the copied comparison files of the robustness study.

Schema (accuracies in %)::

    {"primary_metric": "exact_match", "instruction_set": "default",
     "arms": {"<name>": {"lambda": x, "pooling": p, "append_eos": b, "seeds": [..], "clean": acc, "perturbed": acc,
                         "consistency": c, "per_task_clean": {task: acc}}},
     "pairing": {"holds", "varying", "reason"},
     "delta_perturbed": {"<arm> - <reference arm>": {"mean": d, "ci95": [lo, hi]}},
     "instruction_sets": {"<set>": {"arms": ..., "delta_perturbed": ...}},   # default, attacked, file_*
     "secondary": {"metric": "rank", "arms": ..., "delta_perturbed": ...},
     "tasks": {"kept", "dropped", "floor_clean", "screened_out"}, "sizes": {...}, "target": {...}, "attack": {...},
     "stages": {stage: {"wall_s", "jobs_run", "jobs_skipped", "jobs_restored"}}}

``clean``/``perturbed`` are the arm's mean over seeds; ``consistency`` is the share of inputs answered
the same under every perturbed instruction of a level (mean over perturbed levels and seeds);
``screened_out``: the tasks the screen before the pilot dropped (``results/screen.json``, from
``python -m experiments.robustness_study.power``), with the reason;
``ci95`` is the hierarchical bootstrap interval of ``compare --sweep`` (seeds, rows, and base instructions
drawn once per task and shared by every level), with seeds paired (seed s of both arms),
``ci95_independent_seeds`` the same with each arm's seeds drawn independently; ``pairing`` says whether
pairing holds (:func:`coin_lightning.eval.scoring.sweep.seed_pairing`); ``target.reached_half_width_points``
is the widest half-width of ``ci95`` (:func:`reached_half_width`).
``pooling`` and ``append_eos`` are the pooled state of the InfoNCE (``loss.pooling``, ``data.append_eos``): the
arm's overrides, else the defaults of ``conf/loss/coin.yaml`` and ``conf/data/embedded.yaml`` (:data:`DEFAULTS`).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from coin_lightning.eval.scoring.sweep import seed_pairing
from coin_lightning.io import write_json
from experiments.robustness_study.jobs import REPO, Jobs, portable

METRIC_NAMES = {"generate": "exact_match", "rank": "rank"}
"""``eval.method`` -> the metric's name in the summary."""
COPIED = ("comparison.md", "comparison.json", "accuracy_by_level.png", "consistency.png", "differences.png")
"""Files of each ``compare --sweep`` output copied into the results (``differences.png``, the headline
figure, only exists with a bootstrap)."""


DEFAULTS = {"loss.pooling": "last", "data.append_eos": True}
"""The pooled state when a job does not override it (``conf/loss/coin.yaml``, ``conf/data/embedded.yaml``)."""


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 3)


def copy_comparison(out: Path, dest: Path, work: Path | None = None) -> None:
    """Copy the :data:`COPIED` files of one ``compare --sweep`` output to ``dest``, the text ones with their
    paths :func:`portable` (the work directory ``work`` as ``<work>``): committed files name no machine's path."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in COPIED:
        if not (out / f).is_file():
            continue
        if f.endswith((".md", ".json")):
            (dest / f).write_text(portable((out / f).read_text(encoding="utf-8"), work), encoding="utf-8")
        else:
            shutil.copy2(out / f, dest / f)


def reached_half_width(block: dict) -> float | None:
    """The widest half-width (points) of the paired 95% intervals in ``block["delta_perturbed"]`` (the one
    ``target`` compares with ``power.half_width_points``); ``None`` without a bootstrap."""
    half = [(d["ci95"][1] - d["ci95"][0]) / 2 for d in block["delta_perturbed"].values() if d["ci95"][0] is not None]
    return max(half) if half else None


def arm_block(cmp: dict, arms: dict) -> dict:
    """``{"arms", "delta_perturbed"}`` of one ``compare --sweep`` result, arms named as in ``study.yaml``."""
    names = {}
    for cname, a in cmp["arms"].items():
        lam = float(a["overrides"].get("loss.lambda"))
        names[cname] = next(n for n, v in arms.items() if float(v) == lam)
    out_arms = {}
    for cname, a in cmp["arms"].items():
        cons = a["consistency"].get("perturbed", {}).get("mean")
        out_arms[names[cname]] = {
            "lambda": float(a["overrides"]["loss.lambda"]),
            "pooling": a["overrides"].get("loss.pooling", DEFAULTS["loss.pooling"]),
            "append_eos": bool(a["overrides"].get("data.append_eos", DEFAULTS["data.append_eos"])), "seeds": a["seeds"],
            "clean": _pct(a["accuracy"]["clean"]["mean"]), "perturbed": _pct(a["accuracy"]["perturbed"]["mean"]),
            "consistency": _pct(cons),
            "per_task_clean": {c["task"]: _pct(c["mean"]) for c in a["per_task_level"] if c["level"] == "clean"},
        }
    out_arms = {n: out_arms[n] for n in arms if n in out_arms}  # in study.yaml's order
    ref = names[cmp["reference"]]
    deltas = {}
    for key, d in cmp["delta"].items():
        arm = names[key.split(" - ")[0]]
        p, q = d["perturbed"], (cmp.get("delta_independent") or {}).get(key, {}).get("perturbed")
        deltas[f"{arm} - {ref}"] = {"mean": _pct(p["delta"]), "ci95": [_pct(p["low"]), _pct(p["high"])],
                                    "ci95_independent_seeds": [_pct(q["low"]), _pct(q["high"])] if q else None}
    pairing = cmp.get("pairing") or seed_pairing([a["overrides"] for a in cmp["arms"].values()])
    return {"arms": out_arms, "pairing": pairing, "delta_perturbed": deltas}


def write_summary(cfg, compared: dict[str, Path], results: Path, power: dict, arms: dict, seeds: list[int],
                  rows: int, work: Path | None = None) -> dict:
    """Copy each comparison into ``results`` (the default set at the top, the others in ``<name>/``; the work
    directory ``work`` named ``<work>``) and write ``summary.json``; return it."""
    blocks = {}
    for name, out in compared.items():
        copy_comparison(out, results if name == "default" else results / name, work)
        blocks[name] = arm_block(json.loads((out / "comparison.json").read_text(encoding="utf-8")), arms)
    secondary = str(cfg.secondary_method) if cfg.get("secondary_method") else None
    sets = {n: b for n, b in blocks.items() if n != secondary}
    primary = sets["default"]
    reached = reached_half_width(primary)
    attack = json.loads((results / "attack.json").read_text(encoding="utf-8")) if (results / "attack.json").is_file() else None
    screen = json.loads((results / "screen.json").read_text(encoding="utf-8")) if (results / "screen.json").is_file() else {}
    stages = json.loads((results / "stages.json").read_text(encoding="utf-8")) if (results / "stages.json").is_file() else {}
    summary = {
        "primary_metric": METRIC_NAMES.get(str(cfg.eval.method), str(cfg.eval.method)),
        "instruction_set": "default",
        **primary,
        "instruction_sets": sets,
        "secondary": {"metric": METRIC_NAMES.get(secondary, secondary), **blocks[secondary]} if secondary else None,
        "tasks": {"kept": power["tasks"]["kept"], "dropped": power["tasks"]["dropped"],
                  "floor_clean": _pct(power["tasks"]["floor"]),
                  "screened_out": screen.get("dropped", {})},
        "sizes": {"model": cfg.model, "seeds": seeds, "rows_per_task": rows, "levels": list(cfg.eval.levels),
                  "from_pilot": power["chosen"], "bootstrap": cfg.bootstrap},
        "target": {"half_width_points": cfg.power.half_width_points, "reached_half_width_points": reached,
                   "met": reached is not None and reached <= cfg.power.half_width_points,
                   "seeds_per_arm_at_least_3": len(seeds) >= 3},
        "attack": attack,
        "stages": stages,
    }
    write_json(results / "summary.json", summary)
    return summary


def redraw_differences(results: Path) -> list[Path]:
    """Draw ``differences.png`` (paired differences per level with their 95% intervals,
    :func:`coin_lightning.eval.reports.plots.paired_differences_figure`) next to every ``comparison.json``
    under ``results`` (but the instruction regime's, which draws ``drop_by_level.png``), from the recorded
    numbers: no job runs again. Returns the figures written."""
    from coin_lightning.eval.reports.plots import paired_differences_figure, save_png

    written = []
    for path in sorted(Path(results).rglob("comparison.json")):
        cmp = json.loads(path.read_text(encoding="utf-8"))
        parts = path.relative_to(results).parts
        if cmp.get("delta") and "jobs" not in parts and "instruction_regime" not in parts:  # that regime draws its own
            view = path.parent.relative_to(results).as_posix()
            title = "CoIN - continual: paired difference by level" + ("" if view == "." else f" ({view} view)")
            written.append(save_png(paired_differences_figure(cmp["delta"], title), path.parent / "differences.png"))
    return written


def recompare(results: Path, work: Path, bootstrap: int) -> dict:
    """Compare the committed jobs again, without running one: each job group of ``results/jobs`` (``sweep``
    and ``views/<view>``) is restored into ``work`` (:meth:`Jobs.restore`) and ``compare --sweep`` runs on it
    (continual, ``loss.lambda=0``, as the reference), so the comparisons and ``summary.json`` gain what
    ``compare --sweep`` reports today (the pairing and the independent-seed intervals), and ``target`` the
    half-width they reach, while the rest of ``summary.json`` (sizes, attack, stages) stays as the study wrote
    it. Returns the updated summary."""
    jobs = Jobs(REPO, results, work=work)
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    arms = {name: a["lambda"] for name, a in summary["arms"].items()}
    groups = {"default": "sweep", **{v.name: f"views/{v.name}" for v in sorted((results / "jobs" / "views").iterdir())}}
    for view, group in groups.items():
        for rec in sorted((results / "jobs" / group).iterdir()):
            jobs.restore(group, rec.name, work / group / rec.name, work / group / rec.name / "eval")
        out = work / "compare" / view
        jobs.run("compare", out, [sys.executable, "-m", "coin_lightning.compare", "--sweep", str(work / group),
                                  "--reference", "loss.lambda=0", "--bootstrap", str(bootstrap), "--out", str(out)],
                 done_when=out / "comparison.json")
        copy_comparison(out, results if view == "default" else results / view, work)
        block = arm_block(json.loads((out / "comparison.json").read_text(encoding="utf-8")), arms)
        if summary.get("secondary") and view == summary["secondary"]["metric"]:
            summary["secondary"] = {"metric": view, **block}
        else:
            summary["instruction_sets"][view] = block
            if view == "default":
                summary.update(block)
                reached = reached_half_width(block)  # the target follows the new intervals
                summary["target"].update(reached_half_width_points=reached,
                                         met=reached is not None and reached <= summary["target"]["half_width_points"])
    write_json(results / "summary.json", summary)
    return summary


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m experiments.robustness_study.summary",
                                description="redraw the headline figures of the committed study, or compare its jobs again")
    p.add_argument("results", nargs="?", default=str(Path(__file__).parent / "results"))
    p.add_argument("--recompare", metavar="WORK", help="restore the committed jobs into WORK and compare them again")
    p.add_argument("--bootstrap", type=int, default=2000)
    args = p.parse_args()
    if args.recompare:
        recompare(Path(args.results).resolve(), Path(args.recompare).resolve(), args.bootstrap)
    for figure in redraw_differences(Path(args.results)):
        print(figure)
