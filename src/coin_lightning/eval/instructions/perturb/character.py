"""Character-level perturbations: DeepWordBug and TextBugger edit operations (PromptBench's character level).

- DeepWordBug (Gao et al. 2018, "Black-box generation of adversarial text sequences to evade deep
  learning classifiers"; TextAttack's ``WordSwapNeighboringCharacterSwap``, ``...RandomCharacterSubstitution``,
  ``...RandomCharacterDeletion``, ``...RandomCharacterInsertion``): swap two neighbouring letters,
  substitute a letter, delete a letter, insert a letter, anywhere in the word.
- TextBugger (Li et al. 2019, "TextBugger: generating adversarial text against real-world
  applications", the character "bugs"): insert a space inside the word, delete an inner letter, swap
  two inner neighbouring letters, replace a letter by a visually similar symbol. Inner means the first
  and last letters stay, as in the paper. (Its word-level "Sub-W" bug belongs to the word level here.)

Each single operation is a function ``(word, rng) -> new word | None`` (``None``: not applicable to
this word, e.g. too short); the sentence operators :func:`deepwordbug` and :func:`textbugger` apply
``edits_per_word`` of them to each of ``max_words`` random content words, never to a protected word.
"""
from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterable
from functools import partial

from coin_lightning.eval.instructions.perturb.config import Perturbation, register
from coin_lightning.eval.instructions.perturb.text import edit_words, word_space

CharOp = Callable[[str, random.Random], "str | None"]

VISUAL_LOOKALIKES: dict[str, str] = {
    "a": "@4", "b": "6", "e": "3", "g": "9", "i": "1!", "l": "1|", "o": "0", "s": "$5", "t": "7", "z": "2",
}
"""Letters and the symbols that look like them (our own table after TextBugger's "Sub-C" idea)."""


def _letters(word: str, inner: bool) -> list[int]:
    """Positions of letters in ``word``; with ``inner``, not the first or the last character."""
    lo, hi = (1, len(word) - 1) if inner else (0, len(word))
    return [i for i in range(lo, hi) if word[i].isalpha()]


def _random_letter(rng: random.Random, like: str, avoid: str = "") -> str:
    """A random ASCII letter other than ``avoid`` (case-insensitive), upper case when ``like`` is."""
    c = rng.choice([c for c in string.ascii_lowercase if c != avoid.lower()])
    return c.upper() if like.isupper() else c


def _at(rng: random.Random, positions: list[int], edit: Callable[[int], str]) -> str | None:
    """``edit(i)`` at a random one of ``positions`` (``rng.choice``), or ``None`` when there is none."""
    return edit(rng.choice(positions)) if positions else None


def swap_neighbours(word: str, rng: random.Random, inner: bool = False) -> str | None:
    """Swap two different neighbouring letters (DeepWordBug "swap"; TextBugger "swap" with ``inner``)."""
    pos = set(_letters(word, inner))
    pairs = [i for i in sorted(pos) if i + 1 in pos and word[i].lower() != word[i + 1].lower()]
    return _at(rng, pairs, lambda i: word[:i] + word[i + 1] + word[i] + word[i + 2 :])


def substitute_letter(word: str, rng: random.Random) -> str | None:
    """Replace one letter by a different random letter (DeepWordBug "substitution")."""
    pos = _letters(word, inner=False)
    return _at(rng, pos, lambda i: word[:i] + _random_letter(rng, word[i], avoid=word[i]) + word[i + 1 :])


def delete_letter(word: str, rng: random.Random, inner: bool = False) -> str | None:
    """Delete one letter (DeepWordBug "deletion"; TextBugger "delete" with ``inner``); needs 2+ letters left."""
    if len(word) < 3:
        return None
    return _at(rng, _letters(word, inner), lambda i: word[:i] + word[i + 1 :])


def insert_letter(word: str, rng: random.Random) -> str | None:
    """Insert a random letter at a random position, ends included (DeepWordBug "insertion")."""
    if not word:
        return None
    i = rng.randrange(len(word) + 1)
    return word[:i] + _random_letter(rng, word[min(i, len(word) - 1)]) + word[i:]


def insert_space(word: str, rng: random.Random) -> str | None:
    """Split the word with a space between two of its letters (TextBugger "insert")."""
    cuts = [i for i in range(1, len(word)) if word[i - 1].isalpha() and word[i].isalpha()]
    return _at(rng, cuts, lambda i: word[:i] + " " + word[i:])


