"""Checks of the ``data`` config before anything loads: its values, and the files and directories it
names (made absolute against Hydra's original working directory). The DataModule runs them when it is
built; the training entry point runs them first, before Lightning is even imported.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from coin_lightning.data.collate import TRUNCATIONS
from coin_lightning.data.grouping import GROUP_MODES, NEGATIVE_MODES, PAIRS_PER_ITEM
from coin_lightning.data.pipeline import VAL_ROWS
from coin_lightning.data.prompts import PROMPT_FORMATS
from coin_lightning.data.records import DataError
from coin_lightning.data.templates import TEMPLATE_POOLS

SOURCES = ("embedded", "glue", "flan", "coin_csv")
"""Values of ``data.source``."""
ON_ERROR = ("raise", "skip")
"""Values of ``data.on_error``."""


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


def check_data_values(source: str, group: str, batch_size: Any, eval_batch_size: Any, prompt_format: str,
                      template_pool: str, negatives: str, on_error: str, num_workers: Any, val_size: Any,
                      n_per_task: Any, truncation: str = "input", val_rows: str = "seeded",
                      val_every_epoch_fraction: Any = None) -> None:
    """Refuse ``data.*`` values that are unknown names or out of range (arguments as the keys).

    Raises:
        DataError: an unknown source/group/prompt format/template pool/negatives/on_error/truncation/
            val_rows, a batch size that is not a positive multiple of the pairs per item of ``group``,
            a negative ``num_workers`` / ``val_size``, ``n_per_task`` < 1, or a
            ``val_every_epoch_fraction`` outside (0, 1].
    """
    for key, value, allowed in (("source", source, SOURCES), ("group", group, GROUP_MODES),
                                ("prompt_format", prompt_format, PROMPT_FORMATS),
                                ("template_pool", template_pool, TEMPLATE_POOLS),
                                ("negatives", negatives, NEGATIVE_MODES), ("on_error", on_error, ON_ERROR),
                                ("truncation", truncation, TRUNCATIONS), ("val_rows", val_rows, VAL_ROWS)):
        if value not in allowed:
            raise DataError(f"data.{key}={value!r} is not one of {', '.join(allowed)}")
    ppi = PAIRS_PER_ITEM[group]
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < ppi or value % ppi:
            raise DataError(
                f"data.{key}={value!r} must be a positive multiple of {ppi}, the pairs per item of "
                f"data.group={group} (it counts pairs = examples per micro-batch)"
            )
    for key, value, low in (("num_workers", num_workers, 0), ("val_size", val_size, 0), ("n_per_task", n_per_task, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DataError(f"data.{key}={value!r} must be an integer >= {low}")
    fraction = val_every_epoch_fraction
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction <= 1):
        raise DataError(f"data.val_every_epoch_fraction={fraction!r} must be a number in (0, 1], or null")


def check_data_config(node: Any) -> None:
    """Run :func:`check_data_values` and :func:`check_paths` on a ``data`` config node (defaults as
    :class:`coin_lightning.data.datamodule.CoinDataModule`'s for keys it lacks).

    Raises:
        DataError: as those two.
    """
    get = node.get
    check_data_values(get("source", "embedded"), get("group", "pair_of_pairs"), get("batch_size", 2),
                      get("eval_batch_size"), get("prompt_format", "alpaca"), get("template_pool", "main"),
                      get("negatives", "length"), get("on_error", "raise"), get("num_workers", 0),
                      get("val_size", 100), get("n_per_task", 200), get("truncation", "input"),
                      get("val_rows", "seeded"), get("val_every_epoch_fraction"))
    check_paths(get("source", "embedded"), get("root"), get("path"), get("templates", "own"))
