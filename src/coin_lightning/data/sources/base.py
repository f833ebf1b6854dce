"""The interface of a data source: :class:`Source` (one subclass per ``data.source``, registered in
:data:`coin_lightning.data.sources.SOURCES`) and :class:`EvalSpec` (an evaluation task it offers, as data);
and what the sources read with: :func:`read_jsonl` and :func:`load_hub_dataset`.

Hugging Face hub datasets fail fast, in one line, when the hub cannot be reached: ``datasets.load_dataset``
retries an unreachable hub for about 25 s before it raises. When the hub is switched off
(``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or its host does not answer within a few seconds, and the
``datasets`` caches hold no copy of the dataset, :func:`load_hub_dataset` raises at once, naming the config
key that selects local files instead.
"""
from __future__ import annotations

import json
import os
import socket
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

from hydra.utils import to_absolute_path

from coin_lightning.data.grouping import build_groups
from coin_lightning.data.records import DataError, Group, Record
from coin_lightning.data.selection import apply_mixture, split_records, validate_records


def absolute(path: str | None) -> str | None:
    """Absolute, normalised path; relative paths are taken from Hydra's original working directory (the
    working directory outside a Hydra run)."""
    return None if path is None else os.path.normpath(to_absolute_path(str(path)))


PROBE_TIMEOUT_S = 3.0
"""Seconds to wait for a TCP connection to the hub before treating it as unreachable."""

