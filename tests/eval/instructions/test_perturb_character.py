"""Character-level operators: DeepWordBug and TextBugger (coin_lightning.eval.instructions.perturb.character)."""
from __future__ import annotations

import random
import re

import pytest

from coin_lightning.eval.instructions.perturb.character import (
    VISUAL_LOOKALIKES,
    deepwordbug,
    delete_inner,
    delete_letter,
    edit_word,
    insert_letter,
    insert_space,
    substitute_letter,
    swap_inner,
    swap_neighbours,
    textbugger,
    visual_substitute,
)

WORDS = ["sentence", "Grammar", "decide", "classify", "review", "abc", "tool", "HYPOTHESIS"]
SEEDS = range(40)
LABELS = ("entailment", "not_entailment")
INSTRUCTION = (
    "Read the two sentences below. If the first one makes the second one true, reply entailment; "
    "otherwise reply 'not_entailment'. Entailment means the premise guarantees the hypothesis."
)


def diff_positions(a: str, b: str) -> list[int]:
    assert len(a) == len(b)
    return [i for i in range(len(a)) if a[i] != b[i]]


def protected_occurrences(text: str) -> list[str]:
    """Label words (whole tokens, any case) and quoted spans, in order; written independently of the module."""
    return re.findall(r"'[^']*'|(?<![\w])(?:not_entailment|entailment)(?![\w])", text, flags=re.IGNORECASE)


@pytest.mark.parametrize("word", WORDS)
def test_swap_neighbours_swaps_two_adjacent_letters(word):
    for seed in SEEDS:
        out = swap_neighbours(word, random.Random(seed))
        pos = diff_positions(word, out)
        assert len(pos) == 2 and pos[1] == pos[0] + 1
        assert out[pos[0]] == word[pos[1]] and out[pos[1]] == word[pos[0]]


@pytest.mark.parametrize("word", WORDS)
def test_swap_inner_keeps_first_and_last(word):
    for seed in SEEDS:
        out = swap_inner(word, random.Random(seed))
        inner = word[1:-1]
        if not any(inner[i].lower() != inner[i + 1].lower() for i in range(len(inner) - 1)):
            assert out is None  # "abc", "tool": no two different inner neighbours
            continue
        assert out[0] == word[0] and out[-1] == word[-1] and sorted(out) == sorted(word) and out != word


@pytest.mark.parametrize("word", WORDS)
def test_substitute_letter_changes_one_letter(word):
    for seed in SEEDS:
        out = substitute_letter(word, random.Random(seed))
        (i,) = diff_positions(word, out)
        assert out[i].isalpha() and out[i].lower() != word[i].lower()


@pytest.mark.parametrize("word", WORDS)
def test_delete_letter_removes_one_character(word):
    for seed in SEEDS:
        out = delete_letter(word, random.Random(seed))
        assert len(out) == len(word) - 1
        assert any(word[:i] + word[i + 1 :] == out for i in range(len(word)))
        inner = delete_inner(word, random.Random(seed))
        assert any(word[:i] + word[i + 1 :] == inner for i in range(1, len(word) - 1))
    assert delete_letter("ab", random.Random(0)) is None


@pytest.mark.parametrize("word", WORDS)
def test_insert_letter_adds_one_letter(word):
    for seed in SEEDS:
        out = insert_letter(word, random.Random(seed))
        assert len(out) == len(word) + 1
        assert any(out[:i] + out[i + 1 :] == word and out[i].isalpha() for i in range(len(out)))


@pytest.mark.parametrize("word", WORDS)
def test_insert_space_splits_the_word_inside(word):
    for seed in SEEDS:
        out = insert_space(word, random.Random(seed))
        assert out.count(" ") == 1 and out.replace(" ", "") == word
        assert not out.startswith(" ") and not out.endswith(" ")


@pytest.mark.parametrize("word", WORDS)
def test_visual_substitute_uses_a_lookalike(word):
    for seed in SEEDS:
        out = visual_substitute(word, random.Random(seed))
        (i,) = diff_positions(word, out)
        assert out[i] in VISUAL_LOOKALIKES[word[i].lower()]


def test_ops_return_none_when_not_applicable():
    rng = random.Random(0)
    assert visual_substitute("xyw", rng) is None
    assert insert_space("a", rng) is None
    assert swap_neighbours("aaa", rng) is None  # only identical neighbours: a swap would change nothing


def test_edit_word_applies_edits_per_word_operations():
    for edits in (1, 2, 5):
        out = edit_word("sentence", random.Random(edits), (insert_letter,), edits)
        assert len(out) == len("sentence") + edits


@pytest.mark.parametrize("operator", [deepwordbug, textbugger])
def test_operators_never_touch_label_words_or_quotes(operator):
    for seed in SEEDS:
        out = operator(INSTRUCTION, random.Random(seed), LABELS, max_words=100, edits_per_word=3)
        assert out != INSTRUCTION
        assert protected_occurrences(out) == protected_occurrences(INSTRUCTION)


def test_deepwordbug_edits_max_words_words():
    for k in (1, 2, 4):
        for seed in range(10):
            out = deepwordbug(INSTRUCTION, random.Random(seed), LABELS, max_words=k)
            before, after = re.findall(r"\S+", INSTRUCTION), re.findall(r"\S+", out)
            assert len(before) == len(after)  # deepwordbug keeps words whole
            assert sum(a != b for a, b in zip(before, after)) == k


@pytest.mark.parametrize("operator", [deepwordbug, textbugger])
def test_seed_fixes_the_output(operator):
    outs = [operator(INSTRUCTION, random.Random(s), LABELS) for s in range(8)]
    assert outs == [operator(INSTRUCTION, random.Random(s), LABELS) for s in range(8)]
    assert len(set(outs)) > 1
