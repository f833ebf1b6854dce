"""Figures of evaluation results (matplotlib, Agg backend) and sending an evaluation to the configured
Lightning loggers (``conf/logger``: CSV, TensorBoard, W&B).

Each ``*_figure`` function takes metrics dicts (:func:`coin_lightning.eval.scoring.metrics.summarize`), or
comparisons of them, or (:func:`representation_figure`) the hidden states of ``analyze``, and returns a
``matplotlib.figure.Figure``; :func:`save_png` writes one atomically and
:func:`log_figures` sends them to a TensorBoard / W&B logger (other loggers, e.g. CSV, get the PNGs
in their log directory). :func:`log_results` gives every logger the resolved config
(``log_hyperparams``), the scalar metrics (:func:`flat_metrics`) and the figures; a ``WandbLogger``
also gets the result tables as W&B Tables (``log_table``). CSV and TensorBoard keep the scalars; the
full tables are the run directory's CSV files.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from coin_lightning.eval.reports.tables import TABLES  # noqa: E402
from coin_lightning.io import atomic_path  # noqa: E402
from coin_lightning.training.loggers import log_config  # noqa: E402


def _percent(values: Sequence[float | None]) -> list[float]:
    return [100 * v if v is not None else 0.0 for v in values]


def _bar_figure(groups: Sequence[str], series: dict[str, list[float | None]], errors: dict | None, title: str,
                width: float, ylabel: str = "accuracy (%)") -> Figure:
    """Grouped bars: one group per entry of ``groups``, one bar per series (fractions drawn in %, ``None`` as
    0), ``width`` inches per group (at least 6 in all). ``errors``: per series, ``(below, above)`` per bar."""
    fig, ax = plt.subplots(figsize=(max(6, width * len(groups)), 4), layout="tight")
    n = max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        es = [_percent([e[j] for e in errors[name]]) for j in (0, 1)] if errors is not None else None
        ax.bar([i - 0.4 + 0.8 / n * (k + 0.5) for i in range(len(groups))], _percent(values), 0.8 / n, yerr=es,
               label=name, capsize=2)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set(ylim=(0, 118), yticks=range(0, 101, 20), ylabel=ylabel, title=title)  # ylim: room for the legend above 100 %
    ax.legend(fontsize="small", ncol=min(n, 5), loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return fig


def accuracy_by_level_figure(metrics: dict, title: str = "Accuracy by perturbation level") -> Figure:
    """Grouped bars: one group per task (plus the average), one bar per level, std across instructions."""
    cell = {(c["task"], c["level"]): c for c in metrics["per_task_level"]}

    def column(lv: str, key: str) -> list:
        return [cell.get((t, lv), {}).get(key) for t in metrics["tasks"]] + [metrics["per_level"][lv][key]]

    levels = metrics["levels"]
    return _bar_figure(list(metrics["tasks"]) + ["average"], {lv: column(lv, "mean") for lv in levels},
                       {lv: [(e, e) for e in column(lv, "std")] for lv in levels}, title, 1.1)


def clean_vs_perturbed_figure(metrics: dict, title: str = "Clean vs perturbed instructions") -> Figure:
    """Two bars per task: clean accuracy and the mean over perturbed levels."""
    tasks = list(metrics["tasks"])
    clean = {c["task"]: c["mean"] for c in metrics["per_task_level"] if c["level"] == "clean"}
    perturbed = [[c["mean"] for c in metrics["per_task_level"] if c["task"] == t and c["level"] != "clean"] for t in tasks]
    series = {"clean": [clean.get(t) for t in tasks],
              "perturbed (mean of levels)": [sum(cp) / len(cp) if cp else None for cp in perturbed]}
    return _bar_figure(tasks, series, None, title, 1.0)


def comparison_figure(cmp: dict, title: str = "Accuracy by level") -> Figure:
    """Grouped bars of :func:`coin_lightning.eval.scoring.comparison.compare_runs`: one group per level (plus
    ``perturbed``), one bar per run."""
    series = {n: [by[n]["mean"] for by in cmp["per_level"].values()] for n in cmp["names"]}
    return _bar_figure(list(cmp["per_level"]), series, None, title, 1.2)


def sweep_figure(parameter: str, points: Sequence[tuple[float, dict]], title: str | None = None) -> Figure:
    """Accuracy against a swept perturbation strength: one line per non-clean level and the clean level.

    Args:
        parameter: the swept override key (x-axis label).
        points: ``(value, metrics)`` pairs, sorted by value here.
    """
    points = sorted(points, key=lambda p: p[0])
    xs = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), layout="tight")
    levels = list(dict.fromkeys(lv for _, m in points for lv in m["levels"]))
    for lv in levels:
        ys = [100 * m["per_level"][lv]["mean"] if lv in m["per_level"] else float("nan") for _, m in points]
        ax.plot(xs, ys, marker="o", label=lv, linestyle="--" if lv == "clean" else "-")
    ax.set(xlabel=parameter, ylabel="accuracy (%)", title=title or f"Accuracy vs {parameter}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def arms_figure(cmp: dict, what: str = "accuracy") -> Figure:
    """Grouped bars of a sweep comparison (:func:`coin_lightning.eval.scoring.sweep.compare_sweep`): one group
    per level (plus ``perturbed``), one bar per arm at its mean over seeds of ``what``:

    - ``accuracy``: with the bootstrap interval of that mean (seeds, rows and instructions resampled) or,
      without a bootstrap, +-1 std over seeds;
    - ``consistency``: the share of inputs answered alike under every instruction of a level, +-1 std
      over seeds.
    """
    title, ylabel = {"accuracy": ("Accuracy by level per arm", "accuracy (%)"),
                     "consistency": ("Consistency by level per arm", "consistency (% of inputs)")}[what]
    levels = list(next(iter(cmp["arms"].values()))[what])
    cells = {name: [arm[what][lv] for lv in levels] for name, arm in cmp["arms"].items()}
    errors = {name: [(c["mean"] - c["low"], c["high"] - c["mean"]) if c.get("low") is not None
                     else (c["std"] or 0.0, c["std"] or 0.0) for c in cs] for name, cs in cells.items()}
    means = {name: [c["mean"] for c in cs] for name, cs in cells.items()}
    return _bar_figure(levels, means, errors, title, 1.2, ylabel)


def paired_differences_figure(deltas: dict[str, dict], title: str = "Paired difference in accuracy by level") -> Figure:
    """The headline of a comparison: for each perturbation level (and ``perturbed``, their mean), the
    paired difference in accuracy points with its bootstrap interval, one marker per comparison, and
    the zero line (``perturbed`` is left out when it is ``None``: only the clean level was evaluated). Differences of a few points show where 0-100 % bars would hide them.

    Args:
        deltas: ``{"<run or arm> - <reference>": {"per_level": {level: {"delta", "low", "high"}},
            "perturbed": {...}, "confidence": 0.95}}``, i.e. ``compare``'s ``bootstrap`` entries
            (:func:`coin_lightning.eval.scoring.comparison.compare_runs`) or ``compare --sweep``'s
            ``delta`` entries (:func:`coin_lightning.eval.scoring.sweep.compare_sweep`); fractions.
    """
    from coin_lightning.eval.instructions.perturb.config import LEVELS

    first = next(iter(deltas.values()))
    order = {lv: i for i, lv in enumerate(LEVELS)}  # clean, character, word, sentence, semantic (JSON may sort them)
    mean = ["perturbed"] if first.get("perturbed") else []  # None when only the clean level was evaluated
    levels = [*sorted(first["per_level"], key=lambda lv: order.get(lv, len(order))), *mean]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(levels)), 4), layout="tight")
    for k, (name, d) in enumerate(deltas.items()):
        cells = [d["per_level"].get(lv) if lv != "perturbed" else d["perturbed"] for lv in levels]
        xs = [i + (k - (len(deltas) - 1) / 2) * 0.18 for i in range(len(levels))]
        ys = [100 * c["delta"] for c in cells]
        low = [100 * (c["delta"] - c["low"]) if c.get("low") is not None else 0.0 for c in cells]
        high = [100 * (c["high"] - c["delta"]) if c.get("high") is not None else 0.0 for c in cells]
        ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=4, label=name)
    ax.axhline(0.0, color="black", linewidth=0.8)
    if mean:
        ax.axvline(len(levels) - 1.5, color="grey", linewidth=0.5, linestyle=":")  # the levels | their mean
    confidence = first.get("confidence")
    ax.set(xticks=range(len(levels)), xticklabels=levels, title=title,
           ylabel="Δ accuracy (points)" + (f", {100 * confidence:g}% interval" if confidence else ""))
    ax.legend(fontsize="small", loc="best")
    ax.grid(axis="y", alpha=0.3)
    return fig


def representation_figure(states: Sequence[dict], method: str = "umap", seed: int = 0) -> Figure:
    """Scatter of the projected states, one panel per task, coloured by perturbation level.

    All states are projected together, so panels share one embedding.
    """
    from coin_lightning.eval.engine.representations import project  # loads the prediction engine (transformers)

    xy = project(np.concatenate([s["states"].numpy() for s in states]), method, seed)
    tasks = list(dict.fromkeys(s["task"] for s in states))
    levels = list(dict.fromkeys(s["level"] for s in states))
    colours = {lv: plt.get_cmap("tab10")(i) for i, lv in enumerate(levels)}
    cols = min(len(tasks), 3)
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for s, points in zip(states, np.split(xy, np.cumsum([len(s["states"]) for s in states])[:-1])):
        ax = axes.flat[tasks.index(s["task"])]
        ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.7, color=colours[s["level"]],
                   label=s["level"], marker="o" if s["level"] == "clean" else "^")
    for ax, t in zip(axes.flat, tasks):
        ax.set_title(t)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize="x-small")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle(f"Last-token representations ({method.upper()}), clean vs perturbed instructions")
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically, close it, and return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def log_figures(logger, figures: dict[str, Figure], step: int = 0) -> None:
    """Send figures to a Lightning logger: ``TensorBoardLogger`` (``add_figure``), ``WandbLogger``
    (``log_image``); any other logger with a ``log_dir`` gets ``<log_dir>/figures/<name>.png``."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for name, fig in figures.items():
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, fig, global_step=step, close=False)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[fig], step=step)
        elif getattr(logger, "log_dir", None):
            with atomic_path(Path(logger.log_dir) / "figures" / f"{name}.png") as tmp:
                fig.savefig(tmp, format="png", dpi=100)


