"""Instruction sets: which instructions each task is evaluated with, per perturbation and level.

One schema for every instruction file (YAML or JSON)::

    {perturbation: {task: [instruction, ...]}}

e.g. ``{"clean": {"rte": [...]}, "deepwordbug": {"rte": [...]}, "semantic": {...}}``. Perturbation
names map to PromptBench's levels through :func:`level_of` (configurable: ``eval.perturb.levels``);
a level name itself (``character``, ...) is accepted as a key too. ``eval.instructions_file=PATH``
evaluates any such file unchanged.

The project's default set (:func:`default_instruction_set`) is its own hand-written ``clean`` and
``semantic`` instructions (``resources/instructions/default.yaml``: 6 + 6 per task) plus the
character, word and sentence perturbations generated from ``clean`` by :mod:`.perturb`, seeded, in
the same order (``perturbed[i]`` derives from ``clean[i]``). This mirrors the CoIN evaluation
(Yan et al. 2024, Section 4: 6 unseen instructions per GLUE task, perturbed as in PromptBench,
Zhu et al. 2023).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from coin_lightning.data.sources import eval_tasks
from coin_lightning.errors import UserError
from coin_lightning.eval.instructions.perturb.config import LEVELS, check_level_map, level_of
from coin_lightning.io import write_json, write_text

TASK_ALIASES: dict[str, str] = {"mnli_matched": "mnli", "mnli_mismatched": "mnli"}
"""Evaluation rows that reuse another task's instructions unless a file has their own key."""


def default_instruction_path() -> Path:
    """Path of the project's hand-written instruction file inside the installed package
    (``resources/instructions/default.yaml``)."""
    return Path(str(resources.files("coin_lightning").joinpath("resources/instructions/default.yaml")))


class InstructionError(UserError, ValueError):
    """Bad instruction set or file; the message names the file and the key at fault."""


def label_words(task: str) -> tuple[str, ...]:
    """The answer words of ``task`` by label id (``()`` for a generation task): its ``EvalSpec.label_words``.

    GLUE: ``glue.LABEL_WORDS`` (PromptBench's); embedded: ``EMBEDDED_TASKS[task].options``;
    ``mnli_matched``/``mnli_mismatched``: mnli's.

    Raises:
        InstructionError: unknown task.
    """
    known = eval_tasks()
    if task not in known:
        raise InstructionError(f"unknown task {task!r}: no label words; known: {', '.join(known)}")
    return tuple(known[task][1].label_words or ())


class Entry(NamedTuple):
    """One instruction of a task under one perturbation."""

    perturbation: str
    """Perturbation name (a key of the file), e.g. ``"textfooler"``."""
    level: str
    """Its level, one of :data:`LEVELS`."""
    index: int
    """Position in the task's list; generated perturbations keep the index of their clean source."""
    instruction: str
    """The instruction text."""


