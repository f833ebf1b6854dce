"""An evaluation run directory's result files (:data:`FILES`) and reading its metrics back.
"""
from __future__ import annotations

import json
from pathlib import Path

from coin_lightning.errors import UserError

FILES = {
    "predictions": "predictions.jsonl",
    "metrics": "metrics.json",
    "per_instruction_csv": "metrics_per_instruction.csv",
    "per_task_level_csv": "metrics_per_task_level.csv",
    "markdown": "results.md",
    "accuracy_plot": "accuracy_by_level.png",
    "clean_vs_perturbed_plot": "clean_vs_perturbed.png",
    "adversarial_instructions": "adversarial_instructions.yaml",
}
"""Output file names inside a run directory."""


class RunDirError(UserError, ValueError):
    """A run directory without (readable) evaluation results."""


def read_metrics(run_dir: str | Path) -> dict:
    """Load ``metrics.json`` of a run directory.

    Raises:
        RunDirError: not a directory, no ``metrics.json``, or unreadable / incomplete JSON.
    """
    path = Path(run_dir) / FILES["metrics"]
    if not Path(run_dir).is_dir():
        raise RunDirError(f"{run_dir}: not a directory")
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {FILES['metrics']} (not an evaluation run directory, or it has not finished)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunDirError(f"{path}: unreadable JSON ({exc})") from None
    for key in ("fingerprint", "per_task_level", "per_level", "levels", "tasks"):
        if key not in metrics:
            raise RunDirError(f"{path}: missing key {key!r}")
    return metrics
