"""Sentence-level operators: CheckList and StressTest (coin_lightning.eval.instructions.perturb.sentence)."""
from __future__ import annotations

import random

from coin_lightning.eval.instructions.perturb.sentence import TAUTOLOGIES, checklist, stresstest

TEXT = "Classify the claim below as 'true' or 'false'."


def test_checklist_appends_random_alphanumeric_suffixes():
    for count, length in [(1, 10), (3, 5)]:
        out = checklist(TEXT, random.Random(0), ("true", "false"), suffix_count=count, suffix_len=length)
        assert out.startswith(TEXT + " ")
        suffixes = out[len(TEXT) + 1 :].split(" ")
        assert len(suffixes) == count
        assert all(len(s) == length and s.isalnum() and s.isascii() for s in suffixes)


def test_checklist_seed_fixes_the_output():
    outs = [checklist(TEXT, random.Random(s)) for s in range(5)]
    assert outs == [checklist(TEXT, random.Random(s)) for s in range(5)]
    assert len(set(outs)) == 5


def test_stresstest_appends_tautologies_without_label_words():
    for seed in range(20):
        out = stresstest(TEXT, random.Random(seed), ("true", "false"), suffix_count=2)
        tail = out[len(TEXT) + 1 :]
        used = [t for t in TAUTOLOGIES if t in tail]
        assert len(used) == 2 and tail == f"{used[0]} {used[1]}" or tail == f"{used[1]} {used[0]}"
        assert " true " not in f" {tail} " and " false " not in f" {tail} "
    plain = stresstest("Judge the pair below.", random.Random(1), (), suffix_count=1)
    assert plain[len("Judge the pair below. "):] in TAUTOLOGIES


def test_stresstest_seed_fixes_the_output():
    outs = [stresstest(TEXT, random.Random(s), ()) for s in range(10)]
    assert outs == [stresstest(TEXT, random.Random(s), ()) for s in range(10)]
    assert len(set(outs)) > 1
