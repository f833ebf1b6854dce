"""Test helpers: callbacks that make one rank fail, or mark how far training got (for a test that
signals the processes from outside, as SLURM does)."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class RaiseAt(L.Callback):
    """On global rank ``rank``, raise ``RuntimeError("injected failure")`` when optimizer step
    ``step`` starts (after ``step`` steps), first writing the wall time (``time.time()``) to ``path``."""

    def __init__(self, step: int, rank: int, path: str) -> None:
        self.step, self.rank, self.path = step, rank, Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:  # noqa: D102
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            self.path.write_text(repr(time.time()))
            raise RuntimeError("injected failure")


class MarkAt(L.Callback):
    """Global rank 0 creates the file ``path`` at the end of optimizer step ``step``."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, Path(path)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:  # noqa: D102
        if trainer.is_global_zero and trainer.global_step >= self.step and not self.path.exists():
            self.path.touch()
