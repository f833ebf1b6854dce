"""Files and directories named by the ``data`` config: made absolute and checked before anything loads."""
from __future__ import annotations

import os
from pathlib import Path

from coin_lightning.data.records import DataError


def absolute(path: str | None) -> str | None:
    """Absolute, normalised path; relative paths are taken from Hydra's original working directory."""
    if path is None:
        return None
    try:
        from hydra.utils import to_absolute_path

        path = to_absolute_path(str(path))
    except Exception:  # hydra missing or not usable: relative to the working directory
        path = str(Path(path).absolute())
    return os.path.normpath(path)


def check_paths(source: str, root: str | None, path: str | None, templates: str) -> None:
    """Refuse a missing or non-existent file or directory, naming its key (before anything loads).

    Args:
        source, root, path, templates: the ``data.*`` values of the same names.

    Raises:
        DataError: ``data.path`` unset or missing (``coin_csv``), ``data.root`` missing (``glue``,
            ``flan``), ``data.templates`` missing, or ``own`` for ``flan`` (FLAN rows are matched
            against the FLAN templates they were rendered with).
    """
    if source == "coin_csv":
        if not path:
            raise DataError("data.source=coin_csv needs data.path: set data.path=<the CoIN CSV file>")
        if not Path(absolute(path)).is_file():
            raise DataError(f"data.path={path}: no such file (the CoIN CSV)")
        return
    if source in ("glue", "flan") and root is not None and not Path(absolute(root)).exists():
        raise DataError(f"data.root={root}: no such {'directory' if source == 'glue' else 'file or directory'}")
    if source == "flan" and str(templates) == "own":
        raise DataError("data.source=flan needs data.templates: set it to the FLAN templates.json its rows were rendered with")
    if str(templates) != "own" and not Path(absolute(templates)).is_file():
        raise DataError(f"data.templates={templates}: no such file (a FLAN templates.json, or own)")
