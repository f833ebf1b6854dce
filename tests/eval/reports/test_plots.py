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
