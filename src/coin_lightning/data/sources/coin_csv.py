"""The CSV released with the CoIN paper (luka-group/CoIN ``dataset/contrastive_flan_data.csv``).

Columns: ``original_instruction`` and ``paraphrased_instruction`` (an instruction with its input,
already rendered: the original FLAN template and a paraphrasing one), ``targets`` (the answer),
``task_name`` and ``keyword_data`` (the template fields as a Python/JSON dict literal). Extra
columns are ignored. Rows come in pairs: "every entry at the odd index is the hard negative for the
entry above it" (the repository's README), i.e. data rows ``2k`` and ``2k+1`` (0-based) form one
pair-of-pairs group, exactly as the reference Trainer saw them (micro batch 2, unshuffled pairs).
"""
from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path
from typing import Any

import torch

from coin_lightning.data.grouping import groups_from_pairs
from coin_lightning.data.records import DataError, Group, Record, skip_or_raise
from coin_lightning.data.sources.base import Source, absolute, count_tasks

VAL_ROWS = ("seeded", "last")
"""Values of ``data.val_rows`` (CoIN CSV): ``seeded`` (a seeded random set of row pairs) or ``last``
(the file's last rows, as the reference's ``train_test_split(test_size=val_set_size, shuffle=False)``,
luka-group/CoIN ``run_contrastive_llama.py`` L415)."""

COIN_CSV_COLUMNS = ("original_instruction", "paraphrased_instruction", "targets", "task_name", "keyword_data")
"""Columns the loader needs."""

_UNDECODABLE = re.compile("[\udc80-\udcff]")
"""Lone surrogates: bytes that were not UTF-8, as ``errors="surrogateescape"`` decodes them."""


def _parse_keywords(text: str) -> dict | None:
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
    return None


def load_coin_csv(path: str | Path, on_error: str = "raise", stats: dict | None = None) -> list[tuple[Record, Record]]:
    """Read the CoIN CSV as (row ``2k``, row ``2k+1``) record pairs: an example and its hard negative.

    Args:
        path: the CSV file.
        on_error: ``raise`` or ``skip``. A bad row (empty instruction or target, empty task name,
            bytes that are not UTF-8) or a pair whose rows name different tasks spoils its pair:
            with ``skip`` the whole pair is dropped, so pairing never shifts; a trailing row
            without partner likewise.
        stats: if given, ``stats["skipped"]`` is incremented by the number of rows dropped and
            ``stats["keyword_data_unparsed"]`` counts rows whose ``keyword_data`` is no dict literal
            (kept, with empty fields: the rendered texts are what trains).

    Returns:
        Pairs of records: ``task = task_name``, ``fields`` = parsed ``keyword_data``,
        ``target = targets``, ``uid = "coin_csv/<data row>"`` (0-based), ``meta`` with ``original``,
        ``paraphrased`` (the rendered instructions), ``source`` and ``row`` (the file line).

    Raises:
        DataError: missing columns, or a bad row/pair (names file, line and data row).
    """
    path = Path(path)  # CoinCsv.check refuses a missing data.path before anything loads
    csv.field_size_limit(2**31 - 1)  # the largest a C long holds on every platform
    stats = {} if stats is None else stats
    rows: list[Record | str] = []  # a Record, or the error message of a bad row
    # Undecodable bytes become lone surrogates (surrogateescape), so the row holding them is named.
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        if any(_UNDECODABLE.search(c) for c in reader.fieldnames or []):
            raise DataError(f"{path}:1: the header is not UTF-8 text")
        missing = [c for c in COIN_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or [])})")
        start = reader.line_num + 1
        for i, row in enumerate(reader):
            line = start
            start = reader.line_num + 1
            bad = [c for c in ("original_instruction", "paraphrased_instruction", "targets", "task_name") if not (row.get(c) or "").strip()]
            problem = None
            if None in row:
                problem = "more values than columns"
            elif any(_UNDECODABLE.search(v) for v in row.values() if isinstance(v, str)):
                problem = "not UTF-8 text"
            elif bad:
                problem = f"empty {', '.join(bad)}"
            if problem:
                rows.append(f"{path}:{line} (data row {i}): {problem}")
                continue
            fields = _parse_keywords(row["keyword_data"] or "")
            if fields is None:
                stats["keyword_data_unparsed"] = stats.get("keyword_data_unparsed", 0) + 1
                fields = {}
            rows.append(
                Record(
                    task=row["task_name"].strip(),
                    fields=fields,
                    target=row["targets"],
                    uid=f"coin_csv/{i}",
                    meta={
                        "source": str(path),
                        "row": line,
                        "original": row["original_instruction"],
                        "paraphrased": row["paraphrased_instruction"],
                    },
                )
            )
    pairs: list[tuple[Record, Record]] = []
    for k in range(0, len(rows), 2):
        a = rows[k]
        b = rows[k + 1] if k + 1 < len(rows) else f"{path}: data row {k} has no hard-negative row after it (odd row count)"
        error = a if isinstance(a, str) else b if isinstance(b, str) else None
        if error is None and a.task != b.task:
            error = f"{path}: data rows {k} and {k + 1} form a pair but name different tasks ({a.task!r}, {b.task!r})"
        if error is not None:
            skip_or_raise(DataError(error), on_error, stats, 2 if k + 1 < len(rows) else 1)
            continue
        pairs.append((a, b))
    if not pairs:
        raise DataError(f"{path}: no usable row pairs")
    return pairs


