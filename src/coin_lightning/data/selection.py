"""Which records train: template validation, FLAN-style per-task caps and weights, validation split.

Every step is seeded per task (``random.Random(f"{seed}/<step>/{task}")``), so adding a task leaves the
others' selection unchanged. The validation split is by record uid, never by template, so validation
groups never share a record with training groups.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from coin_lightning.data.records import DataError, Record, skip_or_raise
from coin_lightning.data.templates import TemplateBank


def records_by_task(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records grouped by task, tasks sorted by name, records in input order."""
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r.task, []).append(r)
    return {t: out[t] for t in sorted(out)}


def split_records(records: Sequence[Record], val_size: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out about ``val_size`` records for validation, by record uid (never by template).

    Stratified by task in proportion to its size (largest remainder); a task's share of 1 is raised
    to 2 where the task has at least 4 records, so that its validation records can form a group.

    Args:
        records: all records (uids unique).
        val_size: records to hold out (paper: 2000 rows of its CSV); 0 disables validation.
        seed: selection seed.

    Returns:
        ``(train, val)``, each in input order.

    Raises:
        DataError: duplicate uids, or ``val_size`` not smaller than the number of records.
    """
    if val_size <= 0:
        return list(records), []
    n = len(records)
    if val_size >= n:
        raise DataError(f"data.val_size={val_size} leaves no training records (only {n} records)")
    uids = [r.uid for r in records]
    if len(set(uids)) != n:
        dup = next(u for u in uids if uids.count(u) > 1)
        raise DataError(f"record uid {dup!r} occurs more than once; validation is split by uid")
    by_task = records_by_task(records)
    quotas = {t: val_size * len(rs) / n for t, rs in by_task.items()}
    alloc = {t: int(q) for t, q in quotas.items()}
    rest = val_size - sum(alloc.values())
    for t in sorted(quotas, key=lambda t: (-(quotas[t] - alloc[t]), t))[:rest]:
        alloc[t] += 1
    alloc = {t: 2 if k == 1 and len(by_task[t]) >= 4 else k for t, k in alloc.items()}
    held: set[str] = set()
    for t, rs in by_task.items():
        rng = random.Random(f"{seed}/val/{t}")
        held.update(rng.sample(sorted(r.uid for r in rs), alloc[t]))
    return [r for r in records if r.uid not in held], [r for r in records if r.uid in held]


def apply_mixture(
    records: Sequence[Record],
    max_per_task: int | None = None,
    task_weights: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[Record]:
    """FLAN-style mixing: cap each task's records, then scale each task by a weight.

    A task keeps ``round(min(n, max_per_task) * weight)`` records: a seeded subsample when that is
    fewer than it has, whole repeats plus a seeded subsample when more (repeats get uids
    ``"<uid>#<k>"`` and are never each other's hard negative). Weights default to 1.

    Raises:
        DataError: a weight for a task that has no records, or a negative weight / cap.
    """
    by_task = records_by_task(records)
    weights = dict(task_weights or {})
    unknown = sorted(set(weights) - set(by_task))
    if unknown:
        raise DataError(f"data.task_weights names task(s) without records: {', '.join(unknown)}; tasks: {', '.join(by_task)}")
    if max_per_task is not None and max_per_task < 1:
        raise DataError(f"data.max_per_task must be positive or null, got {max_per_task}")
    out: list[Record] = []
    for t, rs in by_task.items():
        rng = random.Random(f"{seed}/mix/{t}")
        if max_per_task is not None and len(rs) > max_per_task:
            rs = [rs[i] for i in sorted(rng.sample(range(len(rs)), max_per_task))]
        w = float(weights.get(t, 1.0))
        if w < 0:
            raise DataError(f"data.task_weights[{t!r}] is negative ({w})")
        want = round(len(rs) * w)
        reps, extra = divmod(want, len(rs))
        out += [replace(r, uid=f"{r.uid}#{k}") if k else r for k in range(reps) for r in rs]
        out += [replace(rs[i], uid=f"{rs[i].uid}#{reps}") if reps else rs[i] for i in sorted(rng.sample(range(len(rs)), extra))]
    return out


def _check_inputs_used(record: Record, bank: TemplateBank, indices: Iterable[int]) -> None:
    """Refuse a template that uses none of the task's input fields, on either side: its prompts would
    carry no input at all (only the instruction), and the model would learn answers without the
    question. (FLAN's inverse templates, which ask for the input given the answer, use the fields in
    their target and pass.)

    Raises:
        DataError: names the template bank, the template and the fields it should use.
    """
    if not record.fields:
        return
    key = bank.aliases.get(record.task, record.task)
    names = set(record.fields) | {ph for ph, fld in bank.field_maps.get(key, {}).items() if fld in record.fields}
    templates = bank.for_task(record.task)
    for i in indices:
        if not names & templates[i].placeholders:
            raise DataError(
                f"template bank {bank.name!r}: template {templates[i].name} of task {record.task!r} uses none of the "
                f"task's input fields ({', '.join(sorted(record.fields))}); its prompts would have no input"
            )


def validate_records(
    records: Iterable[Record], bank: TemplateBank, pool: str = "main", on_error: str = "raise", stats: dict | None = None
) -> list[Record]:
    """Keep records that fill every template they can be given (their task's paraphrase sets).

    Args:
        records: records of any source.
        bank: the template bank.
        pool: ``main`` or ``all`` (see ``templates.TEMPLATE_POOLS``).
        on_error: ``raise`` or ``skip``; skipped records are counted in ``stats["skipped"]``.

    Raises:
        DataError: unknown task, a task with fewer than two paraphrasing templates, a template
            that uses none of the task's input fields (always raised: the bank is at fault, not a
            row), a missing placeholder, a bad label or an empty target (names file and row) unless
            skipped.
    """
    sets_cache: dict[str, list[int]] = {}
    inputs_checked: set[str] = set()
    out = []
    for r in records:
        try:
            if r.task not in sets_cache:
                sets = bank.paraphrase_sets(r.task, pool)
                if not sets:
                    raise DataError(
                        f"task {r.task!r} has no two templates with the same target in bank {bank.name!r}; "
                        "a positive needs another template of the same task"
                    )
                sets_cache[r.task] = sorted({i for s in sets for i in s})
            bank.check(r, sets_cache[r.task])
        except DataError as exc:
            skip_or_raise(exc, on_error, stats)
            continue
        if r.task not in inputs_checked:  # outside the try: the bank is at fault, on_error=skip does not apply
            _check_inputs_used(r, bank, sets_cache[r.task])
            inputs_checked.add(r.task)
        out.append(r)
    return out
