"""Reading a class label from a generated answer, with PromptBench's rules.

PromptBench (Zhu et al. 2023) and the CoIN evaluation (luka-group/CoIN, ``promptbench/inference.py``,
``_process_cls_pred``) lower-case the generated text, drop ``<pad>`` / ``</s>``, strip punctuation and
white space from both ends, and take the label word the answer *starts with*; any other answer counts
as wrong. The strip set below is theirs.
"""
from __future__ import annotations

from collections.abc import Sequence

STRIP_CHARS = ",._\"'-+=!?()&^%$#@:\\|{}[]<>/`\n\t\r\v\f\u200b "
"""Characters removed from both ends of an answer (PromptBench's set, plus the zero-width space)."""

DROPPED_TOKENS = ("<pad>", "</s>")
"""Special-token strings deleted from the answer before stripping (PromptBench's)."""

UNPARSEABLE = -1
"""Prediction id of an answer that starts with no label word."""


def normalize_answer(text: str) -> str:
    """Lower-case ``text``, delete :data:`DROPPED_TOKENS` and strip :data:`STRIP_CHARS` from both ends."""
    text = text.lower()
    for token in DROPPED_TOKENS:
        text = text.replace(token, "")
    return text.strip(STRIP_CHARS)


def parse_label(answer: str, label_words: Sequence[str]) -> int:
    """Map a generated answer to the index of the label word it starts with.

    Label words are tried longest first, so the result never depends on their order (PromptBench
    tries them in list order; with its label sets no word is a prefix of another, so both agree).
    ``"not_entailment"`` therefore maps to ``not_entailment`` and ``"unacceptable."`` to
    ``unacceptable``, while ``"it is entailment"`` is unparseable.

    Args:
        answer: the decoded generation (new tokens only).
        label_words: the task's label words by label id, e.g. ``("entailment", "not_entailment")``.

    Returns:
        The label id, or :data:`UNPARSEABLE` (``-1``).
    """
    text = normalize_answer(answer)
    order = sorted(range(len(label_words)), key=lambda i: -len(label_words[i]))
    for i in order:
        word = label_words[i].lower()
        if word and text.startswith(word):
            return i
    return UNPARSEABLE


def answer_decided(text: str, label_words: Sequence[str]) -> bool:
    """Whether no continuation of a generated answer can change what :func:`parse_label` reads from it.

    The parse takes the longest label word the normalised answer starts with. Appending text changes
    neither the lower-casing nor the left strip of a non-empty answer, so once the stripped answer
    ``u`` is no prefix of any label word longer than itself, the words it can start with are settled:
    ``parse_label(text + more) == parse_label(text)`` for every ``more``. To stay exact, an answer
    holding ``<`` (the start of a dropped ``<pad>`` / ``</s>``) or ending in a half-decoded character
    (U+FFFD), and label words ending in a strip character, are never called decided.

    Args:
        text: the decoded answer so far (new tokens only).
        label_words: the task's label words.

    Returns:
        True when generation can stop without changing the parsed label.
    """
    lowered = text.lower()
    words = [w.lower() for w in label_words if w]
    if "<" in lowered or lowered.endswith("\ufffd") or any(w[-1] in STRIP_CHARS for w in words):
        return False
    u = lowered.lstrip(STRIP_CHARS)
    return bool(u) and not any(len(w) > len(u) and w.startswith(u) for w in words)
