"""Figures: written as PNG, and handed to TensorBoard / CSV loggers."""
from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from coin_lightning.eval.reports.plots import accuracy_by_level_figure, clean_vs_perturbed_figure, log_figures, save_png
from coin_lightning.eval.scoring.metrics import summarize
from tests.eval.scoring.test_metrics import rows

PNG = b"\x89PNG\r\n\x1a\n"


def _figures():
    m = summarize(rows())
    return {"accuracy_by_level": accuracy_by_level_figure(m), "clean_vs_perturbed": clean_vs_perturbed_figure(m)}


def test_save_png(tmp_path):
    for name, fig in _figures().items():
        assert save_png(fig, tmp_path / f"{name}.png").read_bytes().startswith(PNG)


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
