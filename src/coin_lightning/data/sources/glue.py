"""GLUE in the Hugging Face ``nyu-mll/glue`` schema, from the hub or from a local directory.

Local layout (``root``): ``<root>/<task>/<split>.jsonl`` with the hub's fields and integer label ids,
e.g. ``../shared/data/glue/rte/validation.jsonl``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from coin_lightning.data.records import DataError, Record, skip_or_raise
from coin_lightning.data.sources.base import EvalSpec, Source, load_hub_dataset, read_jsonl

GLUE_HUB_ID = "nyu-mll/glue"
"""The hub dataset of GLUE."""

GLUE_FIELDS: dict[str, tuple[str, ...]] = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
"""Text fields of each GLUE task (the ``nyu-mll/glue`` dataset card)."""

GLUE_LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}
"""ClassLabel names by label id, as stored in ``nyu-mll/glue`` (note wnli's order differs from rte's)."""

LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_equivalent", "equivalent"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}
"""Answer words by label id, as PromptBench names them (Zhu et al. 2023, ``promptbench/prompts``).

The single source of the label words for the project's own GLUE templates and for evaluation;
indexed by each dataset's own label id (wnli's ids are the reverse of rte's).
"""

GLUE_TASKS = tuple(GLUE_FIELDS)

GLUE_EVAL_TASKS: dict[str, tuple[str, str, str]] = {
    "cola": ("cola", "validation", "grammar"),
    "sst2": ("sst2", "validation", "sentiment"),
    "qqp": ("qqp", "validation", "paraphrase"),
    "mrpc": ("mrpc", "validation", "paraphrase"),
    "mnli": ("mnli", "validation_matched", "nli"),
    "mnli_matched": ("mnli", "validation_matched", "nli"),
    "mnli_mismatched": ("mnli", "validation_mismatched", "nli"),
    "qnli": ("qnli", "validation", "nli"),
    "rte": ("rte", "validation", "nli"),
    "wnli": ("wnli", "validation", "nli"),
}
"""Evaluation task -> (GLUE dataset, split, category of the CoIN paper's analysis: sentiment, grammar,
duplicate detection, NLI). ``mnli`` is an alias of ``mnli_matched`` (same rows). ``mnli_mismatched`` is
optional: skipped with a logged note when its split is missing (the shared data pack has none)."""

FLAN_TASK_KEYS: dict[str, str] = {**{task: task for task in GLUE_TASKS}, "mrpc": "glue_mrpc", "qqp": "glue_qqp"}
"""Key of each GLUE task in FLAN 2021's ``PATTERNS`` (google-research/FLAN ``flan/templates.py``)."""

FLAN_FIELD_MAP: dict[str, dict[str, str]] = {
    "rte": {"premise": "sentence1", "hypothesis": "sentence2"},
}
"""FLAN placeholder -> GLUE field, where they differ: FLAN's rte templates come from SuperGLUE
(``premise``/``hypothesis``), GLUE's rte rows have ``sentence1``/``sentence2`` with the same label ids."""

FLAN_OPTIONS: dict[str, tuple[str, ...]] = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("no", "yes"),
    "qqp": ("no", "yes"),
    "mnli": ("yes", "it is not possible to tell", "no"),
    "qnli": ("yes", "no"),
    "rte": ("yes", "no"),
    "wnli": ("no", "yes"),
}
"""FLAN's answer options by GLUE label id (google-research/FLAN ``flan/tasks.py``), rendered by FLAN
templates as ``{options_}`` (all of them) and ``{answer}`` (the one at the label's index)."""


