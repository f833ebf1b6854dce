"""Evaluation tasks: which rows, how their content is written, which words answer them.

The tasks of the data sources are their ``eval_tasks`` (:func:`coin_lightning.data.sources.eval_tasks`),
their content the source's (PromptBench's format for GLUE: Zhu et al. 2023, ``promptbench/dataload.py``,
``GLUE.get_content_by_idx``); the model input is ``instruction + CONTENT_SEPARATOR + content``,
wrapped by :func:`coin_lightning.data.records.build_prompt` (the format training used).

Rows are a seeded sample that depends only on ``(seed, task's split)``, never on the model, so every
evaluation with the same ``eval.seed`` and ``eval.samples_per_task`` scores the same rows (recorded by
uid in the run's fingerprint).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coin_lightning.data.records import DataError, Record, build_prompt
from coin_lightning.data.sources import eval_tasks
from coin_lightning.data.sources.base import joined_fields

log = logging.getLogger(__name__)

CONTENT_SEPARATOR = "\n"
"""Between the instruction and the content (PromptBench puts the content on the next line)."""

def render_input(instruction: str, content: str) -> str:
    """The text handed to ``build_prompt``: ``instruction + CONTENT_SEPARATOR + content``."""
    return f"{instruction}{CONTENT_SEPARATOR}{content}"


PROMPT_LAYOUTS = ("training", "reference")
"""Values of ``eval.prompt_layout`` (see :func:`eval_prompt`)."""

REFERENCE_RESPONSE_MARKER = "### Response:"
"""What the reference evaluation appends to the content (luka-group/CoIN ``promptbench/inference.py``)."""


def eval_prompt(instruction: str, content: str, layout: str = "training", fmt: str = "alpaca", tokenizer=None) -> str:
    """The full evaluation prompt of one row.

    - ``training`` (default): ``build_prompt(instruction + "\n" + content, fmt, tokenizer)``, the
      wrapping the model was trained with (alpaca: ``"...\n\n### Response:\n"``).
    - ``reference``: the CoIN reference evaluation (luka-group/CoIN ``promptbench/inference.py``,
      ``_process_cls_input``: ``prompt + content + '### Response:'``): the instruction, one space
      (the reference's PromptBench prompts end in one), the content and ``### Response:``, with no
      newlines and no chat template (``fmt`` is not used).

    Raises:
        ValueError: unknown layout or prompt format.
    """
    if layout == "training":
        return build_prompt(render_input(instruction, content), fmt, tokenizer)
    if layout == "reference":
        return f"{instruction.rstrip()} {content}{REFERENCE_RESPONSE_MARKER}"
    raise ValueError(f"eval.prompt_layout={layout!r}; choose one of {', '.join(PROMPT_LAYOUTS)}")


def dedup_aliases(names: Sequence[str]) -> list[str]:
    """Keep one task per split: a later task that scores the same rows (``split_key``) as an earlier one
    (``mnli`` and ``mnli_matched``, both ``mnli/validation_matched``) is dropped with a logged note,
    so its rows count once in the averages over tasks. Other names are kept as given."""
    known = eval_tasks()
    seen: dict[str, str] = {}
    out = []
    for name in names:
        split = known[name][1].split_key if name in known else None
        if split is not None and split in seen:
            log.warning("eval.tasks: %s scores the same rows as %s (%s); counting them once as %s "
                        "(eval.dedup_aliases=false keeps both)", name, seen[split], split, seen[split])
            continue
        if split is not None:
            seen[split] = name
        out.append(name)
    return out


@dataclass
class EvalTask:
    """One evaluation task with its sampled rows."""

    name: str
    """Task name as reported, e.g. ``"mnli_matched"``; instruction sets are keyed by it (see
    ``instructions_for``)."""
    category: str
    """``sentiment``, ``grammar``, ``paraphrase``, ``nli`` or ``embedded``."""
    label_words: tuple[str, ...]
    """Answer words by label id (GLUE: PromptBench's words in the dataset's label order)."""
    records: list[Record]
    """The sampled rows, in source order."""
    split_key: str
    """``"<dataset>/<split>"``: tasks with the same key score the same rows (``mnli`` = ``mnli_matched``)."""
    contents: list[str] = field(default_factory=list)
    """Content string of each record (filled by the loader)."""
    golds: list[int] = field(default_factory=list)
    """Gold label id of each record (an index into ``label_words``)."""

    @property
    def uids(self) -> list[str]:
        """Row uids in order."""
        return [r.uid for r in self.records]


def sample_rows(records: Sequence[Record], n: int | None, seed: int, key: str) -> list[Record]:
    """A seeded sample of ``n`` records (all if ``n`` is null or at least the count), in source order.

    The generator is seeded with the string ``f"{seed}/{key}"`` (Python seeds from its SHA-512), so the
    sample depends on ``seed`` and the split only.
    """
    if n is None or n >= len(records):
        return list(records)
    if n <= 0:
        raise DataError(f"eval.samples_per_task={n}: must be positive or null")
    return [records[i] for i in sorted(random.Random(f"{seed}/{key}").sample(range(len(records)), n))]


def load_task(name: str, root: str | Path | None, samples: int | None, seed: int) -> EvalTask | None:
    """Load and sample one evaluation task of a data source (:func:`coin_lightning.data.sources.eval_tasks`)
    from ``root`` (``data.root``; ``None``: the hub): ``samples`` rows drawn with ``seed``.

    Returns:
        The task, or ``None`` for an optional task whose split is missing (logged).

    ``name`` is a known task (``eval.tasks`` is checked where it enters, :class:`~coin_lightning.eval.settings.EvalSettings`).

    Raises:
        DataError: missing split of a required task, malformed rows.
    """
    source, spec = eval_tasks()[name]
    try:
        records = source.eval_records(name, root, samples, seed)
    except (DataError, ValueError, FileNotFoundError) as exc:
        if not spec.optional:
            raise
        log.warning("Skipping %s: split %s is not available (%s)", name, spec.split_key, str(exc).splitlines()[0])
        return None
    return task_from_records(name, records, samples, seed, spec.label_words, spec.category, spec.split_key, source.content)


def task_from_records(name: str, records: Sequence[Record], samples: int | None, seed: int,
                      label_words: Sequence[str] | None = None, category: str = "embedded",
                      split_key: str | None = None, content: Callable[[Record], str] = joined_fields) -> EvalTask:
    """An evaluation task from any records: a seeded sample of ``samples`` of them (``split_key``,
    default ``name``, seeds it), with ``content(record)`` as content (default: the fields joined).

    Records with ``label`` need ``label_words`` (words by id); records with ``target`` only use the
    sorted set of distinct targets as label words, the gold being the record's target.

    Raises:
        DataError: no records, a record with neither label nor target, or a label outside ``label_words``.
    """
    if not records:
        raise DataError(f"task {name!r}: no records")
    split_key = split_key or name
    rows = sample_rows(records, samples, seed, split_key)
    if label_words is None:
        for r in records:
            if r.target is None:
                raise DataError(f"task {name!r}: record {r.uid!r} has no target and no label words are known")
        label_words = tuple(sorted({r.target.strip() for r in records}))
        golds = [label_words.index(r.target.strip()) for r in rows]
    else:
        label_words = tuple(label_words)
        for r in rows:
            if r.label is None or not 0 <= r.label < len(label_words):
                raise DataError(f"task {name!r}: record {r.uid!r} has label {r.label!r}, not an id of {label_words}")
        golds = [r.label for r in rows]
    return EvalTask(
        name=name,
        category=category,
        label_words=label_words,
        records=rows,
        split_key=split_key,
        contents=[content(r) for r in rows],
        golds=golds,
    )
