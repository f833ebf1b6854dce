"""Perturbation operators for instructions, at PromptBench's character, word and sentence levels.

Every operator is a pure function ``(text, rng, protected, **strength) -> str``: ``rng`` (a
``random.Random``) is its only source of randomness, and the words in ``protected`` (the task's label
words) as well as quoted spans and ``{...}`` placeholders are never changed (see :mod:`.text`).

- character: :func:`.character.deepwordbug`, :func:`.character.textbugger`
- word: :func:`.word.textfooler`, :func:`.word.bertattack` (WordNet, Debian ``wordnet-base``)
- sentence: :func:`.sentence.checklist`, :func:`.sentence.stresstest`
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from coin_lightning.eval.instructions.perturb.character import deepwordbug, textbugger
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.perturb.levels import GENERATED, LEVEL_OF, LEVELS
from coin_lightning.eval.instructions.perturb.sentence import checklist, stresstest
from coin_lightning.eval.instructions.perturb.word import WordNetMissing, bertattack, textfooler

Operator = Callable[..., str]

OPERATORS: dict[str, Operator] = {
    "deepwordbug": deepwordbug,
    "textbugger": textbugger,
    "textfooler": textfooler,
    "bertattack": bertattack,
    "checklist": checklist,
    "stresstest": stresstest,
}
"""Perturbation name -> operator; its strength keywords come from :meth:`PerturbConfig.strength`."""


def apply(name: str, text: str, rng: random.Random, protected: Iterable[str], cfg: PerturbConfig | None = None) -> str:
    """Perturb ``text`` with operator ``name`` at the strength configured in ``cfg``.

    Raises:
        ValueError: ``name`` has no operator.
        WordNetMissing: a word-level operator without the WordNet database.
    """
    if name not in OPERATORS:
        raise ValueError(f"no operator for perturbation {name!r}; operators: {', '.join(OPERATORS)}")
    cfg = PerturbConfig.from_cfg(cfg)
    return OPERATORS[name](text, rng, tuple(protected), **cfg.strength(name))


def instruction_rng(seed: int, perturbation: str, task: str, index: int) -> random.Random:
    """The generator for one (perturbation, task, instruction) triple.

    Seeded from a string, so the result does not depend on which other tasks or perturbations are
    generated, nor on ``PYTHONHASHSEED``.
    """
    return random.Random(f"{seed}|{perturbation}|{task}|{index}")


__all__ = [
    "GENERATED", "LEVELS", "LEVEL_OF", "OPERATORS", "Operator", "PerturbConfig", "WordNetMissing", "apply",
    "instruction_rng", "deepwordbug", "textbugger", "textfooler", "bertattack", "checklist", "stresstest",
]