def load_glue(
    task: str, split: str, root: str | Path | None = None, on_error: str = "raise", stats: dict | None = None
) -> list[Record]:
    """Load one GLUE split as records.

    Args:
        task: one of :data:`GLUE_TASKS`.
        split: ``train``, ``validation``, ``validation_matched``, ``validation_mismatched`` (mnli), ...
        root: local directory with ``<task>/<split>.jsonl``; ``None`` loads ``nyu-mll/glue`` from the hub
            with ``datasets.load_dataset`` (at once a ``DataError`` naming ``data.root`` when the hub
            is unreachable and nothing is cached: :func:`coin_lightning.data.sources.base.load_hub_dataset`).
        on_error: ``"raise"`` or ``"skip"`` for malformed rows (missing field, bad label).
        stats: if given, ``stats["skipped"]`` is incremented for each row skipped here (rows that are
            not JSON are counted by ``read_jsonl.skipped``).

    Returns:
        Records with ``fields`` = the task's text fields, ``label`` = the dataset's integer id and
        ``uid`` = ``"<task>/<split>/<idx>"``.

    Raises:
        DataError: unknown task, missing file, or a row without a text field or with a bad label
            (names file and line).
    """
    if task not in GLUE_FIELDS:
        raise DataError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    if root is None:
        rows = enumerate(load_hub_dataset(GLUE_HUB_ID, task, split=split), 1)
        origin = f"{GLUE_HUB_ID}:{task}:{split}"
    else:
        origin = str(Path(root) / task / f"{split}.jsonl")
        rows = read_jsonl(origin, on_error=on_error)
    n_labels = len(GLUE_LABEL_NAMES[task])
    records = []
    for lineno, row in rows:
        try:
            fields = {}
            for name in GLUE_FIELDS[task]:
                value = row[name]
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"field {name!r} is empty or not text")
                fields[name] = value
            label = row["label"]
            if not isinstance(label, int) or not 0 <= label < n_labels:
                raise DataError(f"label {label!r} is not an id in 0..{n_labels - 1}")
        except (KeyError, DataError) as exc:
            what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            skip_or_raise(DataError(f"{origin}:{lineno}: {what}"), on_error, stats)
            continue
        idx = row.get("idx", lineno - 1)
        records.append(
            Record(task=task, fields=fields, label=label, uid=f"{task}/{split}/{idx}", meta={"source": origin, "row": lineno})
        )
    if not records:
        raise DataError(f"{origin}: no usable rows")
    return records


GLUE_CONTENT: dict[str, str] = {
    "sst2": "{sentence}",
    "cola": "{sentence}",
    "qqp": "Question 1: {question1} Question 2: {question2}",
    "mnli": "Premise: {premise} Hypothesis: {hypothesis}",
    "qnli": "Question: {question} Context: {sentence}",
    **dict.fromkeys(("rte", "mrpc", "wnli"), "Sentence 1: {sentence1} Sentence 2: {sentence2}"),
}
"""PromptBench's evaluation content string of each GLUE dataset (``mnli`` for all mnli splits), as a template
of the row's text fields."""


def format_glue_content(dataset: str, fields: dict) -> str:
    """PromptBench's evaluation content string for one GLUE row (Zhu et al. 2023,
    ``promptbench/dataload.py``, ``GLUE.get_content_by_idx``).

    Args:
        dataset: GLUE dataset name (``mnli`` for all mnli splits).
        fields: the row's text fields (:data:`GLUE_FIELDS`).

    Returns:
        e.g. ``"Premise: ... Hypothesis: ..."`` for mnli, the bare sentence for sst2 and cola.

    Raises:
        DataError: unknown dataset or a missing field.
    """
    if dataset not in GLUE_CONTENT:
        raise DataError(f"no content format for GLUE dataset {dataset!r}; known: {', '.join(GLUE_FIELDS)}")
    try:
        return GLUE_CONTENT[dataset].format_map(fields)
    except KeyError as exc:
        raise DataError(f"{dataset}: row has no field {exc}") from None

class Glue(Source):
    """``data.source=glue``: the GLUE train splits (``data.root`` or the hub); the GLUE evaluation tasks."""

    name, root_kind = "glue", "directory"
    label_words = LABEL_WORDS
    eval_tasks = {
        name: EvalSpec(f"{ds}/{split}", category, LABEL_WORDS[ds], name == "mnli_mismatched", (GLUE_HUB_ID, ds))
        for name, (ds, split, category) in GLUE_EVAL_TASKS.items()
    }

    def records(self, dm: Any, stats: dict) -> list[Record]:
        """:func:`load_glue` of each task of ``data.tasks`` (default :data:`GLUE_TASKS`), in order."""
        return [r for task in dm.tasks or GLUE_TASKS for r in load_glue(task, dm.split, dm.root, dm.on_error, stats)]

    def hub_data(self, tasks: list[str] | None, hub_id: str | None, data_files: Any) -> list[tuple[str, str | None, Any]]:
        """One ``nyu-mll/glue`` config per task."""
        return [(GLUE_HUB_ID, task, None) for task in tasks or GLUE_TASKS]

    def eval_records(self, name: str, root: str | None, samples: int | None, seed: int) -> list[Record]:
        """The whole split of the task (:data:`GLUE_EVAL_TASKS`)."""
        dataset, split, _ = GLUE_EVAL_TASKS[name]
        return load_glue(dataset, split, root=root)

    def content(self, record: Record) -> str:
        """:func:`format_glue_content`."""
        return format_glue_content(record.task, record.fields)
