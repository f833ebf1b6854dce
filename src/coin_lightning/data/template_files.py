"""Template banks from files: FLAN's ``PATTERNS`` as JSON and this project's own YAML templates.

:func:`load_flan_templates` reads FLAN's ``PATTERNS`` (google-research/FLAN ``flan/templates.py``)
stored as JSON, ``{task: [{"input": ..., "target": ...}]}``; :func:`load_own_templates` reads this
project's YAML files in ``coin_lightning/resources/templates``; :func:`load_template_bank` picks one
from the ``data.templates`` config value. Each returns a :class:`~coin_lightning.data.templates.TemplateBank`.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import yaml

from coin_lightning.data.records import DataError
from coin_lightning.data.sources import SOURCES
from coin_lightning.data.sources.glue import FLAN_FIELD_MAP, FLAN_OPTIONS, FLAN_TASK_KEYS
from coin_lightning.data.templates import Template, TemplateBank

log = logging.getLogger(__name__)


def _dedupe(task: str, entries: Iterable[tuple[str, str]], prefix: str) -> tuple[Template, ...]:
    out: list[Template] = []
    seen: set[tuple[str, str]] = set()
    for i, (inp, tgt) in enumerate(entries):
        if (inp, tgt) in seen:
            log.info("template bank %s: task %s template %d repeats an earlier one; dropped", prefix, task, i)
            continue
        seen.add((inp, tgt))
        tpl = Template(input=inp, target=tgt, name=f"{prefix}:{task}/{i}")
        try:
            _ = tpl.placeholders
        except ValueError as exc:
            raise DataError(f"template bank {prefix}: task {task!r} template {i}: {exc}") from None
        out.append(tpl)
    return tuple(out)


def _read_mapping(path: Path, parse, error: type[Exception], kind: str, what: str) -> dict:
    """The ``{task: [templates]}`` mapping of a template file; ``DataError`` naming the file when it is
    missing, does not parse as ``kind`` or holds no mapping (``what``)."""
    if not path.is_file():
        raise DataError(f"{path}: no such template file")
    try:
        raw = parse(path.read_text(encoding="utf-8"))
    except error as exc:
        raise DataError(f"{path}: not valid {kind} ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected {what} {{task: [templates]}}")
    return raw


def load_flan_templates(path: str | Path) -> TemplateBank:
    """Load FLAN's ``PATTERNS`` stored as JSON: ``{task: [{"input": ..., "target": ...}, ...]}``.

    The GLUE tasks are wired to it as FLAN does (``coin_lightning.data.sources.glue``: FLAN task keys,
    FLAN's rte field names, FLAN's answer options by label id), so GLUE records render with FLAN
    templates directly. Exact duplicate templates (FLAN's cola has one) are dropped.

    Args:
        path: the JSON file, e.g. ``../shared/data/flan/templates.json``.

    Raises:
        DataError: missing file, invalid JSON, or an entry without ``input``/``target`` strings.
    """
    path = Path(path)
    templates = {}
    for task, entries in _read_mapping(path, json.loads, ValueError, "JSON", "a JSON object").items():
        pairs = []
        for i, e in enumerate(entries):
            if isinstance(e, (list, tuple)) and len(e) == 2:
                e = {"input": e[0], "target": e[1]}
            if not isinstance(e, dict) or not isinstance(e.get("input"), str) or not isinstance(e.get("target"), str):
                raise DataError(f"{path}: task {task!r} template {i}: expected {{'input': str, 'target': str}}")
            pairs.append((e["input"], e["target"]))
        templates[task] = _dedupe(task, pairs, "flan")
    aliases = {g: k for g, k in FLAN_TASK_KEYS.items() if g != k}
    field_maps = {FLAN_TASK_KEYS[g]: dict(m) for g, m in FLAN_FIELD_MAP.items()}
    options = {**{FLAN_TASK_KEYS[g]: o for g, o in FLAN_OPTIONS.items()}, **FLAN_OPTIONS}
    return TemplateBank(templates, options=options, aliases=aliases, field_maps=field_maps, name=str(path))


OWN_TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "resources" / "templates"
"""Where the project's own template files live (shipped as package data)."""


def load_own_templates(paths: Iterable[str | Path] | None = None) -> TemplateBank:
    """Load the project's own templates (YAML) with the answer options they need.

    File layout: ``{task: [template, ...]}`` where a template is either a string (the input; the
    target is ``"{answer}"``) or ``{input: ..., target: ...}``. Options: the ``label_words`` of the
    registered sources (:data:`~coin_lightning.data.sources.SOURCES`): GLUE tasks the PromptBench label
    words (``coin_lightning.data.sources.glue.LABEL_WORDS``), embedded tasks their own.

    Args:
        paths: YAML files; default the ``*.yaml`` files of :data:`OWN_TEMPLATE_DIR`, sorted by name.

    Raises:
        DataError: a missing or malformed file, a task defined twice, or a bad template entry.
    """
    shipped = paths is None
    paths = [Path(p) for p in (sorted(OWN_TEMPLATE_DIR.glob("*.yaml")) if shipped else paths)]
    if not paths:
        raise DataError(f"no template files in {OWN_TEMPLATE_DIR}")
    templates: dict[str, tuple[Template, ...]] = {}
    for path in paths:
        for task, entries in _read_mapping(path, yaml.safe_load, yaml.YAMLError, "YAML", "a mapping").items():
            if task in templates:
                raise DataError(f"{path}: task {task!r} is already defined in another template file")
            if not isinstance(entries, list) or not entries:
                raise DataError(f"{path}: task {task!r}: expected a non-empty list of templates")
            pairs = []
            for i, e in enumerate(entries):
                if isinstance(e, str):
                    e = {"input": e}
                if not isinstance(e, dict) or not isinstance(e.get("input"), str):
                    raise DataError(f"{path}: task {task!r} template {i}: expected a string or {{input, target}}")
                pairs.append((e["input"].strip("\n"), str(e.get("target", "{answer}"))))
            templates[task] = _dedupe(task, pairs, "own")
    options = {t: tuple(w) for source in SOURCES.values() for t, w in source.label_words.items()}
    return TemplateBank(templates, options=options, name="own" if shipped else ", ".join(str(p) for p in paths))


def load_template_bank(spec: str | Path) -> TemplateBank:
    """The bank named by the ``data.templates`` config value.

    Args:
        spec: ``"own"`` (the shipped YAML), a path to a FLAN-layout JSON file, or a path to a YAML
            file (or directory of YAML files) in the own layout.

    Raises:
        DataError: as the loaders.
    """
    if str(spec) == "own":
        return load_own_templates()
    path = Path(spec)
    if path.is_dir():
        return load_own_templates(sorted(path.glob("*.yaml")))
    if path.suffix in (".yaml", ".yml"):
        return load_own_templates([path])
    return load_flan_templates(path)
