"""Interrupting training safely: signals end in a resumable checkpoint and a one-line exit; a
failure on one rank of several ends every rank in bounded time, without a collective.

Lightning 2.6 already stops cleanly on SIGTERM (what SLURM sends before it kills or requeues a job):
its signal connector sets ``trainer.received_sigterm``, the training loop broadcasts rank 0's flag at
the start of every batch, and every rank raises ``SIGTERMException`` at the same batch, after the
previous one has been fully accounted (optimizer step, loop counters, data-loader position); then it
calls every callback's ``on_exception``. :class:`InterruptCheckpoint` routes the first Ctrl-C and,
under SLURM, the requeue signal to that same path, saves a full Lightning checkpoint from
``on_exception`` (all ranks take part, at the same point) and, for the requeue signal, requeues the
job (``scontrol requeue``, global rank 0). With several ranks the requeue signal is only noted by the
handler; after every batch the ranks agree on it (one all-reduce of a flag) and raise SIGTERM at that
same point, because Lightning's SIGTERM handler broadcasts from rank 0 and must run at the same point
of every rank's collectives. :func:`exit_on_interrupt` turns the interruption into one
line naming the checkpoint and how to resume, with no traceback.

Any other exception is raised on one rank only (an out-of-memory error, a bad batch). With several
ranks no checkpoint is written then: a checkpoint is a collective (FSDP gathers the full state, every
rank meets in a barrier) that the other ranks, still training, would never join. The failed rank
prints one line naming itself, stops the ranks it started (Lightning's launcher) and exits; the others
end when their next collective fails, when the launcher that started them sees the failure (Lightning
kills every rank when one it started fails; ``srun --kill-on-bad-exit=1`` under SLURM,
``conf/hydra/launcher/submitit_slurm.yaml``), or at the process-group timeout (``trainer.strategy.timeout``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

from coin_lightning.errors import is_verbose

EXIT_CODES = {"Ctrl-C": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
"""Exit status after an interruption (the shell's convention: 128 + signal number); a requeue
signal exits with 128 + its number."""


class InterruptCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` (adapter, optimizer, scheduler and loop state) when training
    is interrupted, so ``ckpt_path=<that file>`` (or ``ckpt_path=auto``) resumes at the saved step.

    The first Ctrl-C (SIGINT) during training is turned into Lightning's SIGTERM stop: training ends
    after the current micro-batch. Under SLURM (Lightning's ``SLURMEnvironment.detect()``) the
    ``requeue_signal`` (``--signal=USR1@<seconds>`` before the time limit, sent to every task) takes
    the same path, once the ranks have agreed on it after a batch, and then requeues the job: global rank 0 runs ``scontrol requeue <job id>`` after
    the checkpoint is written, and the requeued job resumes from it (``ckpt_path=null`` means
    ``auto`` under SLURM, ``training/resume.py``). Nothing is saved before the first optimizer step
    (nothing was learned), and with several ranks nothing is saved after an exception other than
    these stops (it happened on one rank; see the module docstring). Unlike Lightning's
    ``OnExceptionCheckpoint`` (which this is not a subclass of), the file is kept after a later
    successful run, and ``trainer.fit(ckpt_path=None)`` does not silently resume from it: resuming is
    explicit (``ckpt_path``; see ``training/resume.py``).

    Args:
        dirpath: directory of the checkpoint (the job's ``checkpoints/``).
        filename: file name without ``.ckpt``.
        requeue_signal: the signal name that requeues a SLURM job (``SIGUSR1``); ``None``: none.

    Raises:
        ValueError: empty ``filename``, or ``requeue_signal`` is not a signal name.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted", requeue_signal: str | None = "SIGUSR1") -> None:
        if not filename:
            raise ValueError("InterruptCheckpoint: filename must not be empty")
        try:
            self.requeue_signal = signal.Signals[requeue_signal] if requeue_signal else None
        except KeyError:
            raise ValueError(f"callbacks.interrupt.requeue_signal={requeue_signal!r} is not a signal name (e.g. SIGUSR1)") from None
        self.dirpath, self.filename = str(dirpath), filename
        self.saved: str | None = None
        """Path of the checkpoint written on interruption (``None`` until then)."""
        self.reason: str | None = None
        """``Ctrl-C``, ``SIGTERM`` or the requeue signal's name once interrupted (else the exception's type)."""
        self.requeued: str | None = None
        """The SLURM job id requeued by this process (global rank 0), or ``None``."""
        self._previous: dict[int, Any] = {}
        self._ranks = 1
        self._requested = False

    @property
    def ckpt_path(self) -> str:
        """``<dirpath>/<filename>.ckpt``."""
        return str(Path(self.dirpath) / f"{self.filename}.ckpt")

    # --------------------------------------------------------------------------- signal routing
    def _route_requeue(self, trainer: L.Trainer) -> None:
        """Route the requeue signal under SLURM, once Lightning's SIGTERM handler is in place."""
        if self.requeue_signal is not None and SLURMEnvironment.detect():
            self._ranks = trainer.world_size
            self._route(self.requeue_signal)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._route_requeue(trainer)  # also before training: the job is requeued (nothing to save before step 1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._route_requeue(trainer)
        self._route(signal.SIGINT)

    def _route(self, signum: signal.Signals) -> None:
        if signum not in self._previous and threading.current_thread() is threading.main_thread():
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self.reason = "Ctrl-C"
            self._restore()  # a second Ctrl-C raises KeyboardInterrupt at once
            signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop after the current batch
            return
        self.reason = signal.Signals(signum).name
        if self._ranks == 1:
            self._stop_for_requeue()
        else:  # several ranks: they agree on the batch first (on_train_batch_end); no collective inside a signal handler
            self._requested = True

    def _stop_for_requeue(self) -> None:
        self._restore()
        signal.signal(self.requeue_signal, signal.SIG_IGN)  # the job is being requeued: later copies of the signal
        signal.raise_signal(signal.SIGTERM)  # Lightning's handler: stop after the current batch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """With several ranks under SLURM, after every batch: if any rank got the requeue signal, every
        rank raises SIGTERM here, at the same point of its collectives, so that Lightning's handler (which
        broadcasts from rank 0) pairs up and every rank stops after this same batch."""
        if self._ranks <= 1 or self.requeue_signal not in self._previous:  # routed (or not) alike on every rank
            return
        flag = torch.tensor([1.0 if self._requested else 0.0], device=pl_module.device)
        if float(trainer.strategy.reduce(flag, reduce_op="max")) > 0:
            self.reason, self._requested = self.requeue_signal.name, False
            self._stop_for_requeue()

    on_validation_batch_end = on_train_batch_end

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._previous = {}

    # --------------------------------------------------------------------------- saving
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:  # noqa: D102
        self._restore()
        stop = isinstance(exception, SIGTERMException)  # every rank raises it at the same batch
        if self.reason is None:
            self.reason = "Ctrl-C" if isinstance(exception, KeyboardInterrupt) else (
                "SIGTERM" if stop else type(exception).__name__
            )
        one_rank = trainer.world_size > 1 and not stop  # no collective after an exception on one rank
        if trainer.global_step > 0 and trainer.state.fn == TrainerFn.FITTING and not one_rank:
            trainer.save_checkpoint(self.ckpt_path)
            self.saved = self.ckpt_path
        if stop and self.requeue_signal is not None and self.reason == self.requeue_signal.name and trainer.is_global_zero:
            self.requeued = requeue_slurm_job()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._restore()  # Ctrl-C after training (adapter export, final validation) interrupts at once

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        self._restore()


def requeue_slurm_job() -> str:
    """Requeue this SLURM job with ``scontrol requeue <id>`` (the command Lightning's auto-requeue runs).

    The id is ``$SLURM_ARRAY_JOB_ID_$SLURM_ARRAY_TASK_ID`` for an array task, else ``$SLURM_JOB_ID``.

    Returns:
        The job id, followed by `` (scontrol failed: <reason>)`` when the command failed.
    """
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID", "")
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{job} (scontrol failed: {exc})"
    if done.returncode != 0:
        return f"{job} (scontrol failed: {(done.stderr or done.stdout).strip()[:200]})"
    return job


def interrupted_message(trainer: L.Trainer, callback: InterruptCheckpoint | None, reason: str) -> str:
    """The one line printed after an interruption: the step reached and how to resume (or why not)."""
    step = trainer.global_step
    requeued = callback.requeued if callback is not None else None
    if requeued:
        ckpt = f"checkpoint {callback.saved}" if callback.saved else "no new checkpoint"
        return f"interrupted by {reason} at step {step}: {ckpt}; requeued SLURM job {requeued}, which resumes from its newest checkpoint"
    if callback is not None and callback.saved:
        path = Path(callback.saved)
        return (f"interrupted by {reason} at step {step}: checkpoint {path}; resume with "
                f"ckpt_path={path} (or ckpt_path=auto with hydra.run.dir={path.parent.parent})")
    if step == 0:
        return f"interrupted by {reason} before the first optimizer step: nothing to resume from"
    return f"interrupted by {reason} at step {step}: no interruption checkpoint (add callbacks.interrupt)"


def failed_rank_message(trainer: L.Trainer, exc: BaseException) -> str:
    """The one line a rank prints when an exception ends it in a run of several ranks.

    A failed collective is reported as this rank being stopped by another rank's failure: a
    ``torch.distributed.DistError`` (NCCL errors and timeouts), or gloo's ``RuntimeError`` for a peer
    that exited (``Connection closed by peer``, the only way gloo says so). Anything else is this
    rank's own failure.
    """
    rank, ranks, step = trainer.global_rank, trainer.world_size, trainer.global_step
    lines = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
    lost_peer = isinstance(exc, RuntimeError) and "gloo" in str(exc) and "Connection closed by peer" in str(exc)
    if isinstance(exc, torch.distributed.DistError) or lost_peer:
        return (f"error: rank {rank} of {ranks} stopped at step {step}: a collective with the other ranks failed "
                f"({what}); another rank failed first")
    return (f"error: rank {rank} of {ranks} failed at step {step}: {what}; the other ranks are stopped and no "
            "checkpoint is written after a failure on one rank (resume from the last periodic one: ckpt_path=auto)")


@contextmanager
def exit_on_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Restate an interruption or a rank's failure in ``trainer.fit``/``validate`` as one line and exit.

    Lightning ends a Ctrl-C with ``sys.exit(1)`` (``trainer.state.status`` INTERRUPTED) and a SIGTERM
    (also the SLURM requeue signal, :class:`InterruptCheckpoint`) with ``SIGTERMException`` (a
    ``SystemExit`` whose status would be 0). With several ranks, any other exception is this rank's
    own: it prints :func:`failed_rank_message` (after the traceback with ``--verbose``), kills the
    ranks that Lightning's launcher started from this process, if any, and exits without a collective.

    Raises:
        SystemExit: status 130 (Ctrl-C), 143 (SIGTERM) or 128 + the requeue signal's number, after
            printing the line on rank 0; status 1 after a rank's failure with several ranks. Other
            exits, and exceptions in a single-process run, pass through unchanged.
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
        requeue = callback.requeue_signal if callback is not None else None
        codes = EXIT_CODES | ({requeue.name: 128 + requeue} if requeue is not None else {})
        reason = callback.reason if callback is not None and callback.reason in codes else (
            "SIGTERM" if isinstance(exc, SIGTERMException) else "Ctrl-C"
        )
        if requeue is not None and reason == requeue.name and threading.current_thread() is threading.main_thread():
            signal.signal(requeue, signal.SIG_IGN)  # Lightning's teardown restored its default (exit); ranks get it late
        if trainer.is_global_zero:
            print(interrupted_message(trainer, callback, reason), file=sys.stderr, flush=True)
        raise SystemExit(codes.get(reason, 1)) from None
    except Exception as exc:
        if trainer.world_size <= 1:
            raise
        if is_verbose():
            traceback.print_exception(exc)
        print(failed_rank_message(trainer, exc), file=sys.stderr, flush=True)
        launcher = trainer.strategy.launcher
        if launcher is not None:  # Lightning's launcher on local rank 0: the other local ranks are its children
            launcher.kill(signal.SIGKILL)
        raise SystemExit(1) from None
