"""Checks of the ``data`` config before anything loads: its values, and the files and directories it
names (made absolute against Hydra's original working directory). The DataModule runs them when it is
built; the training entry point runs them first, before Lightning is even imported.
"""
from __future__ import annotations

from typing import Any

from coin_lightning.data.collate import TRUNCATIONS
from coin_lightning.data.grouping import GROUP_MODES, NEGATIVE_MODES, PAIRS_PER_ITEM
from coin_lightning.data.prompts import PROMPT_FORMATS
from coin_lightning.data.records import DataError
from coin_lightning.data.sources import SOURCES
from coin_lightning.data.sources.coin_csv import VAL_ROWS
from coin_lightning.data.templates import TEMPLATE_POOLS

ON_ERROR = ("raise", "skip")
"""Values of ``data.on_error``."""


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
    for key, value, allowed in (("source", source, tuple(SOURCES)), ("group", group, GROUP_MODES),
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
    """Run :func:`check_data_values` and the source's ``check`` (paths) on a ``data`` config node (defaults as
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
    SOURCES[get("source", "embedded")].check(get("root"), get("path"), get("templates", "own"))