def flat_metrics(metrics: dict) -> dict[str, float]:
    """Scalars for a logger: ``eval/<task>/<level>/acc_mean`` ..., ``eval/<level>/acc_mean``, ``eval/overall/*``."""
    out: dict[str, float] = {}
    cells = [(f"{c['task']}/{c['level']}", c) for c in metrics["per_task_level"]] + list(metrics["per_level"].items())
    for name, c in cells:
        for k in ("mean", "std", "pdr"):
            if c[k] is not None:
                out[f"eval/{name}/pdr" if k == "pdr" else f"eval/{name}/acc_{k}"] = c[k]
    for k, v in metrics["overall"].items():
        if isinstance(v, (int, float)):
            out[f"eval/overall/{k}"] = float(v)
    return out


def log_results(loggers: Sequence[Any], metrics: dict, figures: dict, config: dict | None = None, step: int = 0) -> None:
    """Send config (unless ``None``), scalars, tables and figures (at ``step``) to every logger, then ``save()`` each."""
    from lightning.pytorch.loggers import WandbLogger

    if config is not None:
        log_config(loggers, config)
    for lg in loggers:
        lg.log_metrics(flat_metrics(metrics), step=step)
        if isinstance(lg, WandbLogger):
            for name, columns in TABLES.items():
                data = [[row.get(c) for c in columns] for row in metrics[name]]
                lg.log_table(key=f"eval/{name}", columns=list(columns), data=data, step=step)
        log_figures(lg, figures, step)
        lg.save()
