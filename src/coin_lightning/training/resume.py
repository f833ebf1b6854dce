"""Resuming a job from its own checkpoints, and the SLURM cluster plugin.

``ckpt_path`` (``conf/train.yaml``) takes:

- a file: resume from it exactly;
- ``auto``: resume from the newest checkpoint in the job's own ``<output_dir>/checkpoints/`` (and
  Lightning's ``hpc_ckpt_*.ckpt`` in ``<output_dir>``), or start fresh when there is none;
- ``null`` (default): start fresh, except under SLURM, where it means ``auto``: a requeued job
  (preemption, time limit) runs the same command in the same directory and continues where it stopped.

"Newest" is the highest ``global_step`` stored in the checkpoint (ties: the later file), not the
file time alone; unreadable files (e.g. cut short by a kill during the write) are skipped.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment

from coin_lightning.errors import ConfigError
from coin_lightning.model.loading import first_line

log = logging.getLogger(__name__)

AUTO = "auto"
"""The ``ckpt_path`` value that resumes from the job's own newest checkpoint."""


def checkpoint_step(path: Path) -> int | None:
    """The ``global_step`` a Lightning checkpoint was saved at, or ``None`` if the file is unreadable.

    Loads with ``mmap=True`` (tensors stay on disk), so a large checkpoint costs little to inspect.
    """
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])
    except Exception as exc:  # truncated, foreign or not a Lightning checkpoint: not a resume candidate
        log.warning("resume: skipping %s (%s)", path, first_line(exc))
        return None


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint with the highest global step among ``<output_dir>/checkpoints/*.ckpt`` and
    ``<output_dir>/hpc_ckpt_*.ckpt`` (Lightning's SLURM requeue checkpoints); ``None`` if there is none.

    Ties (``last.ckpt`` and ``stepNNNNNN.ckpt`` of the same step) go to the most recently written file.
    """
    out = Path(output_dir)
    candidates = sorted((out / "checkpoints").glob("*.ckpt")) + sorted(out.glob("hpc_ckpt_*.ckpt"))
    steps = {path: step for path in candidates if (step := checkpoint_step(path)) is not None}
    return max(steps, key=lambda path: (steps[path], path.stat().st_mtime), default=None)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path, on_slurm: bool | None = None) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from, following the ``ckpt_path`` rules of this module.

    Args:
        ckpt_path: the config value (a path, ``"auto"`` or ``None``).
        output_dir: the job's own directory.
        on_slurm: running as a SLURM job (default: Lightning's ``SLURMEnvironment.detect()``).

    Raises:
        ConfigError: ``ckpt_path`` names a file that does not exist.
    """
    if ckpt_path is not None and str(ckpt_path) != AUTO:
        if not Path(ckpt_path).is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: no such file (use a .ckpt file, {AUTO} or null)")
        return str(ckpt_path)
    on_slurm = SLURMEnvironment.detect() if on_slurm is None else on_slurm
    if ckpt_path is None and not on_slurm:
        return None
    newest = newest_checkpoint(output_dir)
    if newest is not None:
        log.info("resuming from %s (newest checkpoint in %s)", newest, output_dir)
    return None if newest is None else str(newest)


def cluster_plugins() -> list:
    """Trainer ``plugins``: Lightning's ``SLURMEnvironment`` under SLURM (ranks and devices from SLURM's
    variables; one process per task, none started by Lightning), else none.

    Its ``auto_requeue`` is off: Lightning's requeue saves a checkpoint inside the signal handler, at
    whatever point each rank has reached, and a checkpoint is a collective (FSDP gathers the full
    state; every rank meets in a barrier) that ranks at different points would not pair up. The
    requeue signal is handled by :class:`~coin_lightning.training.interrupt.InterruptCheckpoint`
    instead: every rank stops at the same batch, the checkpoint is written, global rank 0 runs
    ``scontrol requeue``, and the requeued job resumes from the newest checkpoint
    (:func:`resolve_ckpt_path`).
    """
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
