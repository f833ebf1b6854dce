"""Splitting an instruction into words, and marking the words no perturbation may touch.

Every perturbation operator works on the word tokens this module yields and leaves everything else
(spaces, punctuation, protected spans) byte for byte as it was. Protected are:

- every occurrence of a ``protected`` phrase (the task's label words), matched case-insensitively
  as a whole token: ``entailment`` is protected on its own, and ``not_entailment`` is one token
  that is protected when it is itself a label word;
- every quoted span, ``'...'`` or ``"..."`` (answer options, as PromptBench's prompts quote them);
- every ``{...}`` placeholder, so a published instruction with a template field survives.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

WORD_RE = re.compile(r"\w+")
"""A word token: a maximal run of letters, digits and underscores (so ``not_entailment`` is one)."""

QUOTED_RE = re.compile(r"(?<!\w)'[^'\n]+?'(?!\w)|\"[^\"\n]+?\"|\{[^{}\n]*\}")
"""Quoted spans and placeholders. A single quote only opens or closes a span at a word boundary, so
the apostrophe in ``one's`` does not start one."""

STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "either", "else", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "neither", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "upon", "us", "very", "was", "we", "were", "what", "when", "where", "whether", "which", "while", "who", "whom", "why", "will", "with", "would", "yes", "yet", "you", "your", "one", "two", "first", "second"]
)
"""Function words that the perturbations leave alone when content words are available (our own list;
the attacked words of DeepWordBug/TextFooler are content words)."""


@dataclass(frozen=True)
class Token:
    """One word of an instruction, located by character offsets."""

    start: int
    """Offset of the first character in the instruction."""
    end: int
    """Offset one past the last character."""
    text: str
    """The word itself, ``instruction[start:end]``."""


def whole_word(phrase: str) -> re.Pattern:
    """``phrase`` as a whole token (not inside a longer ``\\w`` run), ignoring case."""
    return re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)", re.IGNORECASE)


def protected_spans(text: str, protected: Iterable[str] = ()) -> list[tuple[int, int]]:
    """Character ranges of ``text`` that no operator may change.

    Args:
        text: the instruction.
        protected: phrases (label words) protected wherever they occur as whole tokens, ignoring case.

    Returns:
        Sorted ``(start, end)`` offsets (end exclusive), possibly overlapping.
    """
    patterns = [QUOTED_RE, *(whole_word(phrase) for phrase in filter(None, (p.strip() for p in protected)))]
    return sorted(m.span() for pattern in patterns for m in pattern.finditer(text))


def editable_words(text: str, protected: Iterable[str] = ()) -> list[Token]:
    """The word tokens of ``text`` that lie outside every protected span, in order."""
    spans = protected_spans(text, protected)
    return [
        Token(m.start(), m.end(), m.group())
        for m in WORD_RE.finditer(text)
        if not any(s < m.end() and m.start() < e for s, e in spans)
    ]


def content_words(tokens: list[Token]) -> list[Token]:
    """Alphabetic tokens of at least 3 letters that are not :data:`STOPWORDS`."""
    return [t for t in tokens if t.text.isalpha() and len(t.text) >= 3 and t.text.lower() not in STOPWORDS]


def word_pool(text: str, protected: Iterable[str], eligible: Callable[[Token], bool] = lambda t: True) -> list[Token]:
    """The words an operator edits: the editable :func:`content_words` that ``eligible`` accepts, or, when there
    is none, every editable alphabetic word it accepts."""
    tokens = editable_words(text, protected)
    return [t for t in content_words(tokens) if eligible(t)] or [t for t in tokens if t.text.isalpha() and eligible(t)]


def replace_tokens(text: str, replacements: dict[Token, str]) -> str:
    """Return ``text`` with each token replaced by its new string; all other characters unchanged."""
    out, pos = [], 0
    for token in sorted(replacements, key=lambda t: t.start):
        out += [text[pos : token.start], replacements[token]]
        pos = token.end
    out.append(text[pos:])
    return "".join(out)


def match_case(template: str, word: str) -> str:
    """Give ``word`` the capitalisation of ``template`` (all upper, capitalised, or as is)."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def edit_words(
    text: str,
    rng,
    protected: Iterable[str],
    max_words: int,
    edit: Callable[[str, object], str | None],
    eligible: Callable[[Token], bool] = lambda t: True,
) -> str:
    """Edit up to ``max_words`` distinct words of ``text``, chosen at random among content words.

    The words are drawn (``rng.sample``) from :func:`word_pool`. A word whose
    ``edit`` returns ``None`` or the word itself is skipped and another one tried.

    Args:
        text: the instruction.
        rng: a ``random.Random``; the only source of randomness.
        protected: label words (see :func:`protected_spans`).
        max_words: at most this many words are changed (>= 0).
        edit: ``(word, rng) -> new word or None``.
        eligible: extra filter on candidate tokens (e.g. "has a synonym").

    Returns:
        The edited instruction (``text`` itself when nothing could be edited).
    """
    pool = word_pool(text, protected, eligible)
    replacements: dict[Token, str] = {}
    for token in rng.sample(pool, len(pool)):
        if len(replacements) >= max_words:
            break
        new = edit(token.text, rng)
        if new is not None and new != token.text:
            replacements[token] = new
    return replace_tokens(text, replacements)


def search_space(clean: str, start, steps: Callable, rng, cap: int) -> Callable[[str], list[str]]:
    """The adversarial search space of an operator: ``candidates(text) -> texts one edit further`` for
    ``clean`` and any text it returned before.

    Args:
        clean: the clean instruction.
        start: the edit state of ``clean`` (e.g. no edited word).
        steps: ``(text, state) -> [(text one edit further, its state), ...]`` (``[]`` at the edit limit).
        rng: ``random.Random``; fixes which candidates are offered.
        cap: candidates returned per step at most (without repeats; a ``rng.sample`` of ``cap`` when there are more).

    Raises:
        ValueError: (from ``candidates``) a text it did not produce.
    """
    states = {clean: start}

    def candidates(text: str) -> list[str]:
        if text not in states:
            raise ValueError(f"candidates() got an instruction it did not produce: {text!r}")
        pairs = list(steps(text, states[text]))
        for new, state in pairs:
            states.setdefault(new, state)
        unique = list(dict.fromkeys(new for new, _ in pairs))
        return unique if len(unique) <= cap else rng.sample(unique, cap)

    return candidates


def word_space(clean: str, protected: Iterable[str], variants: Callable[[str], list[str]], limit: int, rng,
               cap: int) -> Callable[[str], list[str]]:
    """The adversarial search space of a word-editing operator (TextAttack's constraints as PromptBench uses
    them): each word of ``clean`` edited at most once, protected words never, at most ``limit`` words in all.

    Args:
        clean: the clean instruction.
        protected: label words, never edited.
        variants: ``word -> its replacement candidates`` (computed once per word).
        limit: words changed at most.
        rng: ``random.Random``; fixes which candidates are offered.
        cap: candidates returned per step at most (a seeded sample).

    Returns:
        ``candidates(text)`` of :func:`search_space` (``[]`` once ``limit`` words are edited).
    """
    pool = word_pool(clean, protected)
    variants_of = functools.cache(lambda token: variants(token.text))  # once per token, when first needed

    def steps(text: str, edits: dict[Token, str]):
        if len(edits) >= limit:
            return
        for token in (t for t in pool if t not in edits):
            for v in variants_of(token):
                new_edits = {**edits, token: v}
                yield replace_tokens(clean, new_edits), new_edits

    return search_space(clean, {}, steps, rng, cap)
