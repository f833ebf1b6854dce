"""The data pipeline from a source to train/validation groups, one function per stage.

:func:`load_records` reads a source's records (``embedded``, ``glue``, ``flan``); :func:`template_groups`
keeps those that fill their task's templates, caps and weights tasks, holds out validation records and
builds contrastive groups; :func:`csv_groups` does the same for the CoIN CSV, whose rows are already
rendered pairs. :func:`download` fills the ``datasets`` cache for hub sources. Each stage adds its
counts to a ``stats`` dict (keys listed in :meth:`CoinDataModule.setup
<coin_lightning.data.datamodule.CoinDataModule.setup>`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from coin_lightning.data.examples import Group
from coin_lightning.data.grouping import build_groups, groups_from_pairs
from coin_lightning.data.records import DataError, Record
from coin_lightning.data.selection import apply_mixture, split_records, validate_records
from coin_lightning.data.templates import TemplateBank


def _counts(tasks) -> dict[str, int]:
    return dict(sorted(Counter(tasks).items()))


def load_records(
    source: str,
    stats: dict,
    *,
    bank: TemplateBank | None,
    tasks: Sequence[str] | None,
    split: str,
    root: str | None,
    on_error: str,
    pool: str,
    n_per_task: int,
    data_seed: int,
    hub_id: str | None,
    data_files: Any,
) -> list[Record]:
    """Read the records of ``data.source`` (``embedded``, ``glue`` or ``flan``; keys as the DataModule's).

    Adds ``skipped`` (bad JSONL rows skipped with ``on_error=skip``) and, for ``flan``,
    ``unmatched_flan`` to ``stats``.

    Raises:
        DataError: bad data (see the sources); ``flan`` needs ``bank``.
    """
    from coin_lightning.data.sources.jsonl import read_jsonl

    before = sum(read_jsonl.skipped.values())
    if source == "embedded":
        from coin_lightning.data.sources.embedded import load_embedded

        records = load_embedded(tasks, n_per_task, data_seed, split)
    elif source == "glue":
        from coin_lightning.data.sources.glue import GLUE_TASKS, load_glue

        records = []
        for task in tasks or GLUE_TASKS:
            records += load_glue(task, split, root, on_error=on_error, stats=stats)
    elif source == "flan":
        from coin_lightning.data.sources.flan import FLAN_HUB_ID, load_flan

        records, unmatched = load_flan(
            bank, root, tasks, split, on_error,
            hub_id=hub_id or FLAN_HUB_ID, data_files=data_files, stats=stats, pool=pool,
        )
        stats["unmatched_flan"] = unmatched
    else:
        raise DataError(f"data.source={source!r} has no record loader; choose embedded, glue or flan")
    stats["skipped"] = stats.get("skipped", 0) + sum(read_jsonl.skipped.values()) - before
    return records


def download(source: str, tasks: Sequence[str] | None, split: str, hub_id: str | None, data_files: Any) -> None:
    """Fill the ``datasets`` cache with a hub source's split (``glue``: each task; ``flan``: the dataset)."""
    from coin_lightning.data.sources.hub import load_hub_dataset

    if source == "glue":
        from coin_lightning.data.sources.glue import GLUE_TASKS

        for task in tasks or GLUE_TASKS:
            load_hub_dataset("nyu-mll/glue", task, split=split)
    elif source == "flan":
        from coin_lightning.data.sources.flan import FLAN_HUB_ID

        load_hub_dataset(hub_id or FLAN_HUB_ID, split=split, data_files=data_files)


def template_groups(
    records: Sequence[Record],
    bank: TemplateBank,
    stats: dict,
    *,
    source: str,
    group: str,
    seed: int,
    pool: str,
    negatives: str,
    on_error: str,
    max_per_task: int | None,
    task_weights: dict[str, float],
    val_size: int,
) -> tuple[list[Group], list[Group]]:
    """Records -> ``(train, val)`` groups: validate against the templates (``on_error``), cap per task,
    hold out ``val_size`` records by uid, weight training tasks, build groups (validation with
    ``seed + 1``).

    Adds ``records_per_task``, ``train_records_per_task``, ``val_records``, ``groups_per_task`` and
    ``same_target_negatives`` to ``stats``.

    Raises:
        DataError: no usable records, or bad data (see ``selection`` and ``grouping``).
    """
    records = validate_records(records, bank, pool, on_error, stats)
    if not records:
        raise DataError(f"data.source={source}: no usable records")
    stats["records_per_task"] = _counts(r.task for r in records)
    records = apply_mixture(records, max_per_task, None, seed)
    train_records, val_records = split_records(records, val_size, seed)
    train_records = apply_mixture(train_records, None, task_weights, seed)
    stats["train_records_per_task"] = _counts(r.task for r in train_records)
    stats["val_records"] = len(val_records)
    train = build_groups(train_records, bank, group, seed, pool, negatives, stats)
    val = build_groups(val_records, bank, group, seed + 1, pool, negatives, {}) if val_records else []
    return train, val


VAL_ROWS = ("seeded", "last")
"""Values of ``data.val_rows`` (CoIN CSV): ``seeded`` (a seeded random set of row pairs) or ``last``
(the file's last rows, as the reference's ``train_test_split(test_size=val_set_size, shuffle=False)``,
luka-group/CoIN ``run_contrastive_llama.py`` L415)."""


def csv_groups(
    path: str, stats: dict, *, tasks: Sequence[str] | None, group: str, seed: int, on_error: str, val_size: int,
    val_rows: str = "seeded",
) -> tuple[list[Group], list[Group]]:
    """The CoIN CSV -> ``(train, val)`` groups; ``val_size`` rows (``val_size // 2`` row pairs) are held
    out, and a row pair is never split. ``val_rows`` (:data:`VAL_ROWS`) picks which: ``seeded`` draws
    them with ``seed``; ``last`` takes the file's last row pairs, as the reference. Training keeps the
    file's order either way (``data.order`` decides whether it is shuffled).

    Adds ``templates``, ``records_per_task``, ``train_records_per_task``, ``val_records``,
    ``groups_per_task`` and ``same_target_negatives`` to ``stats``.

    Raises:
        DataError: bad rows (see ``sources.coin_csv``).
    """
    from coin_lightning.data.sources.coin_csv import load_coin_csv

    stats["templates"] = "pre-rendered (CoIN CSV)"
    pairs = load_coin_csv(path, on_error, stats)
    if tasks is not None:
        pairs = [p for p in pairs if p[0].task in set(tasks)]
    stats["records_per_task"] = _counts(a.task for p in pairs for a in p)
    n_val = min(val_size // 2, len(pairs) - 1) if val_size > 0 else 0
    if val_rows == "last":
        held = set(range(len(pairs) - n_val, len(pairs)))
    else:
        held = set(torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:n_val].tolist())
    train_pairs = [p for i, p in enumerate(pairs) if i not in held]
    val_pairs = [p for i, p in enumerate(pairs) if i in held]
    stats["train_records_per_task"] = _counts(a.task for p in train_pairs for a in p)
    stats["val_records"] = 2 * len(val_pairs)
    train = groups_from_pairs(train_pairs, group)
    stats["groups_per_task"] = _counts(g.pairs[0].original.task for g in train)
    stats["same_target_negatives"] = sum(a.target == b.target for a, b in pairs)
    return train, groups_from_pairs(val_pairs, group)
