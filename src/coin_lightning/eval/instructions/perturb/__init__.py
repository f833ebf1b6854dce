"""Perturbation operators for instructions, at PromptBench's character, word and sentence levels.

Every operator is a pure function ``(text, rng, protected, **strength) -> str``: ``rng`` (a
``random.Random``) is its only source of randomness, and the words in ``protected`` (the task's label
words) as well as quoted spans and ``{...}`` placeholders are never changed (see :mod:`.text`). Each
operator module registers its operators (:func:`.levels.register`), in the order imported here:

- character: :func:`.character.deepwordbug`, :func:`.character.textbugger`
- word: :func:`.word.textfooler`, :func:`.word.bertattack` (WordNet, from PyPI)
- sentence: :func:`.sentence.checklist`, :func:`.sentence.stresstest`

The adversarial mode searches each operator's space (:func:`neighbour_fn`), following TextAttack's
constraints as PromptBench uses them: each word of the clean instruction is edited at most once
(``RepeatModification``), protected words never, and at most ``max_words`` words (or ``suffix_count``
suffixes) are changed in total.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from coin_lightning.eval.instructions.perturb import character, sentence, word  # noqa: F401  (they register)
from coin_lightning.eval.instructions.perturb.config import (
    PERTURBATIONS,
    Perturbation,
    PerturbConfig,
    generated,
    level_of,
    lookup,
    register,
)


def apply(name: str, text: str, rng: random.Random, protected: Iterable[str], cfg: PerturbConfig | None = None) -> str:
    """Perturb ``text`` with operator ``name`` at the strength configured in ``cfg``.

    Raises:
        ValueError: ``name`` has no operator.
        WordNetMissing: a word-level operator without the WordNet database.
    """
    return lookup(name).operator(text, rng, tuple(protected), **PerturbConfig.from_cfg(cfg).strength(name))


def neighbour_fn(
    name: str, clean: str, rng: random.Random, protected: Iterable[str], cfg: PerturbConfig | None = None
) -> Callable[[str], list[str]]:
    """Build ``candidates(text) -> list[str]`` for greedy search from ``clean`` with operator ``name``
    (the ``candidates`` of :func:`coin_lightning.eval.instructions.adversarial.greedy_attack`).

    ``candidates`` accepts ``clean`` and any string it has returned before, and returns the variants
    with one more edit (one more word changed, or one more suffix appended), at most
    ``cfg.adversarial.candidates_per_step`` of them (a seeded sample), or ``[]`` when the edit limit
    is reached.

    Args:
        name: a registered perturbation (:func:`generated`).
        clean: the clean instruction.
        rng: ``random.Random``; fixes which variants are offered.
        protected: label words, never edited.
        cfg: strengths (``max_words``, ``edits_per_word``, ``candidates``, ``suffix_count``, ...).

    Raises:
        ValueError: unknown ``name``; ``candidates`` called with a string it did not produce.
    """
    return lookup(name).neighbours(clean, rng, tuple(protected), PerturbConfig.from_cfg(cfg))


def instruction_rng(seed: int, perturbation: str, task: str, index: int) -> random.Random:
    """The generator for one (perturbation, task, instruction) triple.

    Seeded from a string, so the result does not depend on which other tasks or perturbations are
    generated, nor on ``PYTHONHASHSEED``.
    """
    return random.Random(f"{seed}|{perturbation}|{task}|{index}")


__all__ = ["PERTURBATIONS", "Perturbation", "PerturbConfig", "apply", "generated", "instruction_rng", "level_of", "lookup",
           "neighbour_fn", "register"]
