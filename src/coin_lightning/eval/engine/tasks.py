"""Evaluation tasks: which rows, how their content is written, which words answer them.

The content format is PromptBench's for GLUE (Zhu et al. 2023, ``promptbench/dataload.py``,
``GLUE.get_content_by_idx``); the model input is ``instruction + CONTENT_SEPARATOR + content``,
wrapped by :func:`coin_lightning.data.prompts.build_prompt` (the format training used). This module
is the one place for both.

Rows are a seeded sample that depends only on ``(seed, task's split)``, never on the model, so every
evaluation with the same ``eval.seed`` and ``eval.samples_per_task`` scores the same rows (recorded by
uid in the run's fingerprint).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coin_lightning.data.prompts import build_prompt
from coin_lightning.data.records import DataError, Record
from coin_lightning.data.sources.glue import GLUE_FIELDS, LABEL_WORDS, load_glue

log = logging.getLogger(__name__)

CONTENT_SEPARATOR = "\n"
"""Between the instruction and the content (PromptBench puts the content on the next line)."""

GLUE_EVAL_TASKS: dict[str, tuple[str, str]] = {
    "cola": ("cola", "validation"),
    "sst2": ("sst2", "validation"),
    "qqp": ("qqp", "validation"),
    "mrpc": ("mrpc", "validation"),
    "mnli": ("mnli", "validation_matched"),
    "mnli_matched": ("mnli", "validation_matched"),
    "mnli_mismatched": ("mnli", "validation_mismatched"),
    "qnli": ("qnli", "validation"),
    "rte": ("rte", "validation"),
    "wnli": ("wnli", "validation"),
}
"""Evaluation task -> (GLUE dataset, split). ``mnli`` is an alias of ``mnli_matched`` (same rows)."""

OPTIONAL_TASKS = frozenset({"mnli_mismatched"})
"""Tasks skipped with a logged note when their split is missing (the shared data pack has none)."""

TASK_CATEGORY: dict[str, str] = {
    "sst2": "sentiment",
    "cola": "grammar",
    "qqp": "paraphrase",
    "mrpc": "paraphrase",
    "mnli": "nli",
    "mnli_matched": "nli",
    "mnli_mismatched": "nli",
    "qnli": "nli",
    "rte": "nli",
    "wnli": "nli",
}
"""Task categories of the CoIN paper's analysis (sentiment, grammar, duplicate detection, NLI)."""

EMBEDDED_CATEGORY = "embedded"
"""Category of the embedded tasks."""


def format_glue_content(dataset: str, fields: dict) -> str:
    """PromptBench's content string for one GLUE row.

    Args:
        dataset: GLUE dataset name (``mnli`` for all mnli splits).
        fields: the row's text fields (:data:`~coin_lightning.data.sources.glue.GLUE_FIELDS`).

    Returns:
        e.g. ``"Premise: ... Hypothesis: ..."`` for mnli, the bare sentence for sst2 and cola.

    Raises:
        DataError: unknown dataset or a missing field.
    """
    try:
        if dataset in ("sst2", "cola"):
            return fields["sentence"]
        if dataset == "qqp":
            return f"Question 1: {fields['question1']} Question 2: {fields['question2']}"
        if dataset == "mnli":
            return f"Premise: {fields['premise']} Hypothesis: {fields['hypothesis']}"
        if dataset == "qnli":
            return f"Question: {fields['question']} Context: {fields['sentence']}"
        if dataset in ("rte", "mrpc", "wnli"):
            return f"Sentence 1: {fields['sentence1']} Sentence 2: {fields['sentence2']}"
    except KeyError as exc:
        raise DataError(f"{dataset}: row has no field {exc}") from None
    raise DataError(f"no content format for GLUE dataset {dataset!r}; known: {', '.join(GLUE_FIELDS)}")


def format_fields(fields: dict) -> str:
    """Content of a non-GLUE record: its field values joined by spaces, in the record's field order."""
    return " ".join(str(v) for v in fields.values())


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
    """Keep one task per GLUE split: a later task that scores the same rows as an earlier one
    (``mnli`` and ``mnli_matched``, both ``mnli/validation_matched``) is dropped with a logged note,
    so its rows count once in the averages over tasks. Other names are kept as given."""
    seen: dict[tuple[str, str], str] = {}
    out = []
    for name in names:
        split = GLUE_EVAL_TASKS.get(name)
        if split is not None and split in seen:
            log.warning("eval.tasks: %s scores the same rows as %s (%s/%s); counting them once as %s "
                        "(eval.dedup_aliases=false keeps both)", name, seen[split], *split, seen[split])
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
    picked = sorted(random.Random(f"{seed}/{key}").sample(range(len(records)), n))
    return [records[i] for i in picked]


def load_glue_task(name: str, root: str | Path | None, samples: int | None, seed: int) -> EvalTask | None:
    """Load and sample one GLUE evaluation task.

    Returns:
        The task, or ``None`` for an optional task whose split is missing (logged).

    Raises:
        DataError: unknown task, missing split of a required task, malformed rows.
    """
    if name not in GLUE_EVAL_TASKS:
        raise DataError(f"eval.tasks: unknown task {name!r}; known: {', '.join(GLUE_EVAL_TASKS)}")
    dataset, split = GLUE_EVAL_TASKS[name]
    try:
        records = load_glue(dataset, split, root=root)
    except (DataError, ValueError, FileNotFoundError) as exc:
        if name in OPTIONAL_TASKS:
            log.warning("Skipping %s: split %s/%s is not available (%s)", name, dataset, split, str(exc).splitlines()[0])
            return None
        raise
    key = f"{dataset}/{split}"
    rows = sample_rows(records, samples, seed, key)
    return EvalTask(
        name=name,
        category=TASK_CATEGORY[name],
        label_words=LABEL_WORDS[dataset],
        records=rows,
        split_key=key,
        contents=[format_glue_content(dataset, r.fields) for r in rows],
        golds=[r.label for r in rows],
    )


def task_from_records(name: str, records: Sequence[Record], samples: int | None, seed: int,
                      label_words: Sequence[str] | None = None, category: str = EMBEDDED_CATEGORY) -> EvalTask:
    """An evaluation task from any records (the embedded tasks): content = fields joined.

    Records with ``label`` need ``label_words`` (words by id); records with ``target`` only use the
    sorted set of distinct targets as label words, the gold being the record's target.

    Raises:
        DataError: no records, a record with neither label nor target, or a label outside ``label_words``.
    """
    if not records:
        raise DataError(f"task {name!r}: no records")
    rows = sample_rows(records, samples, seed, name)
    if label_words is None:
        if any(r.target is None for r in records):
            bad = next(r for r in records if r.target is None)
            raise DataError(f"task {name!r}: record {bad.uid!r} has no target and no label words are known")
        label_words = tuple(sorted({r.target.strip() for r in records}))
        golds = [label_words.index(r.target.strip()) for r in rows]
    else:
        label_words = tuple(label_words)
        golds = []
        for r in rows:
            if r.label is None or not 0 <= r.label < len(label_words):
                raise DataError(f"task {name!r}: record {r.uid!r} has label {r.label!r}, not an id of {label_words}")
            golds.append(r.label)
    return EvalTask(
        name=name,
        category=category,
        label_words=label_words,
        records=rows,
        split_key=name,
        contents=[format_fields(r.fields) for r in rows],
        golds=golds,
    )
