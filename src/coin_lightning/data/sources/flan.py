"""FLAN-collection records: rendered ``inputs``/``targets`` with a ``task`` name, fields recovered by matching.

Layout (the hub's ``Muennighoff/flan``, or local JSONL files of the same layout): one object per row
with ``inputs`` (an instruction template already filled in), ``targets`` and ``task`` (e.g.
``"rte_10templates"``). Rendered inputs have no fields left, so each row is matched against its task's
templates (:meth:`coin_lightning.data.templates.Template.match`, the generic form of the reference
code's per-template regexes in luka-group/CoIN ``utils/flan_preprocessing_constants.py``); the
recovered placeholder values become the record's fields, so the row can be rendered again under any
other template of its task. Rows that match no template are counted per task and reported, not
raised: the reference code drops them the same way.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from coin_lightning.data.records import DataError, Record, skip_or_raise
from coin_lightning.data.sources.base import Source, load_hub_dataset, read_jsonl
from coin_lightning.data.templates import TemplateBank

log = logging.getLogger(__name__)

FLAN_HUB_ID = "Muennighoff/flan"
"""The hub dataset of the CoIN paper's source data (Section 3.2)."""

_SUFFIX = re.compile(r"_\d+templates$")


def flan_task_key(name: str, bank: TemplateBank) -> str | None:
    """The template-bank key of a FLAN-collection task name, or ``None`` if the bank has none.

    ``"rte_10templates"`` -> ``"rte"``; variants map to their family by the longest key that is a
    ``_``-separated prefix: ``"mnli_matched"`` -> ``"mnli"``, ``"anli_r1"`` -> ``"anli"``,
    ``"wmt16_translate_deen"`` -> ``"wmt16_translate"``. GLUE names resolve through the bank's aliases
    (``"mrpc"`` -> ``"glue_mrpc"``).
    """
    base = _SUFFIX.sub("", name.strip())
    base = bank.aliases.get(base, base)
    if base in bank.templates:
        return base
    return max((key for key in bank.templates if base.startswith(key + "_")), key=len, default=None)


def _rows(root: str | Path | None, split: str, on_error: str, hub_id: str, data_files) -> Iterator[tuple[str, int, dict]]:
    if root is None:
        for i, row in enumerate(load_hub_dataset(hub_id, split=split, data_files=data_files), 1):
            yield f"{hub_id}:{split}", i, row
        return
    root = Path(root)  # Source.check refuses a missing data.root before anything loads
    base = root / split if (root / split).is_dir() else root
    files = [root] if root.is_file() else sorted(base.rglob("*.jsonl"))
    if not files:
        raise DataError(f"{base}: no *.jsonl files")
    for path in files:
        for lineno, row in read_jsonl(path, on_error=on_error):
            yield str(path), lineno, row


