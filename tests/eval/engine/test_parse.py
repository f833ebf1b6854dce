"""The label parser against PromptBench's rules (lower-case, strip punctuation, label word at the start)."""
from __future__ import annotations

import pytest

from coin_lightning.data.sources.glue import LABEL_WORDS
from coin_lightning.eval.engine.generation import UNPARSEABLE, normalize_answer, parse_label

RTE = LABEL_WORDS["rte"]  # entailment=0, not_entailment=1
WNLI = LABEL_WORDS["wnli"]  # not_entailment=0, entailment=1 (ids reversed)
COLA = LABEL_WORDS["cola"]  # unacceptable=0, acceptable=1
MNLI = LABEL_WORDS["mnli"]


@pytest.mark.parametrize("answer, words, expected", [
    ("entailment", RTE, 0),
    ("not_entailment", RTE, 1),
    (" Not_Entailment.", RTE, 1),
    ("'not_entailment'</s>", RTE, 1),
    ("entailment, because the premise says so", RTE, 0),
    ("not_entailment", WNLI, 0),
    ("Entailment", WNLI, 1),
    ("unacceptable", COLA, 0),
    ("acceptable", COLA, 1),
    ("Unacceptable!", COLA, 0),
    ("\n\"acceptable\"", COLA, 1),
    ("<pad>neutral", MNLI, 1),
    ("contradiction\n### Response", MNLI, 2),
    ("entailmentness", RTE, 0),  # PromptBench's startswith has no word boundary
])
def test_label_word_at_the_start(answer, words, expected):
    assert parse_label(answer, words) == expected


@pytest.mark.parametrize("answer, words", [
    ("not entailment", RTE),       # a space is not the label word's underscore
    ("it is entailment", RTE),     # the label word must come first
    ("the sentence is acceptable", COLA),
    ("", MNLI),
    ("...", MNLI),
    ("yes", RTE),
])
def test_anything_else_is_unparseable(answer, words):
    assert parse_label(answer, words) == UNPARSEABLE


def test_order_of_label_words_does_not_matter():
    # a word that is a prefix of another ("acceptable" / "acceptable_ish") is decided by the longer one
    words = ("acceptable", "acceptable_ish")
    assert parse_label("acceptable_ish.", words) == 1
    assert parse_label("acceptable_ish.", words[::-1]) == 0
    assert parse_label("acceptable.", words) == 0


def test_normalize_strips_promptbench_characters_only_at_the_ends():
    assert normalize_answer("  -'Not_Entailment'.\n") == "not_entailment"
    assert normalize_answer("a, b") == "a, b"
