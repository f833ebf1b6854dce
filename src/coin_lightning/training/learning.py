"""What a training run learned: validation metrics before and after training, and their drop.

:class:`ValidationCurve` records the validation metrics after every validation (Lightning's
``on_validation_end``, when ``trainer.callback_metrics`` holds the epoch-reduced, rank-synced values).
:func:`fit_measured` validates once before ``trainer.fit`` (Lightning's public ``trainer.validate``,
so step 0 is a real validation pass and is logged like the others; the sanity check does not log)
and once after it when the last validation was not at the final step, so the curve always has a
"before" and an "after" point measured on the same validation rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from coin_lightning.training.interrupt import exit_on_interrupt
from coin_lightning.training.resume import checkpoint_step

TRACKED = ("val/ce", "val/info_nce", "val/loss")
"""Validation metrics reported before/after (``CoinModule`` logs ``val/info_nce`` when ``loss.lambda > 0``)."""


class ValidationCurve(L.Callback):
    """Record ``{global_step: {metric: value}}`` at the end of every validation (fit or ``trainer.validate``).

    Args:
        at_start: validate before training starts (read by :func:`fit_measured`), so the run reports
            the metrics of the untrained (or resumed) adapter.
    """

    def __init__(self, at_start: bool = True) -> None:
        self.at_start = at_start
        self.points: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in TRACKED}
        if metrics:
            self.points[int(trainer.global_step)] = metrics


def learning_summary(points: dict[int, dict[str, float]]) -> dict[str, Any] | None:
    """Before/after/drop of each tracked metric from a validation curve.

    Args:
        points: ``{global_step: {metric: value}}`` (:attr:`ValidationCurve.points`).

    Returns:
        ``{"before_step", "after_step", "curve", metric: {"before", "after", "drop"}}`` where ``drop =
        before - after`` (positive = the metric went down), or ``None`` with fewer than two points.
    """
    if len(points) < 2:
        return None
    first, last = min(points), max(points)
    out: dict[str, Any] = {"before_step": first, "after_step": last}
    for name in TRACKED:
        if name in points[first] and name in points[last]:
            before, after = points[first][name], points[last][name]
            out[name] = {"before": before, "after": after, "drop": before - after}
    out["curve"] = {str(step): points[step] for step in sorted(points)}
    return out


def learning_rows(learning: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Table rows ``(name, "before -> after (drop d)")`` for the run summary (empty without a curve)."""
    return [
        (f"{name} step {learning['before_step']} -> {learning['after_step']}",
         f"{m['before']:.4g} -> {m['after']:.4g} (drop {m['drop']:+.4g})")
        for name in TRACKED if learning and (m := learning.get(name))
    ]


def fit_measured(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None
) -> dict[str, Any] | None:
    """``trainer.fit`` between two validations; returns :func:`learning_summary` of the run.

    With a :class:`ValidationCurve` callback (``at_start: true``) and validation data, the adapter
    is validated before training (restored from ``ckpt_path`` when resuming) and, if the last
    validation during training was not at the final step, once more after it. Interruptions are
    restated in one line by :func:`~coin_lightning.training.interrupt.exit_on_interrupt`.

    Returns:
        The before/after summary, or ``None`` without a curve callback or validation data.
    """
    curve = next((cb for cb in trainer.callbacks if isinstance(cb, ValidationCurve)), None)
    measure = (curve is not None and curve.at_start and trainer.limit_val_batches not in (0, 0.0)
               and bool(datamodule.val_dataloader()))  # the run validates, on rows that exist
    with exit_on_interrupt(trainer):
        if measure:
            trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
            if ckpt_path and 0 in curve.points:  # validate restores the weights, not the step: label it
                curve.points[checkpoint_step(Path(ckpt_path)) or 0] = curve.points.pop(0)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if measure and max(curve.points, default=-1) != trainer.global_step:
            trainer.validate(module, datamodule=datamodule, verbose=False)
    return learning_summary(curve.points) if curve is not None else None
