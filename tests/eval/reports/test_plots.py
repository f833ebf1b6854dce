"""Figures: written as PNG, and handed to TensorBoard / CSV loggers."""
from __future__ import annotations

import statistics

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.container import BarContainer

from coin_lightning.eval.reports.plots import accuracy_by_level_figure, clean_vs_perturbed_figure, log_figures, save_png
from coin_lightning.eval.scoring.metrics import summarize
from tests.eval.eval_helpers import bars, xtick_labels
from tests.eval.scoring.test_metrics import LEVEL, TABLE, rows

PNG = b"\x89PNG\r\n\x1a\n"


def _figures():
    m = summarize(rows())
    return {"accuracy_by_level": accuracy_by_level_figure(m), "clean_vs_perturbed": clean_vs_perturbed_figure(m)}


def _cells() -> dict[tuple[str, str], list[float]]:
    """``{(task, level): [accuracy of each instruction]}`` straight from test_metrics.TABLE (4 rows each)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for task, pert, _, correct, _ in TABLE:
        cells.setdefault((task, LEVEL[pert]), []).append(correct / 4)
    return cells


def test_save_png(tmp_path):
    for name, fig in _figures().items():
        assert save_png(fig, tmp_path / f"{name}.png").read_bytes().startswith(PNG)


def test_accuracy_by_level_bars_are_the_cell_means_and_stds():
    """One group per task plus ``average``, one bar per level at 100 x the mean over instructions (an
    absent cell: 0), error bars 100 x the population std; ``average``: the mean over tasks of both."""
    cells = _cells()
    fig = accuracy_by_level_figure(summarize(rows()))
    assert xtick_labels(fig) == ["A", "B", "average"]
    want_heights, want_errors = {}, {}
    for lv in ("clean", "character", "word"):
        present = [cells[(t, lv)] for t in "AB" if (t, lv) in cells]
        want_heights[lv] = [100 * statistics.fmean(cells[(t, lv)]) if (t, lv) in cells else 0.0 for t in "AB"]
        want_heights[lv].append(100 * statistics.fmean(statistics.fmean(c) for c in present))
        want_errors[lv] = [100 * statistics.pstdev(cells[(t, lv)]) if (t, lv) in cells else 0.0 for t in "AB"]
        want_errors[lv].append(100 * statistics.fmean(statistics.pstdev(c) for c in present))
    assert want_heights["word"] == [87.5, 0.0, 87.5]  # B has no word-level instruction
    got = bars(fig)
    assert list(got) == ["clean", "character", "word"]  # the legend: the levels in order
    for lv, heights in want_heights.items():
        assert got[lv] == pytest.approx(heights, abs=1e-9)
    for c in (c for c in fig.axes[0].containers if isinstance(c, BarContainer)):  # each error bar runs from height - std to height + std
        segments = c.errorbar.lines[2][0].get_segments()
        half = [(seg[1][1] - seg[0][1]) / 2 for seg in segments]
        assert half == pytest.approx(want_errors[c.get_label()], abs=1e-9)


def test_clean_vs_perturbed_bars_are_the_clean_cell_and_the_mean_of_perturbed_cells():
    cells = _cells()
    fig = clean_vs_perturbed_figure(summarize(rows()))
    assert xtick_labels(fig) == ["A", "B"]
    perturbed = {t: statistics.fmean(statistics.fmean(v) for (task, lv), v in cells.items() if task == t and lv != "clean")
                 for t in "AB"}
    got = bars(fig)
    assert list(got) == ["clean", "perturbed (mean of levels)"]
    assert got["clean"] == pytest.approx([100 * statistics.fmean(cells[(t, "clean")]) for t in "AB"], abs=1e-9)
    assert got["perturbed (mean of levels)"] == pytest.approx([100 * perturbed[t] for t in "AB"], abs=1e-9)
    assert perturbed == pytest.approx({"A": (0.5 + 0.875) / 2, "B": 0.25})


def test_tensorboard_gets_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    log_figures(logger, _figures())
    logger.experiment.flush()
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {"accuracy_by_level", "clean_vs_perturbed"}


def test_csv_logger_gets_png_files(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    log_figures(logger, _figures())
    assert (tmp_path / "csv" / "figures" / "accuracy_by_level.png").read_bytes().startswith(PNG)


def test_paired_differences_figure_draws_each_difference_and_interval_in_points(tmp_path):
    import json
    from pathlib import Path

    from coin_lightning.eval.reports.plots import paired_differences_figure

    results = Path(__file__).resolve().parents[3] / "experiments" / "robustness_study" / "results" / "comparison.json"
    deltas = json.loads(results.read_text(encoding="utf-8"))["delta"]
    fig = paired_differences_figure(deltas)
    ax = fig.axes[0]
    levels = [t.get_text() for t in ax.get_xticklabels()]
    assert levels == ["clean", "character", "word", "sentence", "semantic", "perturbed"]  # the levels' order, not JSON's
    (d,) = deltas.values()
    expected = [d["per_level"][lv] for lv in levels[:-1]] + [d["perturbed"]]
    points = ax.lines[0].get_ydata()  # the markers
    assert list(points) == [100 * c["delta"] for c in expected]
    bars = ax.collections[0].get_segments()  # one vertical segment per level: [low, high]
    for seg, c in zip(bars, expected):
        assert abs(seg[0][1] - 100 * c["low"]) < 1e-9 and abs(seg[1][1] - 100 * c["high"]) < 1e-9
    assert "95% interval" in ax.get_ylabel()
    assert save_png(fig, tmp_path / "differences.png").read_bytes().startswith(PNG)


def test_paired_differences_figure_with_only_the_clean_level_has_no_perturbed_mean():
    from coin_lightning.eval.reports.plots import paired_differences_figure

    clean = {"delta": 0.02, "low": -0.01, "high": 0.05}
    fig = paired_differences_figure({"b - a": {"per_level": {"clean": clean}, "perturbed": None, "confidence": 0.95}})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean"]
    assert list(ax.lines[0].get_ydata()) == [2.0]
    (seg,) = ax.collections[0].get_segments()
    assert abs(seg[0][1] - (-1.0)) < 1e-9 and abs(seg[1][1] - 5.0) < 1e-9
