"""Your own evaluation task, defined in a YAML file (``eval.task_files``) and evaluated at every
perturbation level as the GLUE tasks are.

A task file::

    name: tickets                      # the task's name in eval.tasks and the reports (default: the file name)
    data: tickets.jsonl                # .jsonl or .csv (relative to this file), or hub:<owner>/<dataset>
    split: validation                  # hub datasets only (default: validation)
    hub_config: null                   # hub datasets only: the dataset's configuration name
    input_fields: [subject, body]      # the row's fields shown to the model, in this order
    label_field: label                 # the gold answer: a label word, or its index in label_words
    label_words: [billing, technical]  # the answer words by label id
    category: support                  # for the per-category table (default: custom)
    instructions:                      # clean instructions; the character, word and sentence levels perturb them
      - "Read the support ticket below and answer billing or technical."
      - "Is this ticket about billing or technical problems? Answer billing or technical."
    semantic:                          # optional: paraphrases written by you (the semantic level)
      - "Decide which team should handle the ticket: billing or technical."

The content of a row is its one input field, or ``Field: value`` for each field joined by spaces
(PromptBench's layout for GLUE's sentence pairs, e.g. ``Subject: ... Body: ...``). The rows are
sampled as the GLUE validation rows are (``eval.samples_per_task`` with ``eval.seed``,
:func:`coin_lightning.eval.engine.tasks.sample_rows`); the label words are never perturbed.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from coin_lightning.data.records import DataError, Record
from coin_lightning.data.sources.base import read_jsonl
from coin_lightning.errors import EvalConfigError
from coin_lightning.eval.engine.tasks import EvalTask, task_from_records
from coin_lightning.eval.instructions.defaults import perturb_instruction_set
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.sets import InstructionSet

HUB_PREFIX = "hub:"
"""``data: hub:<owner>/<dataset>`` reads a hub dataset (``datasets.load_dataset``)."""


@dataclass(frozen=True)
class TaskFile:
    """A parsed, checked task file (see the module docstring)."""

    path: Path
    name: str
    data: str
    split: str
    hub_config: str | None
    input_fields: tuple[str, ...]
    label_field: str
    label_words: tuple[str, ...]
    category: str
    instructions: tuple[str, ...]
    semantic: tuple[str, ...]


KEYS = {f.name for f in fields(TaskFile)} - {"path"}
"""The keys a task file may have."""


def _strings(path: Path, key: str, value, required: bool = True) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise EvalConfigError(f"{path}: {key}: expected a non-empty list of non-empty strings")
    return tuple(value)


def load_task_file(path: str | Path) -> TaskFile:
    """Read and check a task file (no data is read yet).

    Raises:
        EvalConfigError: a missing or unparsable file, an unknown key, a missing or malformed value,
            repeated label words (names the file and key).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalConfigError(f"eval.task_files: {path}: no such file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise EvalConfigError(f"{path}: cannot parse: {exc}".splitlines()[0]) from None
    if not isinstance(spec, dict):
        raise EvalConfigError(f"{path}: expected a mapping with keys {', '.join(sorted(KEYS))}")
    if unknown := sorted(set(spec) - KEYS):
        raise EvalConfigError(f"{path}: unknown key {unknown[0]!r}; keys: {', '.join(sorted(KEYS))}")
    for key in ("data", "label_field"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise EvalConfigError(f"{path}: {key} is required (a string)")
    words = _strings(path, "label_words", spec.get("label_words"))
    if len(set(w.lower() for w in words)) != len(words) or len(words) < 2:
        raise EvalConfigError(f"{path}: label_words: expected two or more different words, got {list(words)}")
    return TaskFile(
        path=path, name=str(spec.get("name") or path.stem), data=spec["data"], split=str(spec.get("split") or "validation"),
        hub_config=spec.get("hub_config"), input_fields=_strings(path, "input_fields", spec.get("input_fields")),
        label_field=spec["label_field"], label_words=words, category=str(spec.get("category") or "custom"),
        instructions=_strings(path, "instructions", spec.get("instructions")),
        semantic=_strings(path, "semantic", spec.get("semantic"), required=False),
    )


def load_task_files(paths: Iterable[str]) -> dict[str, TaskFile]:
    """``eval.task_files`` -> ``{task name: TaskFile}``.

    Raises:
        EvalConfigError: a bad file (:func:`load_task_file`) or two files naming the same task.
    """
    out: dict[str, TaskFile] = {}
    for path in paths:
        task = load_task_file(path)
        if task.name in out:
            raise EvalConfigError(f"eval.task_files: {task.path} and {out[task.name].path} both define task {task.name!r}")
        out[task.name] = task
    return out


def _rows(task: TaskFile) -> Iterator[tuple[str, dict]]:
    """``(row reference for errors, row)`` of the task's data."""
    if task.data.startswith(HUB_PREFIX):
        from coin_lightning.data.sources.base import load_hub_dataset

        hub_id = task.data.removeprefix(HUB_PREFIX)
        for i, row in enumerate(load_hub_dataset(hub_id, task.hub_config, task.split, key=f"{task.path}: data")):
            yield f"{hub_id} ({task.split}) row {i}", row
        return
    source = (task.path.parent / task.data).resolve()
    if source.suffix.lower() == ".csv":
        if not source.is_file():
            raise DataError(f"{task.path}: data: {source}: no such file")
        with source.open(encoding="utf-8", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh), 2):  # line 1 is the header
                yield f"{source} line {i}", row
    elif source.suffix.lower() in (".jsonl", ".json"):
        for line, row in read_jsonl(source):
            yield f"{source} line {line}", row
    else:
        raise DataError(f"{task.path}: data: {task.data!r}: expected a .jsonl or .csv file, or hub:<owner>/<dataset>")


def gold_id(task: TaskFile, value, where: str) -> int:
    """The label id of a row's ``label_field`` value: an index into ``label_words`` (int or digits) or
    one of the words (case-insensitive).

    Raises:
        DataError: any other value (names the row).
    """
    lowered = [w.lower() for w in task.label_words]
    if isinstance(value, str) and value.strip().lower() in lowered:
        return lowered.index(value.strip().lower())
    numeric = isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    if numeric and 0 <= int(value) < len(task.label_words):
        return int(value)
    raise DataError(f"{where}: {task.label_field}={value!r} is neither a label word ({', '.join(task.label_words)}) "
                    f"nor its index")


def content(fields: dict, names: Sequence[str]) -> str:
    """The content string of a row: its one field, or ``Field name: value`` for each field."""
    if len(names) == 1:
        return str(fields[names[0]])
    return " ".join(f"{n.replace('_', ' ').capitalize()}: {fields[n]}" for n in names)


def load_task_rows(task: TaskFile, samples: int | None, seed: int) -> EvalTask:
    """The task's rows (a seeded sample of ``samples``), their content strings and gold ids.

    Raises:
        DataError: no rows, a row without an input field or the label field, or an unknown label.
    """
    records = []
    for where, row in _rows(task):
        missing = [f for f in (*task.input_fields, task.label_field) if f not in row or row[f] is None]
        if missing:
            raise DataError(f"{where}: no field {missing[0]!r} (task file {task.path})")
        records.append(Record(task=task.name, fields={f: row[f] for f in task.input_fields},
                              label=gold_id(task, row[task.label_field], where), uid=f"{task.name}/{len(records)}",
                              meta={"row": where}))
    if not records:
        raise DataError(f"{task.path}: data {task.data!r} has no rows")
    return task_from_records(task.name, records, samples, seed, label_words=task.label_words, category=task.category,
                             content=lambda r: content(r.fields, task.input_fields))


def task_instruction_set(tasks: Sequence[TaskFile], perturb_cfg: PerturbConfig) -> InstructionSet:
    """The clean (and semantic) instructions of the task files, with the generated perturbations of
    ``perturb_cfg`` (label words protected), as :func:`coin_lightning.eval.instructions.defaults.default_instruction_set`
    makes them for the built-in tasks."""
    data = {"clean": {t.name: list(t.instructions) for t in tasks}}
    if semantic := {t.name: list(t.semantic) for t in tasks if t.semantic}:
        data["semantic"] = semantic
    source = ", ".join(str(t.path) for t in tasks)
    base = InstructionSet.from_dict(data, source, tasks=[t.name for t in tasks], level_map=perturb_cfg.levels)
    words = {t.name: t.label_words for t in tasks}
    return perturb_instruction_set(base, perturb_cfg, tasks=list(words), protected=words.__getitem__)