def hub_offline() -> bool:
    """Whether the hub is switched off by the environment or does not accept a connection now."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((host.hostname, host.port or 443), timeout=PROBE_TIMEOUT_S):
            return False
    except OSError:
        return True


def cached(hub_id: str) -> bool:
    """Whether a ``datasets`` or hub cache holds any copy of the dataset ``hub_id``."""
    import datasets
    from huggingface_hub import constants

    names = [Path(datasets.config.HF_DATASETS_CACHE) / hub_id.replace("/", "___"),
             Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}"]
    return any(p.is_dir() for p in names)


def load_hub_dataset(hub_id: str, name: str | None = None, split: str = "train", key: str = "data.root", **kwargs):
    """``datasets.load_dataset(hub_id, name, split=split, **kwargs)``, failing fast when offline.

    Args:
        hub_id: the hub dataset, e.g. ``nyu-mll/glue``.
        name: its configuration (e.g. the GLUE task), or ``None``.
        split: the split to load.
        key: the config key that selects local files instead (named in the message).

    Raises:
        DataError: the hub is unreachable and nothing is cached, or the dataset cannot be loaded
            (one line naming the dataset and ``key``).
    """
    what = f"{hub_id}" + (f" ({name})" if name else "")
    if not cached(hub_id) and hub_offline():  # the cheap directory test first: the probe may wait seconds
        raise DataError(
            f"{key} is not set and the hub dataset {what} cannot be reached (offline, no cached copy): "
            f"set {key}=<local copy>"
        )
    import datasets

    try:
        return datasets.load_dataset(hub_id, name, split=split, **kwargs)
    except (ConnectionError, OSError, ValueError) as exc:  # DatasetNotFoundError is a FileNotFoundError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what}: cannot be loaded from the hub ({first}); set {key}=<local copy>") from None


def count_tasks(tasks: Iterable[str]) -> dict[str, int]:
    """``{task: occurrences}``, sorted by task."""
    return dict(sorted(Counter(tasks).items()))


def joined_fields(record: Record) -> str:
    """Evaluation content of a record: its field values joined by spaces, in the record's field order."""
    return " ".join(str(v) for v in record.fields.values())


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation task a source offers, as plain data (the evaluation layer builds the task)."""

    split_key: str
    """Which rows it scores (same key, same rows: ``mnli/validation_matched``); also seeds the row sample."""
    category: str
    """``sentiment``, ``grammar``, ``paraphrase``, ``nli``, ``embedded`` ..."""
    label_words: tuple[str, ...] | None = None
    """Answer words by label id; ``None``: the sorted distinct targets of the records."""
    optional: bool = False
    """Skipped with a logged note when its rows cannot be loaded."""
    hub: tuple[str, str | None] | None = None
    """``(hub dataset, config)`` its rows come from when ``data.root`` is null (``coin-download``)."""


class Source:
    """A data source: checks its paths, reads its records (or builds its groups), names its hub datasets
    and offers evaluation tasks. Subclasses set :attr:`name` and implement :meth:`records` (or
    :meth:`groups`). ``dm`` is the :class:`~coin_lightning.data.datamodule.CoinDataModule`, whose
    attributes are the ``data.*`` values (``tasks``, ``split``, ``root``, ...); ``stats`` its counts."""

    name: ClassVar[str] = ""
    """The ``data.source`` value."""
    root_kind: ClassVar[str] = ""
    """What ``data.root`` names (``directory``, ``file or directory``), checked to exist; ``""``: not read."""
    label_words: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Answer words by label id per task: the options of records with a ``label`` under the own templates."""
    eval_tasks: ClassVar[dict[str, EvalSpec]] = {}
    """Evaluation tasks by name (``eval.tasks``; the source's name selects them all)."""

    def check(self, root: str | None, path: str | None, templates: str) -> None:
        """Refuse (``DataError``) a missing file or directory among the ``data.*`` values of the same
        names, before anything loads: ``data.root`` (see :attr:`root_kind`), ``data.templates`` (``own`` or a file)."""
        if self.root_kind and root is not None and not Path(absolute(root)).exists():
            raise DataError(f"data.root={root}: no such {self.root_kind}")
        if str(templates) != "own" and not Path(absolute(templates)).is_file():
            raise DataError(f"data.templates={templates}: no such file (a FLAN templates.json, or own)")

    def records(self, dm: Any, stats: dict) -> list[Record]:
        """The records to train on, in a fixed order (for the default :meth:`groups`); ``DataError``: bad data."""
        raise NotImplementedError(f"data.source={self.name} reads no records")

    def groups(self, dm: Any, stats: dict) -> tuple[list[Group], list[Group]]:
        """``(train, val)`` groups: :meth:`records` validated against the template bank of
        ``data.templates`` (``on_error``), capped per task, ``val_size`` records held out by uid,
        training tasks weighted, then grouped (validation with ``seed + 1``).

        Adds ``templates``, ``skipped`` (bad JSONL rows skipped with ``on_error=skip``),
        ``records_per_task``, ``train_records_per_task``, ``val_records``, ``groups_per_task`` and
        ``same_target_negatives`` to ``stats``.

        Raises:
            DataError: no usable records, or bad data (see the source, ``selection`` and ``grouping``).
        """
        bank = dm.bank
        stats["templates"] = bank.name
        before = sum(read_jsonl.skipped.values())
        records = self.records(dm, stats)
        stats["skipped"] = stats.get("skipped", 0) + sum(read_jsonl.skipped.values()) - before
        pool, seed = dm.template_pool, dm.seed
        records = validate_records(records, bank, pool, dm.on_error, stats)
        if not records:
            raise DataError(f"data.source={self.name}: no usable records")
        stats["records_per_task"] = count_tasks(r.task for r in records)
        records = apply_mixture(records, dm.max_per_task, None, seed)
        train_records, val_records = split_records(records, dm.val_size, seed)
        train_records = apply_mixture(train_records, None, dm.task_weights, seed)
        stats["train_records_per_task"] = count_tasks(r.task for r in train_records)
        stats["val_records"] = len(val_records)
        train = build_groups(train_records, bank, dm.group, seed, pool, dm.negatives, stats)
        val = build_groups(val_records, bank, dm.group, seed + 1, pool, dm.negatives, {}) if val_records else []
        return train, val

    def hub_data(self, tasks: list[str] | None, hub_id: str | None, data_files: Any) -> list[tuple[str, str | None, Any]]:
        """The hub datasets the records come from when ``data.root`` is null: ``(hub id, config,
        data_files)`` each (``data.*`` values as arguments); none by default."""
        return []

    def eval_records(self, name: str, root: str | None, samples: int | None, seed: int) -> list[Record]:
        """The records of evaluation task ``name`` (of :attr:`eval_tasks`) to sample from; ``root`` is
        ``data.root`` (``None``: the hub), ``samples`` and ``seed`` are ``eval.samples_per_task`` and
        ``eval.seed``. Raises DataError, ValueError, FileNotFoundError: rows that cannot be loaded."""
        raise NotImplementedError(f"data.source={self.name} has no evaluation tasks")

    content = staticmethod(joined_fields)
    """The evaluation content of a record (default: :func:`joined_fields`)."""


def read_jsonl(path: str | Path, on_error: str = "raise") -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-empty line of a JSONL file (1-based lines).

    Args:
        path: the file.
        on_error: ``"raise"`` (default) or ``"skip"``; skipped lines are counted in
            ``read_jsonl.skipped[path]``.

    Raises:
        DataError: the file is missing, or a line is not UTF-8 text or not a JSON object (names
            file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                if on_error == "skip":
                    read_jsonl.skipped[str(path)] = read_jsonl.skipped.get(str(path), 0) + 1
                    continue
                if isinstance(exc, UnicodeDecodeError):
                    raise DataError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)") from None
                raise DataError(f"{path}:{lineno}: malformed JSONL row ({exc})") from None
            yield lineno, obj


read_jsonl.skipped = {}  # type: ignore[attr-defined]
