"""Resumable evaluation: the predictions of each (task, level) saved as soon as they are complete.

An evaluation writes ``<run dir>/parts/<task>.<level>.jsonl`` (the ``predictions.jsonl`` rows of that
task and level, written atomically) and ``parts/settings.json``: what the predictions depend on (the
model, adapter, prompt format, method, generation length, perturbation mode and the
:func:`~coin_lightning.eval.scoring.metrics.fingerprint` of the rows and instructions). Rerun in the same
directory (``hydra.run.dir=<run dir>``) with the same settings, it reads the finished parts instead of
predicting them again; with other settings it refuses, naming the first setting that differs. Batch
sizes, the prefix cache and the ``trainer`` (devices, processes) are not part of the key: they do not
change the predictions.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coin_lightning.errors import EvalConfigError
from coin_lightning.io import write_json, write_jsonl

PARTS_DIR = "parts"
"""Folder of the finished parts inside a run directory."""
SETTINGS_FILE = "settings.json"
"""The key of the parts (inside :data:`PARTS_DIR`)."""


def part_key(settings: Any, fingerprint: dict, meta: dict) -> dict:
    """The settings the predictions of a run depend on (JSON-able).

    Args:
        settings: the :class:`~coin_lightning.eval.settings.EvalSettings`.
        fingerprint: :func:`~coin_lightning.eval.scoring.metrics.fingerprint` of the rows and given instructions.
        meta: ``model``, ``adapter`` and ``prompt_format`` of the run.
    """
    key = {k: meta.get(k) for k in ("model", "adapter", "prompt_format")}
    key.update(method=settings.method, max_new_tokens=settings.max_new_tokens, perturb_mode=settings.perturb_mode,
               query_budget=settings.query_budget if settings.perturb_mode == "adversarial" else None,
               rows=fingerprint["rows"], instructions=fingerprint["instructions"])
    return json.loads(json.dumps(key, default=str))


class Parts:
    """The finished (task, level) parts of one run directory.

    Args:
        run_dir: the evaluation's output directory.
        key: :func:`part_key` of this run.
        write: whether this process writes parts (rank 0 only).
    """

    def __init__(self, run_dir: str | Path, key: dict, write: bool = True):
        self.dir = Path(run_dir) / PARTS_DIR
        self.key = key
        self.write = write

    def check(self) -> None:
        """Refuse to resume from parts written with other settings (before any model loads).

        Raises:
            EvalConfigError: ``parts/settings.json`` is unreadable or differs from this run's key.
        """
        path = self.dir / SETTINGS_FILE
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EvalConfigError(f"{path}: unreadable ({exc}); delete {self.dir} to evaluate from scratch") from None
        for k in sorted(set(saved) | set(self.key)):
            if saved.get(k) != self.key.get(k):
                raise EvalConfigError(f"{self.dir} holds predictions made with another {k} ({saved.get(k)!r}, now "
                                      f"{self.key.get(k)!r}): rerun with the same settings to resume, or use another "
                                      "output directory")

    def path(self, task: str, level: str) -> Path:
        """The file of one part."""
        return self.dir / f"{task}.{level}.jsonl"

    def finished(self) -> dict[tuple[str, str], list[dict]]:
        """``{(task, level): rows}`` of every saved part (empty when nothing was saved).

        Raises:
            EvalConfigError: a part file that cannot be read back.
        """
        if not (self.dir / SETTINGS_FILE).is_file():
            return {}
        out = {}
        for path in sorted(self.dir.glob("*.jsonl")):
            task, _, level = path.stem.rpartition(".")
            try:
                out[(task, level)] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            except (OSError, ValueError) as exc:
                raise EvalConfigError(f"{path}: unreadable part ({exc}); delete it to predict it again") from None
        return out

    def save(self, task: str, level: str, rows: list[dict]) -> None:
        """Write one finished part (and the key, with the first part); no-op on processes that do not write."""
        if not self.write:
            return
        if not (self.dir / SETTINGS_FILE).is_file():
            write_json(self.dir / SETTINGS_FILE, self.key)
        write_jsonl(self.path(task, level), rows)
