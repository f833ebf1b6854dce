"""Test helper: a callback that sends a signal to its own process once, after a given optimizer step
(what a Ctrl-C in the terminal or SLURM's SIGTERM does to a single-process training job)."""
from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Send ``signum`` (a name, e.g. ``SIGINT``) to this process at the end of optimizer step ``step``."""

    def __init__(self, step: int, signum: str) -> None:
        self.step, self.signum, self.sent = step, signal.Signals[signum], False

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:  # noqa: D102
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)
