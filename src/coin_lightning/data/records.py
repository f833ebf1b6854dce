"""The record: the unit every data source yields, before any template is applied."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coin_lightning.errors import UserError


class DataError(UserError, ValueError):
    """Bad input data. The message names the file, row or key at fault."""


@dataclass(frozen=True)
class Record:
    """One instance of one task, with its raw fields, independent of any instruction wording.

    All sources (``glue``, ``flan``, ``coin_csv``, ``embedded``) yield these, so grouping into
    triples and evaluation never depend on where the data came from.
    """

    task: str
    """Task name, e.g. ``"rte"`` or ``"embedded_parity"``; the key into the template bank."""
    fields: dict[str, Any]
    """Template fields, e.g. ``{"sentence1": ..., "sentence2": ...}``; rendered with ``str.format``."""
    label: int | None = None
    """Class id for classification tasks (the dataset's own id, e.g. GLUE's), else ``None``."""
    target: str | None = None
    """Answer text for generation tasks, or a pre-rendered answer; ``None`` when ``label`` decides it."""
    uid: str = ""
    """Stable identifier (``"<task>/<split>/<idx>"``); validation splits and comparisons key on it."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (source file, row number, ...)."""
