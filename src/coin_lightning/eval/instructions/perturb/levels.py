"""The perturbation names and the level each belongs to (PromptBench's taxonomy, CoIN Table 1).

The one place for this fact: instruction files, generated sets, metrics and reports all read
:data:`LEVEL_OF` (or a configured replacement, ``eval.perturb.levels``).
"""
from __future__ import annotations

LEVELS: tuple[str, ...] = ("clean", "character", "word", "sentence", "semantic")
"""Perturbation levels, from none to meaning-preserving rewrites."""

LEVEL_OF: dict[str, str] = {
    "clean": "clean",
    "deepwordbug": "character",
    "textbugger": "character",
    "textfooler": "word",
    "bertattack": "word",
    "checklist": "sentence",
    "stresstest": "sentence",
    "semantic": "semantic",
}
"""Default perturbation name -> level (Zhu et al. 2023, PromptBench; the CoIN paper's Section 4)."""

GENERATED: tuple[str, ...] = ("deepwordbug", "textbugger", "textfooler", "bertattack", "checklist", "stresstest")
"""Perturbations produced by operators from the clean instructions (``semantic`` is written by hand)."""


def check_level_map(level_map: dict[str, str], where: str = "eval.perturb.levels") -> dict[str, str]:
    """Validate a perturbation -> level mapping and return it as a plain dict.

    Raises:
        ValueError: a value is not one of :data:`LEVELS` (message names ``where`` and the key).
    """
    out = {}
    for name, level in dict(level_map).items():
        if level not in LEVELS:
            raise ValueError(f"{where}.{name}: unknown level {level!r}; levels are {', '.join(LEVELS)}")
        out[str(name)] = str(level)
    return out
