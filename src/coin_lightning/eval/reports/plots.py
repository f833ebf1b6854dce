"""Figures of evaluation results (matplotlib, Agg backend) and their hand-off to a Lightning logger.

Each ``*_figure`` function takes metrics dicts (:func:`coin_lightning.eval.scoring.metrics.summarize`) and
returns a ``matplotlib.figure.Figure``; :func:`save_png` writes one atomically and
:func:`log_figures` sends them to a TensorBoard / W&B logger (other loggers, e.g. CSV, get the PNGs
in their log directory).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from coin_lightning.io import atomic_path  # noqa: E402


def _grouped_bars(ax, groups: Sequence[str], series: dict[str, list[float | None]],
                  errors: dict[str, list[float | None]] | None = None) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    for k, (name, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        ys = [100 * v if v is not None else 0.0 for v in values]
        err = None
        if errors is not None:  # symmetric (a value per bar) or asymmetric ((below, above) per bar)
            es = errors[name]
            if any(isinstance(e, tuple) for e in es):
                err = [[100 * e[k] if isinstance(e, tuple) else 0.0 for e in es] for k in (0, 1)]
            else:
                err = [100 * e if e is not None else 0.0 for e in es]
        ax.bar(xs, ys, width, yerr=err, label=name, capsize=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right")
    ax.set_ylim(0, 118)  # head room for the legend above 100 %
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize="small", ncol=min(n, 5), loc="upper center")
    ax.grid(axis="y", alpha=0.3)


def _bar_figure(groups: Sequence[str], series: dict, errors: dict | None, title: str, width: float,
                ylabel: str | None = None) -> Figure:
    """A figure of :func:`_grouped_bars`, ``width`` inches per group (at least 6 in all)."""
    fig, ax = plt.subplots(figsize=(max(6, width * len(groups)), 4))
    _grouped_bars(ax, groups, series, errors)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def accuracy_by_level_figure(metrics: dict, title: str = "Accuracy by perturbation level") -> Figure:
    """Grouped bars: one group per task (plus the average), one bar per level, std across instructions."""
    cell = {(c["task"], c["level"]): c for c in metrics["per_task_level"]}
    groups = list(metrics["tasks"]) + ["average"]
    series, errors = {}, {}
    for lv in metrics["levels"]:
        series[lv] = [cell[(t, lv)]["mean"] if (t, lv) in cell else None for t in metrics["tasks"]]
        series[lv].append(metrics["per_level"][lv]["mean"])
        errors[lv] = [cell[(t, lv)]["std"] if (t, lv) in cell else None for t in metrics["tasks"]]
        errors[lv].append(metrics["per_level"][lv]["std"])
    return _bar_figure(groups, series, errors, title, 1.1)


def clean_vs_perturbed_figure(metrics: dict, title: str = "Clean vs perturbed instructions") -> Figure:
    """Two bars per task: clean accuracy and the mean over perturbed levels."""
    tasks = list(metrics["tasks"])
    clean, perturbed = [], []
    for t in tasks:
        cells = [c for c in metrics["per_task_level"] if c["task"] == t]
        c0 = [c["mean"] for c in cells if c["level"] == "clean"]
        cp = [c["mean"] for c in cells if c["level"] != "clean"]
        clean.append(c0[0] if c0 else None)
        perturbed.append(sum(cp) / len(cp) if cp else None)
    fig, ax = plt.subplots(figsize=(max(6, 1.0 * len(tasks)), 4))
    _grouped_bars(ax, tasks, {"clean": clean, "perturbed (mean of levels)": perturbed})
    ax.set_title(title)
    fig.tight_layout()
    return fig


def comparison_figure(names: Sequence[str], metrics: Sequence[dict], title: str = "Accuracy by level") -> Figure:
    """Grouped bars: one group per level (plus ``overall`` perturbed), one bar per run."""
    levels = list(metrics[0]["levels"])
    series = {}
    for name, m in zip(names, metrics):
        series[name] = [m["per_level"].get(lv, {}).get("mean") for lv in levels] + [m["overall"]["perturbed"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * (len(levels) + 1)), 4))
    _grouped_bars(ax, levels + ["perturbed"], series)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def sweep_figure(parameter: str, points: Sequence[tuple[float, dict]], title: str | None = None) -> Figure:
    """Accuracy against a swept perturbation strength: one line per non-clean level and the clean level.

    Args:
        parameter: the swept override key (x-axis label).
        points: ``(value, metrics)`` pairs, sorted by value here.
    """
    points = sorted(points, key=lambda p: p[0])
    xs = [p[0] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    levels = list(dict.fromkeys(lv for _, m in points for lv in m["levels"]))
    for lv in levels:
        ys = [100 * m["per_level"][lv]["mean"] if lv in m["per_level"] else float("nan") for _, m in points]
        ax.plot(xs, ys, marker="o", label=lv, linestyle="--" if lv == "clean" else "-")
    ax.set_xlabel(parameter)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"Accuracy vs {parameter}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def arms_accuracy_figure(cmp: dict, title: str = "Accuracy by level per arm") -> Figure:
    """Grouped bars of a sweep comparison (:func:`coin_lightning.eval.scoring.sweep.compare_sweep`): one group
    per level (plus ``perturbed``), one bar per arm at its mean over seeds, with the bootstrap interval
    of that mean (seeds, rows and instructions resampled) or, without a bootstrap, +-1 std over seeds."""
    levels = list(next(iter(cmp["arms"].values()))["accuracy"])
    series, errors = {}, {}
    for name, arm in cmp["arms"].items():
        acc = [arm["accuracy"][lv] for lv in levels]
        series[name] = [a["mean"] for a in acc]
        errors[name] = [(a["mean"] - a["low"], a["high"] - a["mean"]) if a.get("low") is not None
                        else (a["std"] or 0.0, a["std"] or 0.0) for a in acc]
    return _bar_figure(levels, series, errors, title, 1.2)


def arms_consistency_figure(cmp: dict, title: str = "Consistency by level per arm") -> Figure:
    """Grouped bars: the share of inputs answered alike under every instruction of a level, one bar
    per arm (mean over seeds, +-1 std over seeds)."""
    levels = list(next(iter(cmp["arms"].values()))["consistency"])
    series = {n: [a["consistency"][lv]["mean"] for lv in levels] for n, a in cmp["arms"].items()}
    errors = {n: [a["consistency"][lv]["std"] for lv in levels] for n, a in cmp["arms"].items()}
    return _bar_figure(levels, series, errors, title, 1.2, ylabel="consistency (% of inputs)")


def paired_differences_figure(deltas: dict[str, dict], title: str = "Paired difference in accuracy by level") -> Figure:
    """The headline of a comparison: for each perturbation level (and ``perturbed``, their mean), the
    paired difference in accuracy points with its bootstrap interval, one marker per comparison, and
    the zero line. Differences of a few points show where 0-100 % bars would hide them.

    Args:
        deltas: ``{"<run or arm> - <reference>": {"per_level": {level: {"delta", "low", "high"}},
            "perturbed": {...}, "confidence": 0.95}}``, i.e. ``compare``'s ``bootstrap`` entries
            (:func:`coin_lightning.eval.scoring.comparison.compare_runs`) or ``compare --sweep``'s
            ``delta`` entries (:func:`coin_lightning.eval.scoring.sweep.compare_sweep`); fractions.
    """
    from coin_lightning.eval.instructions.perturb.config import LEVELS

    first = next(iter(deltas.values()))
    order = {lv: i for i, lv in enumerate(LEVELS)}  # clean, character, word, sentence, semantic (JSON may sort them)
    levels = [*sorted(first["per_level"], key=lambda lv: order.get(lv, len(order))), "perturbed"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(levels)), 4))
    n = len(deltas)
    for k, (name, d) in enumerate(deltas.items()):
        cells = [d["per_level"].get(lv) if lv != "perturbed" else d["perturbed"] for lv in levels]
        xs = [i + (k - (n - 1) / 2) * 0.18 for i in range(len(levels))]
        ys = [100 * c["delta"] for c in cells]
        low = [100 * (c["delta"] - c["low"]) if c.get("low") is not None else 0.0 for c in cells]
        high = [100 * (c["high"] - c["delta"]) if c.get("high") is not None else 0.0 for c in cells]
        ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=4, label=name)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axvline(len(levels) - 1.5, color="grey", linewidth=0.5, linestyle=":")  # the levels | their mean
    ax.set_xticks(range(len(levels)))
    ax.set_xticklabels(levels)
    confidence = first.get("confidence")
    ax.set_ylabel("Δ accuracy (points)" + (f", {100 * confidence:g}% interval" if confidence else ""))
    ax.set_title(title)
    ax.legend(fontsize="small", loc="best")
    ax.grid(axis="y", alpha=0.3)
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
    if logger is None:
        return
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for name, fig in figures.items():
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, fig, global_step=step, close=False)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[fig], step=step)
        elif getattr(logger, "log_dir", None):
            with atomic_path(Path(logger.log_dir) / "figures" / f"{name}.png") as tmp:
                fig.savefig(tmp, format="png", dpi=100)
