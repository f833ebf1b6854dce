"""Instruction templates: a task maps to several (input, target) templates with ``{field}`` placeholders.

This is FLAN's format (Wei et al. 2022, google-research/FLAN ``flan/templates.py``, ``PATTERNS``): a
template is a pair of Python ``str.format`` strings, e.g. ``("{premise}\\nCan we infer the
following?\\n{hypothesis}\\n\\n{options_}", "{answer}")``. Besides a record's own fields, three
placeholders are derived from the task's answer options (by label id):

- ``{options_}``: FLAN's option list, ``"OPTIONS:\\n- " + "\\n- ".join(options)``
  (FLAN ``flan/preprocessors.py``, ``format_options``);
- ``{choices}``: the options quoted in running text, ``'a', 'b' or 'c'`` (this project's templates);
- ``{answer}``: the option at the record's label id, or the record's target text.

The loaders of :mod:`coin_lightning.data.template_files` build a :class:`TemplateBank` from FLAN's
JSON or this project's YAML files. Templates of a task that share the same target string are
paraphrases of each other (same expected output); CoIN's positives are drawn within such a set
(:meth:`TemplateBank.paraphrase_sets`).
"""
from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from coin_lightning.data.records import DataError, Record

DERIVED_FIELDS = ("options_", "choices", "answer")
"""Placeholders filled from the task's options and the record's label/target, not from its fields."""

TEMPLATE_POOLS = ("main", "all")
"""Which paraphrase sets a task trains on: ``main`` = only the largest set(s) of templates sharing a
target (for FLAN: the templates that answer the task, not the inverted ones such as "Write a {answer}
movie review."; the reference code's per-template regexes cover exactly these), ``all`` = every set
with at least two templates."""

_FORMATTER = string.Formatter()


def placeholder_names(text: str) -> tuple[str, ...]:
    """Names of the ``{field}`` placeholders of a ``str.format`` string, in order of first use."""
    names: list[str] = []
    for _, name, _, _ in _FORMATTER.parse(text):
        if name is not None and name not in names:
            if name == "" or name.isdigit():
                raise ValueError(f"template {text!r} has a positional placeholder; use named fields")
            names.append(name)
    return tuple(names)


def format_options(options: Iterable[str]) -> str:
    """FLAN's rendering of answer options: ``"OPTIONS:\\n- a\\n- b"`` (``flan/preprocessors.py``)."""
    return "OPTIONS:\n- " + "\n- ".join(options)


def format_choices(options: Iterable[str]) -> str:
    """The options quoted in running text: ``'a' or 'b'``, ``'a', 'b' or 'c'`` (own templates' ``{choices}``)."""
    quoted = [f"'{o}'" for o in options]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else "".join(quoted)


@dataclass(frozen=True)
class Template:
    """One instruction template of one task: an input and a target ``str.format`` string."""

    input: str
    """Input side, e.g. ``"{premise}\\nCan we infer the following?\\n{hypothesis}\\n\\n{options_}"``."""
    target: str = "{answer}"
    """Target side; ``"{answer}"`` for templates that ask for the task's answer."""
    name: str = ""
    """Stable id, ``"<bank>:<task>/<index>"`` (e.g. ``"flan:rte/3"``); logged and kept in examples."""

    @cached_property
    def placeholders(self) -> frozenset[str]:
        """All placeholders of input and target."""
        return frozenset(placeholder_names(self.input)) | frozenset(placeholder_names(self.target))

    def render(self, values: Mapping[str, Any]) -> tuple[str, str]:
        """Fill both sides with ``values``; returns ``(input, target)``.

        Raises:
            KeyError: a placeholder has no value (callers check first, see :meth:`TemplateBank.check`).
        """
        return self.input.format_map(values), self.target.format_map(values)

    @cached_property
    def _regexes(self) -> tuple[re.Pattern, re.Pattern]:
        return _template_regex(self.input), _template_regex(self.target)

    def match(self, rendered_input: str, rendered_target: str) -> dict[str, str] | None:
        """Recover the placeholder values from a rendered (input, target) pair, or ``None``.

        The inverse of :meth:`render` for FLAN-collection rows whose fields are gone: each template
        becomes an anchored regex (literal text escaped, each placeholder a lazy named group, a
        repeated placeholder a back-reference), as the reference code's ``NLU_REGEX_PATTERN``
        (luka-group/CoIN ``utils/flan_preprocessing_constants.py``) does by hand. A placeholder
        present on both sides must capture the same text.
        """
        m_in, m_tg = self._regexes[0].match(rendered_input), self._regexes[1].match(rendered_target)
        if m_in is None or m_tg is None:
            return None
        values = m_in.groupdict()
        for key, val in m_tg.groupdict().items():
            if key in values and values[key] != val:
                return None
            values[key] = val
        return values


_CAPTURES = {"options_": r"OPTIONS:\n- .+?"}
"""What a placeholder captures where it is not the lazy ``.+?``: FLAN's option list starts with its header."""


def _template_regex(text: str) -> re.Pattern:
    parts = ["\\A"]
    seen: set[str] = set()
    for literal, name, _, _ in _FORMATTER.parse(text):
        parts.append(re.escape(literal))
        if name is None:
            continue
        if name in seen:
            parts.append(f"(?P={name})")
        else:
            parts.append(f"(?P<{name}>{_CAPTURES.get(name, '.+?')})")
            seen.add(name)
    parts.append("\\Z")
    return re.compile("".join(parts), re.DOTALL)


