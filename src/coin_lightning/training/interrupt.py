"""Interrupting training safely: Ctrl-C and SIGTERM end in a resumable checkpoint and a one-line exit.

Lightning 2.6 already stops cleanly on SIGTERM (what SLURM sends before it kills or requeues a job):
its signal connector sets ``trainer.received_sigterm`` and the training loop raises
``SIGTERMException`` after the current batch has been fully accounted (optimizer step, loop counters,
data-loader position), then calls every callback's ``on_exception``. :class:`InterruptCheckpoint`
routes the first Ctrl-C during training to that same path (so the saved state is as consistent as
after SIGTERM; a second Ctrl-C interrupts at once), saves a full Lightning checkpoint from
``on_exception``, and :func:`exit_on_interrupt` turns the interruption into one line naming the
checkpoint and how to resume, with no traceback.
"""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_CODES = {"Ctrl-C": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
"""Exit status after an interruption (the shell's convention: 128 + signal number)."""


class InterruptCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` (adapter, optimizer, scheduler and loop state) when training
    is interrupted, so ``ckpt_path=<that file>`` (or ``ckpt_path=auto``) resumes at the saved step.

    The first Ctrl-C (SIGINT) during training is turned into Lightning's SIGTERM stop: training ends
    after the current micro-batch. Nothing is saved before the first optimizer step (nothing was
    learned). Unlike Lightning's ``OnExceptionCheckpoint`` (which this is not a subclass of), the file
    is kept after a later successful run, and ``trainer.fit(ckpt_path=None)`` does not silently resume
    from it: resuming is explicit (``ckpt_path``; see ``training/resume.py``).

    Args:
        dirpath: directory of the checkpoint (the job's ``checkpoints/``).
        filename: file name without ``.ckpt``.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        if not filename:
            raise ValueError("InterruptCheckpoint: filename must not be empty")
        self.dirpath, self.filename = str(dirpath), filename
        self.saved: str | None = None
        """Path of the checkpoint written on interruption (``None`` until then)."""
        self.reason: str | None = None
        """``Ctrl-C`` or ``SIGTERM`` once interrupted."""
        self._previous: Any = None

    @property
    def ckpt_path(self) -> str:
        """``<dirpath>/<filename>.ckpt``."""
        return str(Path(self.dirpath) / f"{self.filename}.ckpt")

    # --------------------------------------------------------------------------- SIGINT routing
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.reason = "Ctrl-C"
        self._restore()  # a second Ctrl-C raises KeyboardInterrupt at once
        signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop after the current batch

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._restore()

    # --------------------------------------------------------------------------- saving
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:  # noqa: D102
        self._restore()
        if self.reason is None:
            self.reason = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else (
                "SIGTERM" if isinstance(exception, SIGTERMException) else type(exception).__name__
            )
        if trainer.global_step == 0 or trainer.state.fn != TrainerFn.FITTING:
            return
        trainer.save_checkpoint(self.ckpt_path)
        self.saved = self.ckpt_path

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        self._restore()


def interrupted_message(trainer: L.Trainer, callback: InterruptCheckpoint | None, reason: str) -> str:
    """The one line printed after an interruption: the step reached and how to resume (or why not)."""
    step = trainer.global_step
    if callback is not None and callback.saved:
        path = Path(callback.saved)
        return (f"interrupted by {reason} at step {step}: checkpoint {path}; resume with "
                f"ckpt_path={path} (or ckpt_path=auto with hydra.run.dir={path.parent.parent})")
    if step == 0:
        return f"interrupted by {reason} before the first optimizer step: nothing to resume from"
    return f"interrupted by {reason} at step {step}: no interruption checkpoint (add callbacks.interrupt)"


@contextmanager
def exit_on_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Restate an interruption of ``trainer.fit``/``validate`` inside the block as one line and exit.

    Lightning ends a Ctrl-C with ``sys.exit(1)`` (``trainer.state.status`` INTERRUPTED) and a SIGTERM
    with ``SIGTERMException`` (a ``SystemExit`` whose status would be 0).

    Raises:
        SystemExit: status 130 (Ctrl-C) or 143 (SIGTERM) after printing the line on rank 0;
            other exits and exceptions pass through unchanged.
    """
    try:
        yield
    except (SystemExit, KeyboardInterrupt) as exc:
        ctrl_c = isinstance(exc, KeyboardInterrupt) or (  # Lightning's own exit after a KeyboardInterrupt
            type(exc) is SystemExit and exc.code == 1 and trainer.state.status == TrainerStatus.INTERRUPTED
        )
        if not (ctrl_c or isinstance(exc, SIGTERMException)):
            raise  # any other exit (e.g. a one-line error raised during training) passes unchanged
        callback = next((cb for cb in trainer.callbacks if isinstance(cb, InterruptCheckpoint)), None)
        reason = callback.reason if callback is not None and callback.reason in EXIT_CODES else (
            "SIGTERM" if isinstance(exc, SIGTERMException) else "Ctrl-C"
        )
        if trainer.is_global_zero:
            print(interrupted_message(trainer, callback, reason), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODES.get(reason, 1)) from None