class CoinCsv(Source):
    """``data.source=coin_csv``: the CoIN CSV (``data.path``), whose rows are already rendered pairs."""

    name = "coin_csv"

    def check(self, root: str | None, path: str | None, templates: str) -> None:
        """Refuses an unset or missing ``data.path`` (``data.templates`` is not used)."""
        if not path:
            raise DataError("data.source=coin_csv needs data.path: set data.path=<the CoIN CSV file>")
        if not Path(absolute(path)).is_file():
            raise DataError(f"data.path={path}: no such file (the CoIN CSV)")

    def groups(self, dm: Any, stats: dict) -> tuple[list[Group], list[Group]]:
        """The CSV's row pairs (of ``data.tasks``) -> ``(train, val)`` groups; ``val_size`` rows
        (``val_size // 2`` row pairs) are held out, and a row pair is never split. ``data.val_rows``
        (:data:`VAL_ROWS`) picks which: ``seeded`` draws them with ``seed``; ``last`` takes the file's
        last row pairs, as the reference. Training keeps the file's order either way (``data.order``
        decides whether it is shuffled).

        Adds ``templates``, ``records_per_task``, ``train_records_per_task``, ``val_records``,
        ``groups_per_task`` and ``same_target_negatives`` to ``stats``.

        Raises:
            DataError: bad rows (see :func:`load_coin_csv`).
        """
        stats["templates"] = "pre-rendered (CoIN CSV)"
        pairs = load_coin_csv(dm.path, dm.on_error, stats)
        if dm.tasks is not None:
            pairs = [p for p in pairs if p[0].task in set(dm.tasks)]
        stats["records_per_task"] = count_tasks(a.task for p in pairs for a in p)
        n_val = min(dm.val_size // 2, len(pairs) - 1) if dm.val_size > 0 else 0
        held = (set(range(len(pairs) - n_val, len(pairs))) if dm.val_rows == "last"
                else set(torch.randperm(len(pairs), generator=torch.Generator().manual_seed(dm.seed))[:n_val].tolist()))
        train_pairs = [p for i, p in enumerate(pairs) if i not in held]
        val_pairs = [p for i, p in enumerate(pairs) if i in held]
        stats["train_records_per_task"] = count_tasks(a.task for p in train_pairs for a in p)
        stats["val_records"] = 2 * len(val_pairs)
        train = groups_from_pairs(train_pairs, dm.group)
        stats["groups_per_task"] = count_tasks(g.pairs[0].original.task for g in train)
        stats["same_target_negatives"] = sum(a.target == b.target for a, b in pairs)
        return train, groups_from_pairs(val_pairs, dm.group)
