"""Sentence-level perturbations: CheckList random suffixes and StressTest tautologies.

Both append text and change nothing already there, so label words and quoted options are kept.

- CheckList (Ribeiro et al. 2020, "Beyond accuracy"; PromptBench's ``checklist`` attack): append a
  random, meaningless alphanumeric string (``suffix_len`` characters, PromptBench uses 10).
- StressTest (Naik et al. 2018, "Stress test evaluation for natural language inference"; PromptBench's
  ``stresstest``): append a tautology such as "and true is true", which a robust reader ignores.
"""
from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterable
from functools import partial

from coin_lightning.eval.instructions.perturb.config import Perturbation, register
from coin_lightning.eval.instructions.perturb.text import search_space, whole_word

SUFFIX_ALPHABET = string.ascii_letters + string.digits
"""Characters of a CheckList suffix."""

TAUTOLOGIES = (
    "and true is true",
    "and false is not true",
    "and one equals one",
    "and a circle is round",
    "and every square has four sides",
)
"""StressTest distractors: clauses that are true whatever the input (the first is Naik et al.'s;
the others are our own in the same spirit). Those that contain a protected (label) word are not
used, so that ``and true is true`` never adds an answer word to a true/false task."""


def usable_tautologies(protected: Iterable[str] = ()) -> list[str]:
    """The :data:`TAUTOLOGIES` that contain none of the ``protected`` words (whole words, any case)."""
    words = [w.strip() for w in protected if w.strip()]
    return [t for t in TAUTOLOGIES if not any(whole_word(w).search(t) for w in words)]


def random_suffix(rng: random.Random, length: int = 10) -> str:
    """A random string of ``length`` letters and digits (``length`` >= 1)."""
    return "".join(rng.choice(SUFFIX_ALPHABET) for _ in range(length))


def append(text: str, suffix: str) -> str:
    """``text`` with ``suffix`` appended after one space (trailing white space of ``text`` kept out)."""
    return f"{text.rstrip()} {suffix}"


def checklist(
    text: str, rng: random.Random, protected: Iterable[str] = (), *, suffix_count: int = 1, suffix_len: int = 10
) -> str:
    """Append ``suffix_count`` random alphanumeric strings of ``suffix_len`` characters.

    Args:
        text: the instruction.
        rng: ``random.Random``; fixes the output.
        protected: unused (nothing existing is edited); accepted for a uniform operator signature.
        suffix_count: suffixes appended, each after a space.
        suffix_len: characters per suffix.

    Returns:
        ``text`` followed by the suffixes.
    """
    for _ in range(suffix_count):
        text = append(text, random_suffix(rng, suffix_len))
    return text


def stresstest(text: str, rng: random.Random, protected: Iterable[str] = (), *, suffix_count: int = 1) -> str:
    """Append ``suffix_count`` tautologies from :data:`TAUTOLOGIES`, drawn without replacement.

    Arguments as :func:`checklist`; tautologies containing a ``protected`` word are skipped, and more
    suffixes than there are usable tautologies reuse them in a new order.
    """
    pool = usable_tautologies(protected) or list(TAUTOLOGIES)
    chosen: list[str] = []
    while len(chosen) < suffix_count:
        chosen.extend(rng.sample(pool, len(pool)))
    for suffix in chosen[:suffix_count]:
        text = append(text, suffix)
    return text


def suffix_space(name: str, clean: str, rng: random.Random, protected: Iterable[str], cfg) -> Callable[[str], list[str]]:
    """The adversarial search space of ``checklist`` or ``stresstest`` (bound with ``functools.partial``, the
    ``(clean, rng, protected, cfg) -> candidates`` of its :class:`Perturbation`), appending one more suffix per
    step, up to ``cfg.sentence.suffix_count``."""
    cap, tautologies = cfg.adversarial.candidates_per_step, usable_tautologies(protected)

    def steps(text: str, used: tuple[str, ...]):
        if len(used) >= cfg.sentence.suffix_count:
            return []
        suffixes = ([random_suffix(rng, cfg.sentence.suffix_len) for _ in range(cap)] if name == "checklist"
                    else [t for t in tautologies if t not in used] or list(tautologies))
        return [(append(text, s), used + (s,)) for s in suffixes]

    return search_space(clean, (), steps, rng, cap)


register(Perturbation("checklist", "sentence", checklist, "sentence", ("suffix_count", "suffix_len"), partial(suffix_space, "checklist")))
register(Perturbation("stresstest", "sentence", stresstest, "sentence", ("suffix_count",), partial(suffix_space, "stresstest")))