def visual_substitute(word: str, rng: random.Random) -> str | None:
    """Replace one letter by a look-alike symbol from :data:`VISUAL_LOOKALIKES` (TextBugger "Sub-C")."""
    pos = [i for i in range(len(word)) if word[i].lower() in VISUAL_LOOKALIKES]
    return _at(rng, pos, lambda i: word[:i] + rng.choice(VISUAL_LOOKALIKES[word[i].lower()]) + word[i + 1 :])


def delete_inner(word: str, rng: random.Random) -> str | None:
    """:func:`delete_letter` that keeps the first and last characters (TextBugger)."""
    return delete_letter(word, rng, inner=True)


def swap_inner(word: str, rng: random.Random) -> str | None:
    """:func:`swap_neighbours` that keeps the first and last characters (TextBugger)."""
    return swap_neighbours(word, rng, inner=True)


DEEPWORDBUG_OPS: tuple[CharOp, ...] = (swap_neighbours, substitute_letter, delete_letter, insert_letter)
"""DeepWordBug's four operations."""

TEXTBUGGER_OPS: tuple[CharOp, ...] = (insert_space, delete_inner, swap_inner, visual_substitute)
"""TextBugger's four character bugs."""


def edit_word(word: str, rng: random.Random, ops: tuple[CharOp, ...], edits: int = 1) -> str | None:
    """Apply ``edits`` operations, each drawn at random among those of ``ops`` that apply.

    Returns:
        The edited word, or ``None`` when no operation applies to it.
    """
    out = word
    for _ in range(edits):
        for op in rng.sample(ops, len(ops)):
            new = op(out, rng)
            if new is not None and new != out:
                out = new
                break
        else:
            break
    return None if out == word else out


def deepwordbug(
    text: str, rng: random.Random, protected: Iterable[str] = (), *, max_words: int = 2, edits_per_word: int = 1
) -> str:
    """DeepWordBug-style character edits on up to ``max_words`` random content words.

    Args:
        text: the instruction.
        rng: ``random.Random``; fixes the output.
        protected: label words, never edited (quoted spans are protected too; see ``perturb.text``).
        max_words: words edited per instruction.
        edits_per_word: operations (:data:`DEEPWORDBUG_OPS`) applied to each edited word.

    Returns:
        The perturbed instruction (unchanged only when it has no editable word).
    """
    return edit_words(text, rng, protected, max_words, lambda w, r: edit_word(w, r, DEEPWORDBUG_OPS, edits_per_word))


def textbugger(
    text: str, rng: random.Random, protected: Iterable[str] = (), *, max_words: int = 2, edits_per_word: int = 1
) -> str:
    """TextBugger-style character bugs (:data:`TEXTBUGGER_OPS`) on up to ``max_words`` random content words.

    Arguments and result as :func:`deepwordbug`.
    """
    return edit_words(text, rng, protected, max_words, lambda w, r: edit_word(w, r, TEXTBUGGER_OPS, edits_per_word))


def character_space(ops: tuple[CharOp, ...], clean: str, rng: random.Random, protected: Iterable[str],
                    cfg) -> Callable[[str], list[str]]:
    """The adversarial search space of an operator built from ``ops`` (bound with ``functools.partial``, it is
    the ``(clean, rng, protected, cfg) -> candidates`` of its :class:`Perturbation`), offering
    ``cfg.character.variants_per_word`` random edits of each word (see
    :func:`coin_lightning.eval.instructions.perturb.text.word_space`)."""
    k, edits = cfg.character.variants_per_word, cfg.character.edits_per_word

    def variants(word: str) -> list[str]:
        out: list[str] = []
        for _ in range(4 * k):
            new = edit_word(word, rng, ops, edits)
            if new is not None and new not in out:
                out.append(new)
            if len(out) == k:
                break
        return out

    return word_space(clean, protected, variants, cfg.character.max_words, rng, cfg.adversarial.candidates_per_step)


KNOBS = ("max_words", "edits_per_word")
register(Perturbation("deepwordbug", "character", deepwordbug, "character", KNOBS, partial(character_space, DEEPWORDBUG_OPS)))
register(Perturbation("textbugger", "character", textbugger, "character", KNOBS, partial(character_space, TEXTBUGGER_OPS)))