@dataclass(frozen=True)
class InstructionSet:
    """Instructions by perturbation and task, with the level of each perturbation.

    Build it with :func:`load_instruction_file`, :func:`default_instruction_set` or
    :meth:`from_dict` (which validate); the constructor does not.
    """

    instructions: Mapping[str, Mapping[str, tuple[str, ...]]]
    """perturbation -> task -> instructions (non-empty tuples of non-empty strings)."""
    level_map: Mapping[str, str] = field(default_factory=level_of)
    """perturbation -> level; a key that is itself a level name maps to itself."""
    source: str = "<memory>"
    """Where the set came from (a path, or a description); used in error messages and reports."""

    @classmethod
    def from_dict(
        cls, data: Any, source: str = "<memory>", tasks: Iterable[str] | None = None,
        level_map: Mapping[str, str] | None = None,
    ) -> InstructionSet:
        """Validate ``{perturbation: {task: [instruction, ...]}}`` and wrap it.

        Args:
            data: the parsed file content.
            source: named in error messages.
            tasks: allowed task keys (default: the data sources' evaluation tasks,
                :func:`coin_lightning.data.sources.eval_tasks`).
            level_map: perturbation -> level (default: :func:`level_of`).

        Raises:
            InstructionError: not a mapping, unknown perturbation/level or task, an empty or
                non-list instruction list, an empty or non-string instruction (names source and key).
        """
        levels = check_level_map(level_of() if level_map is None else level_map, f"{source}: eval.perturb.levels",
                                 InstructionError)
        allowed = set(eval_tasks() if tasks is None else tasks)
        if not isinstance(data, Mapping) or not data:
            raise InstructionError(f"{source}: expected a non-empty mapping {{perturbation: {{task: [instruction, ...]}}}}")
        for pert, by_task in data.items():
            if not isinstance(pert, str) or (pert not in levels and pert not in LEVELS):
                known = sorted(set(levels) | set(LEVELS))
                raise InstructionError(f"{source}: unknown perturbation or level {pert!r}; known: {', '.join(known)}")
            if not isinstance(by_task, Mapping) or not by_task:
                raise InstructionError(f"{source}: {pert}: expected a non-empty mapping {{task: [instruction, ...]}}")
            for task, items in by_task.items():
                if task not in allowed:
                    raise InstructionError(f"{source}: {pert}.{task}: unknown task; known: {', '.join(sorted(allowed))}")
                if not isinstance(items, (list, tuple)) or not items:
                    raise InstructionError(f"{source}: {pert}.{task}: expected a non-empty list of instructions")
                for i, text in enumerate(items):
                    if not isinstance(text, str) or not text.strip():
                        raise InstructionError(f"{source}: {pert}.{task}[{i}]: instruction is empty or not a string")
        return cls({pert: {task: tuple(items) for task, items in by_task.items()} for pert, by_task in data.items()},
                   levels, source)

    @property
    def perturbations(self) -> list[str]:
        """Perturbation names in file order."""
        return list(self.instructions)

    def level(self, perturbation: str) -> str:
        """The level of ``perturbation`` (one of :data:`LEVELS`).

        Raises:
            InstructionError: unknown perturbation.
        """
        if perturbation in self.level_map:
            return self.level_map[perturbation]
        if perturbation in LEVELS:
            return perturbation
        raise InstructionError(f"{self.source}: unknown perturbation {perturbation!r}")

    def tasks(self, perturbation: str | None = None) -> list[str]:
        """Task keys of one perturbation, or of all (first-seen order)."""
        perts = [perturbation] if perturbation is not None else self.perturbations
        return list(dict.fromkeys(t for p in perts for t in self.instructions.get(p, {})))

    def resolve_task(self, task: str, perturbation: str = "clean") -> str | None:
        """The key under which ``task``'s instructions are stored for ``perturbation``, or ``None``.

        The task's own key wins; otherwise ``mnli_matched``/``mnli_mismatched`` fall back to ``mnli``.
        """
        by_task = self.instructions.get(perturbation, {})
        if task in by_task:
            return task
        alias = TASK_ALIASES.get(task)
        return alias if alias in by_task else None

    def instructions_for(self, task: str, perturbation: str = "clean") -> list[str]:
        """The instructions for evaluation task ``task`` under ``perturbation`` (see :meth:`resolve_task`).

        Raises:
            InstructionError: the set has no such perturbation, or no instructions for the task.
        """
        if perturbation not in self.instructions:
            raise InstructionError(f"{self.source}: no perturbation {perturbation!r}; has {', '.join(self.perturbations)}")
        key = self.resolve_task(task, perturbation)
        if key is None:
            raise InstructionError(
                f"{self.source}: {perturbation}: no instructions for task {task!r}; has {', '.join(self.tasks(perturbation))}"
            )
        return list(self.instructions[perturbation][key])

    def entries(self, task: str) -> list[Entry]:
        """Every instruction of ``task`` across perturbations (those that have the task), in set order."""
        return [Entry(p, self.level(p), i, text) for p in self.perturbations if self.resolve_task(task, p)
                for i, text in enumerate(self.instructions_for(task, p))]

    def select(self, perturbations: Iterable[str] | None = None, tasks: Iterable[str] | None = None) -> InstructionSet:
        """A subset: only these perturbations and/or task keys (aliases resolved); missing ones skipped."""
        perts = self.perturbations if perturbations is None else [p for p in perturbations if p in self.instructions]
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for pert in perts:
            if tasks is None:
                keys = list(self.instructions[pert])
            else:
                keys = list(dict.fromkeys(k for k in (self.resolve_task(t, pert) for t in tasks) if k is not None))
            if keys:
                out[pert] = {k: tuple(self.instructions[pert][k]) for k in keys}
        return InstructionSet(out, dict(self.level_map), self.source)

    def merged(self, other: InstructionSet) -> InstructionSet:
        """This set with ``other``'s (perturbation, task) lists added, ``other`` winning on conflicts."""
        out = {p: dict(v) for p, v in self.instructions.items()}
        for pert, by_task in other.instructions.items():
            out.setdefault(pert, {}).update(by_task)
        return InstructionSet(out, {**self.level_map, **other.level_map}, f"{self.source} + {other.source}")

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        """The file schema as plain data."""
        return {p: {t: list(v) for t, v in by_task.items()} for p, by_task in self.instructions.items()}


def load_instruction_file(
    path: str | Path, tasks: Iterable[str] | None = None, level_map: Mapping[str, str] | None = None
) -> InstructionSet:
    """Read and validate an instruction file (``.yaml``/``.yml`` or ``.json``).

    Args:
        path: the file.
        tasks: allowed task keys (default: the data sources' evaluation tasks, :func:`coin_lightning.data.sources.eval_tasks`).
        level_map: perturbation -> level (default: :func:`level_of`; ``eval.perturb.levels``).

    Raises:
        InstructionError: missing or unparsable file, or any schema error of :meth:`InstructionSet.from_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise InstructionError(f"{path}: instruction file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InstructionError(f"{path}: cannot parse: {exc}".splitlines()[0]) from None
    return InstructionSet.from_dict(data, str(path), tasks, level_map)


def save_instruction_file(instruction_set: InstructionSet, path: str | Path) -> Path:
    """Write ``instruction_set`` in the file schema, atomically; JSON for ``.json``, else YAML.

    Returns:
        The path written.
    """
    data = instruction_set.to_dict()
    if Path(path).suffix.lower() == ".json":
        return write_json(path, data)
    return write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6))