def _where(record: Record) -> str:
    src, row = record.meta.get("source"), record.meta.get("row")
    if src is not None and row is not None:
        return f"{src}:{row}"
    return str(src or record.uid or "<record>")


@dataclass
class TemplateBank:
    """Templates by task, with what it takes to fill them from a :class:`Record`.

    Record task names are resolved through ``aliases`` (e.g. GLUE ``mrpc`` -> FLAN ``glue_mrpc``);
    a placeholder that is not a record field is looked up through ``field_maps`` (FLAN's rte
    ``premise`` -> GLUE ``sentence1``); ``options`` gives the answer options by label id, from which
    ``{options_}``, ``{choices}`` and ``{answer}`` are derived (see the module docstring).
    """

    templates: dict[str, tuple[Template, ...]]
    """Bank key -> the task's templates, deduplicated, in file order."""
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Record task name or bank key -> answer options by label id."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Record task name -> bank key, where they differ."""
    field_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    """Bank key -> {placeholder: record field} for placeholders named differently from the record's fields."""
    name: str = ""
    """Where the bank came from (``"own"`` or the JSON path), for messages."""

    def key(self, task: str) -> str:
        """The bank key of a record task.

        Raises:
            DataError: the bank has no templates for ``task``.
        """
        key = self.aliases.get(task, task)
        if key not in self.templates:
            raise DataError(
                f"unknown task {task!r} for template bank {self.name!r}; it has templates for "
                f"{', '.join(sorted(self.templates))}"
            )
        return key

    def for_task(self, task: str) -> tuple[Template, ...]:
        """The templates of a record task (see :meth:`key`)."""
        return self.templates[self.key(task)]

    def paraphrase_sets(self, task: str, pool: str = "main") -> list[tuple[int, ...]]:
        """Sets of template indices that are paraphrases of each other (identical target string).

        Args:
            task: a record task name.
            pool: ``main`` (the largest set or sets) or ``all`` (every set); see :data:`TEMPLATE_POOLS`
                (checked by :class:`~coin_lightning.data.config.DataArgs`).

        Returns:
            Tuples of at least two indices into :meth:`for_task`; empty if the task has no two
            templates with the same target, in which case no positive can be formed.
        """
        by_target: dict[str, list[int]] = {}
        for i, t in enumerate(self.for_task(task)):
            by_target.setdefault(t.target.strip(), []).append(i)
        sets = [tuple(v) for v in by_target.values() if len(v) >= 2]
        if pool == "main" and sets:
            top = max(len(s) for s in sets)
            sets = [s for s in sets if len(s) == top]
        return sets

    def values(self, record: Record) -> dict[str, str]:
        """Placeholder values for ``record``: its fields, mapped fields and the derived ones.

        Raises:
            DataError: label id out of range or without options, or an empty answer (names the row).
        """
        vals = {k: str(v) for k, v in record.fields.items()}
        for ph, fld in self.field_maps.get(self.aliases.get(record.task, record.task), {}).items():
            if ph not in vals and fld in record.fields:
                vals[ph] = str(record.fields[fld])
        task = record.task  # answer options by label id: under the record's task name, else its bank key
        opts = self.options[task] if task in self.options else self.options.get(self.aliases.get(task, task))
        if opts:
            vals.setdefault("options_", format_options(opts))
            vals.setdefault("choices", format_choices(opts))
        if "answer" not in vals:
            if record.label is not None:
                if not opts:
                    raise DataError(f"{_where(record)}: task {record.task!r} has a label id but no answer options")
                if not 0 <= int(record.label) < len(opts):
                    raise DataError(
                        f"{_where(record)}: label {record.label!r} is not an id in 0..{len(opts) - 1} "
                        f"for task {record.task!r}"
                    )
                vals["answer"] = opts[int(record.label)]
            elif record.target is not None:
                vals["answer"] = str(record.target)
        if "answer" in vals and not vals["answer"].strip():
            raise DataError(f"{_where(record)}: empty target for task {record.task!r}")
        return vals

    def check(self, record: Record, indices: Iterable[int] | None = None) -> dict[str, str]:
        """Check that ``record`` fills every placeholder of the given templates; return its values.

        Args:
            record: the record.
            indices: template indices into :meth:`for_task` (default: all of the task's templates).

        Raises:
            DataError: unknown task, or a placeholder the record cannot fill (names file and row,
                template and key).
        """
        templates = self.for_task(record.task)
        vals = self.values(record)
        for i in range(len(templates)) if indices is None else indices:
            missing = templates[i].placeholders - vals.keys()
            if missing:
                raise DataError(
                    f"{_where(record)}: template {templates[i].name} needs "
                    f"{', '.join(repr(m) for m in sorted(missing))}, which record {record.uid!r} of task "
                    f"{record.task!r} does not have (it has {', '.join(sorted(vals))})"
                )
        return vals

    def render(self, record: Record, index: int) -> tuple[str, str]:
        """Render ``record`` with template ``index`` of its task; returns ``(input, target)``.

        Raises:
            DataError: as :meth:`check`.
        """
        vals = self.check(record, [index])
        return self.for_task(record.task)[index].render(vals)
