"""A job's output directory and what a failed job may remove from it: only what the job itself wrote.

Hydra creates the job directory (and writes ``.hydra/`` and ``<task>.log`` into it) before the job
function runs. A job that fails before it produced anything calls :meth:`JobDir.discard`, which
removes the entries that appeared since :class:`JobDir` was created and then the directory itself
only when it was new: it holds nothing but Hydra's records, it was not named on the command line as
an existing directory, and it is neither the working directory nor one of its parents. Everything
that was there before the job started (an earlier run's checkpoints, the user's own files) stays.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HYDRA_RECORDS = (".hydra",)
"""Entries Hydra writes into every job directory (besides ``*.log`` files)."""


def _existing_named_dirs(argv: list[str]) -> set[Path]:
    """Directories named by ``hydra.run.dir=``/``hydra.sweep.dir=`` overrides that exist right now."""
    found = set()
    for arg in argv:
        for key in ("hydra.run.dir=", "hydra.sweep.dir="):
            if arg.startswith(key):
                path = Path(arg[len(key):]).expanduser()
                if path.is_dir():
                    found.add(path.resolve())
    return found


PREEXISTING = _existing_named_dirs(sys.argv)
"""Directories the command line named that existed before Hydra ran (this module is imported by
every entry point before ``hydra.main`` creates the job directory)."""


def _is_record(entry: Path) -> bool:
    return entry.name in HYDRA_RECORDS or (entry.is_file() and entry.suffix == ".log")


class JobDir:
    """The entries of a job directory when the job started, to tell them from those it writes.

    Args:
        path: the job's output directory (``cfg.output_dir``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.before = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()

    def _protected(self) -> bool:
        """The directory must stay: named as existing, or the working directory or one of its parents."""
        here = Path.cwd().resolve()
        target = self.path.resolve()
        return target in PREEXISTING or target == here or target in here.parents

    def discard(self) -> None:
        """Remove what the job wrote after it started, then the directory itself if the job created it.

        Never removes an entry that existed when this object was made, nor a directory that held
        anything besides Hydra's records.
        """
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name not in self.before and not _is_record(entry):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        if self._protected():
            return
        if all(_is_record(entry) for entry in self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