def load_flan(
    bank: TemplateBank,
    root: str | Path | None = None,
    tasks: Iterable[str] | None = None,
    split: str = "train",
    on_error: str = "raise",
    hub_id: str = FLAN_HUB_ID,
    data_files=None,
    stats: dict | None = None,
    pool: str = "main",
) -> tuple[list[Record], dict[str, int]]:
    """Load FLAN-collection rows as records, recovering their fields from the task's templates.

    Args:
        bank: the FLAN template bank the rows were rendered with (``load_flan_templates``).
        root: a JSONL file, or a directory of ``*.jsonl`` files (``<root>/<split>/`` if it exists);
            ``None`` loads ``hub_id`` with ``datasets.load_dataset``.
        tasks: bank keys or GLUE names to keep (default: all); rows of other tasks are ignored.
        split: dataset split (hub) or sub-directory (local).
        on_error: ``raise`` or ``skip`` for malformed rows (not JSON, missing/empty ``inputs``,
            ``targets`` or ``task``, a task the bank has no templates for).
        hub_id: hub dataset id.
        data_files: passed to ``datasets.load_dataset`` (e.g. to fetch only some task files).
        stats: if given, ``stats["skipped"]`` is incremented per skipped row and
            ``stats["incomplete_flan"]`` counts, per task, rows that matched a template lacking
            fields the training templates need (e.g. FLAN's inverted "Can you generate a question
            with a factual answer?" rows give no context); they are dropped, like unmatched rows.
        pool: the template pool trained on (``main`` or ``all``), which decides the fields needed.

    Returns:
        ``(records, unmatched)``: records with ``task`` = bank key, ``fields`` = recovered values
        (``options_`` kept as rendered), ``target`` = the recovered ``{answer}`` (``None`` when the
        template had none, e.g. summaries live in their field), ``meta["template"]`` = the matching
        template's name, ``meta["targets"]`` = the row's targets; ``unmatched`` = rows per task that
        matched none of its templates.

    Raises:
        DataError: a malformed row (names file and line) unless ``on_error="skip"``.
    """
    keep = None if tasks is None else {bank.key(t) for t in tasks}
    records: list[Record] = []
    unmatched: dict[str, int] = {}
    incomplete: dict[str, int] = {}
    needed: dict[str, list[int]] = {}
    for origin, lineno, row in _rows(root, split, on_error, hub_id, data_files):
        try:
            for col in ("inputs", "targets", "task"):
                if not isinstance(row.get(col), str) or not row[col].strip():
                    raise DataError(f"{origin}:{lineno}: column {col!r} is missing or empty")
            key = flan_task_key(row["task"], bank)
            if key is None:
                raise DataError(f"{origin}:{lineno}: unknown task {row['task']!r}: the template bank {bank.name} has no templates for it")
        except DataError as exc:
            skip_or_raise(exc, on_error, stats)
            continue
        if keep is not None and key not in keep:
            continue
        for tpl in bank.templates[key]:
            values = tpl.match(row["inputs"], row["targets"])
            if values is not None:
                break
        else:
            unmatched[key] = unmatched.get(key, 0) + 1
            continue
        answer = values.pop("answer", None)
        record = Record(
            task=key,
            fields=values,
            target=answer,  # None unless the template carried {answer}: never the text of another field
            uid=f"{key}/{split}/{Path(origin).stem}:{lineno}",
            meta={"source": origin, "row": lineno, "template": tpl.name, "flan_task": row["task"], "targets": row["targets"]},
        )
        if key not in needed:
            needed[key] = sorted({i for st in bank.paraphrase_sets(key, pool) for i in st})
        try:
            bank.check(record, needed[key])
        except DataError:
            incomplete[key] = incomplete.get(key, 0) + 1
            continue
        records.append(record)
    if stats is not None:
        stats["incomplete_flan"] = incomplete
    for counts, what in ((incomplete, "whose template lacks fields the training templates need"),
                         (unmatched, "that match none of their task's templates")):
        if counts:
            log.warning("FLAN rows %s (dropped): %s", what, ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return records, unmatched


class Flan(Source):
    """``data.source=flan``: FLAN-collection rows (``data.root`` or the hub ``data.hub_id``), matched
    against the FLAN templates of ``data.templates``."""

    name, root_kind = "flan", "file or directory"

    def check(self, root: str | None, path: str | None, templates: str) -> None:
        """Also refuses ``own`` templates (FLAN rows are matched against the templates they were rendered with)."""
        super().check(root, path, templates)
        if str(templates) == "own":
            raise DataError("data.source=flan needs data.templates: set it to the FLAN templates.json its rows were rendered with")

    def records(self, dm: Any, stats: dict) -> list[Record]:
        """:func:`load_flan`; adds ``unmatched_flan`` and ``incomplete_flan`` to ``stats``."""
        records, stats["unmatched_flan"] = load_flan(
            dm.bank, dm.root, dm.tasks, dm.split, dm.on_error,
            hub_id=dm.hub_id or FLAN_HUB_ID, data_files=dm.data_files, stats=stats, pool=dm.template_pool,
        )
        return records

    def hub_data(self, tasks: list[str] | None, hub_id: str | None, data_files: Any) -> list[tuple[str, str | None, Any]]:
        """The FLAN collection (``data.hub_id``, default :data:`FLAN_HUB_ID`) with ``data.data_files``."""
        return [(hub_id or FLAN_HUB_ID, None, data_files)]
