"""Writing an evaluation's results: predictions (JSONL), metrics (JSON + CSV), a markdown table.

Every file goes through :mod:`coin_lightning.io` (atomic). File names are fixed so that
``compare`` can find them in any run directory (:data:`FILES`).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from coin_lightning.eval.scoring.metrics import FILES
from coin_lightning.io import write_json, write_jsonl, write_text


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string, ``"-"`` for ``None``."""
    return "-" if x is None else f"{100 * x:.{digits}f}"


def mean_std(s: dict | None) -> str:
    """``mean ± std`` (%), then `` [low, high]`` when ``s`` has a bootstrap interval; ``"-"`` for ``None``
    (or no mean)."""
    if s is None or s["mean"] is None:
        return "-"
    text = pct(s["mean"]) + (f" ± {pct(s['std'])}" if s["std"] is not None else "")
    return text + (f" [{pct(s['low'])}, {pct(s['high'])}]" if s.get("low") is not None else "")


def to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """CSV text with a header row; missing values are empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # None and missing values are written as ""
    return buf.getvalue()


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def results_markdown(metrics: dict, title: str = "Evaluation") -> str:
    """The paper's table (accuracy %, mean ± std across instructions, per task and level), then
    averages per level and category, PDR and the share of unparseable answers. A ``run`` entry of
    ``metrics`` (model, method, instructions) is summarised under the title."""
    levels, tasks = metrics["levels"], metrics["tasks"]
    cell = {(c["task"], c["level"]): c for c in metrics["per_task_level"]}

    def by_task(fmt, lvs: Sequence[str]) -> str:  # a row per task, then the average over tasks
        body = [[t] + [fmt(cell.get((t, lv))) for lv in lvs] for t in tasks]
        body.append(["**average**"] + [fmt(metrics["per_level"].get(lv)) for lv in lvs])
        return markdown_table(["task"] + list(lvs), body)

    parts = [f"# {title}\n\n"]
    if run := metrics.get("run"):
        parts.append(f"Method `{run.get('method')}`, prompt format `{run.get('prompt_format')}`, "
                     f"{run.get('samples_per_task')} rows per task (seed {run.get('seed')}), "
                     f"instructions: {run.get('instructions')}.\n\n")
    parts += ["Accuracy (%) by task and perturbation level: mean ± std across instructions.\n\n",
              by_task(mean_std, levels)]
    cats = metrics["per_category"]
    parts += ["\nBy task category (mean over its tasks, %).\n\n",
              markdown_table(["category"] + list(levels),
                             [[c] + [pct(cats[c][lv]["mean"]) if lv in cats[c] else "-" for lv in levels] for c in cats])]
    perturbed = [lv for lv in levels if lv != "clean"]
    if perturbed:
        parts += ["\nPerformance Drop Rate (%, PromptBench: 1 - acc_perturbed / acc_clean).\n\n",
                  by_task(lambda c: pct(c["pdr"]) if c else "-", perturbed)]
    o = metrics["overall"]
    parts += ["\nOverall: clean {} %, perturbed {} %, PDR {} %, unparseable answers {} % of {} predictions.\n".format(
        pct(o["clean"]), pct(o["perturbed"]), pct(o["pdr"]), pct(o["unparseable"]), o["n_examples"])]
    return "".join(parts)


TABLES = {"per_task_level": ("task", "category", "level", "mean", "std", "n_instructions", "pdr", "unparseable"),
          "per_instruction": ("task", "category", "level", "perturbation", "instruction_index", "n", "correct",
                              "accuracy", "unparseable", "pdr", "instruction")}
"""Metrics entries written as CSV tables (``FILES["<name>_csv"]``) and logged as tables, with their columns."""


def write_results(run_dir: str | Path, rows: Sequence[dict], metrics: dict, title: str = "Evaluation") -> None:
    """Write predictions, metrics JSON and CSVs and the markdown table into ``run_dir`` (:data:`FILES`)."""
    run_dir = Path(run_dir)
    write_jsonl(run_dir / FILES["predictions"], list(rows))
    write_json(run_dir / FILES["metrics"], metrics)
    for name, columns in TABLES.items():
        write_text(run_dir / FILES[f"{name}_csv"], to_csv(metrics[name], columns))
    write_text(run_dir / FILES["markdown"], results_markdown(metrics, title))


