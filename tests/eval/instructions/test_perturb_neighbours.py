"""The adversarial search space (coin_lightning.eval.instructions.perturb.neighbour_fn)."""
from __future__ import annotations

import random
import re

import pytest

from coin_lightning.eval.instructions.perturb import neighbour_fn
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from tests.helpers import wordnet_missing

LABELS = ("acceptable", "unacceptable")
CLEAN = "Decide if the sentence below is well formed English. Output only 'acceptable' or 'unacceptable'."


def words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def protected(text: str) -> list[str]:
    return re.findall(r"'[^']*'|(?<!\w)(?:acceptable|unacceptable)(?!\w)", text)


@pytest.mark.parametrize("name", ["deepwordbug", "textfooler"])
def test_each_step_edits_one_more_word_up_to_max_words(name):
    if name == "textfooler" and wordnet_missing():
        pytest.skip(wordnet_missing())
    cfg = PerturbConfig.from_cfg({"character": {"max_words": 2}, "word": {"max_words": 2},
                                  "adversarial": {"candidates_per_step": 1000}})
    cands = neighbour_fn(name, CLEAN, random.Random(0), LABELS, cfg)
    level1 = cands(CLEAN)
    assert level1 and len(set(level1)) == len(level1)
    for text in level1:
        assert sum(a != b for a, b in zip(words(CLEAN), words(text))) == 1
        assert protected(text) == protected(CLEAN)
    level2 = cands(level1[0])
    assert level2
    for text in level2:
        changed = [i for i, (a, b) in enumerate(zip(words(CLEAN), words(text))) if a != b]
        assert len(changed) == 2  # the first edit is kept and a different word is edited
    assert cands(level2[0]) == []  # max_words reached


def test_candidates_per_step_caps_and_seed_fixes_the_sample():
    cfg = PerturbConfig.from_cfg({"adversarial": {"candidates_per_step": 5}})
    a = neighbour_fn("deepwordbug", CLEAN, random.Random(3), LABELS, cfg)(CLEAN)
    b = neighbour_fn("deepwordbug", CLEAN, random.Random(3), LABELS, cfg)(CLEAN)
    assert len(a) == 5 and a == b


@pytest.mark.parametrize("name", ["checklist", "stresstest"])
def test_suffix_space_appends_one_suffix_per_step(name):
    cfg = PerturbConfig.from_cfg({"sentence": {"suffix_count": 2}})
    cands = neighbour_fn(name, CLEAN, random.Random(0), LABELS, cfg)
    first = cands(CLEAN)
    assert first and all(t.startswith(CLEAN + " ") for t in first)
    second = cands(first[0])
    assert second and all(t.startswith(first[0] + " ") for t in second)
    assert cands(second[0]) == []


def test_unknown_text_or_perturbation_is_an_error():
    cands = neighbour_fn("deepwordbug", CLEAN, random.Random(0), LABELS)
    with pytest.raises(ValueError, match="did not produce"):
        cands("something else")
    with pytest.raises(ValueError, match="semantic"):
        neighbour_fn("semantic", CLEAN, random.Random(0), LABELS)
