"""A job's output directory and what a failed job may remove from it: only what the job itself wrote.

Hydra creates the job directory (and writes ``.hydra/`` and ``<task>.log`` into it) before the job
function runs. A job that fails before it produced anything calls :meth:`JobDir.discard`, which
removes the entries that appeared since :class:`JobDir` was created and then the directory itself
only when it was new: it holds nothing but Hydra's records, it was not named on the command line as
an existing directory, and it is neither the working directory nor one of its parents. Everything
that was there before the job started (an earlier run's checkpoints, the user's own files) stays.
Parent directories the job created (``outputs/train/runs`` on a first run) go too when they are left
empty, and so do Hydra's records in a directory named on the command line that did not hold them
before the command started (``hydra.run.dir=.``).
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Snapshot:
    """The directories a command's job directory is judged against, recorded before Hydra creates it."""

    named: tuple[Path, ...]
    """Directories named by ``hydra.run.dir=``/``hydra.sweep.dir=`` overrides (resolved)."""
    entries: dict[Path, set[str]]
    """Named directories that existed before Hydra ran (never removed) -> what each held then."""
    outputs: Path
    """``<working directory>/outputs``."""
    existed: set[Path]
    """The directories of :meth:`known` that existed (parents a failed job keeps)."""

    def known(self, path: Path) -> bool:
        """Whether it is known if ``path`` existed before the command: a named directory or one of its
        parents, or ``outputs/`` down to Hydra's ``outputs/<task>/runs`` level."""
        return path == self.outputs or any(path == p or path in p.parents for p in self.named) or (
            self.outputs in path.parents and len(path.relative_to(self.outputs).parts) <= 2)


_SNAPSHOT: Snapshot | None = None


def take_snapshot(argv: list[str]) -> Snapshot:
    """Record, for this process, the run directories ``argv`` names and the directories that exist now;
    every command calls it before ``hydra.main`` creates the job directory (:func:`coin_lightning.commands.hydra_command`).

    Returns:
        The :class:`Snapshot` that :class:`JobDir` uses from now on.
    """
    global _SNAPSHOT
    keys = ("hydra.run.dir=", "hydra.sweep.dir=")
    named = tuple(Path(a.split("=", 1)[1]).expanduser().resolve() for a in argv if a.startswith(keys))
    outputs = Path.cwd().resolve() / "outputs"
    parents = {a for p in named for a in (p, *p.parents)}
    existed = {p for p in parents if p.is_dir()} | {p for p in (outputs, *outputs.glob("*"), *outputs.glob("*/*")) if p.is_dir()}
    _SNAPSHOT = Snapshot(named, {p: {e.name for e in p.iterdir()} for p in named if p.is_dir()}, outputs, existed)
    return _SNAPSHOT


def snapshot() -> Snapshot:
    """This process's :class:`Snapshot` (taken now from ``sys.argv`` when no command took one)."""
    return _SNAPSHOT or take_snapshot(sys.argv)


def _is_record(entry: Path) -> bool:
    """Whether ``entry`` is one of Hydra's records in a job directory: ``.hydra/`` or a ``*.log`` file."""
    return entry.name == ".hydra" or (entry.is_file() and entry.suffix == ".log")


class JobDir:
    """The entries of a job directory when the job started, to tell them from those it writes.

    Args:
        path: the job's output directory (``cfg.output_dir``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        at_start = snapshot().entries.get(self.path.resolve())
        self.before = at_start if at_start is not None else {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        self.records_known = at_start is not None
        """Whether :attr:`before` predates Hydra's records (then new records are the job's too)."""
        self.kept = False
        """Set by :meth:`keep`: the job holds results, :meth:`discard` leaves it alone."""

    def keep(self) -> None:
        """Mark the job as started (training began, predictions are being written): from now on a
        failure keeps what it wrote (checkpoints, finished parts) for a resume."""
        self.kept = True

    def discard(self) -> None:
        """Remove what the job wrote after it started, then the directory itself if the job created it.

        Never removes an entry that existed when this object was made, nor a directory that held
        anything besides Hydra's records; does nothing after :meth:`keep`.
        """
        if self.kept or not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name not in self.before and (self.records_known or not _is_record(entry)):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        here = Path.cwd().resolve()
        target = self.path.resolve()
        if target in snapshot().entries or target in (here, *here.parents):  # named as existing, or the cwd (or above)
            return
        if all(_is_record(entry) for entry in self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in target.parents:  # the empty parents this job created, up to the first that existed or is not known
                if not snapshot().known(parent) or parent in snapshot().existed or not parent.is_dir() or any(parent.iterdir()):
                    return
                parent.rmdir()
