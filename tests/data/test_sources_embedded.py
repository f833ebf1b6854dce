"""Embedded tasks: labels re-computed independently, determinism, disjoint splits, balance."""
from __future__ import annotations

from collections import Counter

import pytest

from coin_lightning.data.records import DataError
from coin_lightning.data.sources.embedded import EMBEDDED_TASKS, load_embedded


def _prime(n: int) -> bool:  # independent of the generator's trial division
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def expected_answer(task: str, f: dict) -> str:
    """The answer word/text, re-derived from the fields without the generator's code."""
    if task == "embedded_arith_truth":
        left, right = f["equation"].split("=")
        return "true" if eval(left, {"__builtins__": {}}) == int(right) else "false"  # digits and +/- only
    if task == "embedded_parity":
        return "even" if int(f["number"]) % 2 == 0 else "odd"
    if task == "embedded_composite":
        return "no" if _prime(int(f["number"])) else "yes"
    if task == "embedded_anagram":
        same = Counter(f["word1"]) == Counter(f["word2"]) and f["word1"] != f["word2"]
        return "yes" if same else "no"
    if task == "embedded_number_compare":
        a, b = int(f["a"]), int(f["b"])
        return {True: "less", False: "equal" if a == b else "greater"}[a < b]
    if task == "embedded_sign":
        v = eval(f["expression"], {"__builtins__": {}})
        return "negative" if v < 0 else "zero" if v == 0 else "positive"
    if task == "embedded_sort_words":
        return " ".join(sorted(f["words"].split(" ")))
    if task == "embedded_count_words":
        return str(len(f["text"].split(" ")))
    if task == "embedded_max_number":
        return str(max(map(int, f["numbers"].split(","))))
    raise KeyError(task)


def test_there_are_enough_tasks_of_each_kind():
    kinds = Counter(t.kind for t in EMBEDDED_TASKS.values())
    assert len(EMBEDDED_TASKS) >= 8
    assert kinds["binary"] >= 1 and kinds["3-way"] >= 1 and kinds["generation"] >= 1
    for t in EMBEDDED_TASKS.values():
        assert (t.options is None) == (t.kind == "generation")
        assert t.options is None or len(t.options) == (3 if t.kind == "3-way" else 2)


@pytest.mark.parametrize("split", ["train", "test"])
def test_labels_match_independent_recomputation(split):
    records = load_embedded(n_per_task=150, seed=3, split=split)
    for r in records:
        spec = EMBEDDED_TASKS[r.task]
        got = spec.options[r.label] if spec.options else r.target
        assert got == expected_answer(r.task, r.fields), (r.uid, r.fields, got)
        assert len(got.split()) <= 3  # short answers


def test_classes_are_balanced_and_composites_are_odd():
    records = load_embedded(n_per_task=120, seed=0)
    for name, spec in EMBEDDED_TASKS.items():
        rs = [r for r in records if r.task == name]
        assert len(rs) == 120
        if spec.options:
            counts = Counter(r.label for r in rs)
            assert len(counts) == len(spec.options) and min(counts.values()) >= 0.8 * 120 / len(spec.options)
        else:
            assert len({r.target for r in rs}) > 3
    assert all(int(r.fields["number"]) % 2 == 1 for r in records if r.task == "embedded_composite")


def test_same_seed_same_records_and_splits_are_disjoint():
    a = load_embedded(n_per_task=80, seed=5)
    b = load_embedded(n_per_task=80, seed=5)
    c = load_embedded(n_per_task=80, seed=6)
    assert [(r.uid, r.fields, r.label, r.target) for r in a] == [(r.uid, r.fields, r.label, r.target) for r in b]
    assert [r.fields for r in a] != [r.fields for r in c]
    test = load_embedded(n_per_task=80, seed=5, split="test")
    key = lambda r: (r.task, tuple(sorted(r.fields.items())))  # noqa: E731
    assert not {key(r) for r in a} & {key(r) for r in test}
    assert len({key(r) for r in a}) == len(a)  # no duplicate input within a task


def test_evaluation_size_is_available_for_every_task():
    """The evaluation draws 300 test records per task (paper: 300 rows)."""
    records = load_embedded(n_per_task=300, seed=0, split="test")
    assert Counter(r.task for r in records) == {t: 300 for t in EMBEDDED_TASKS}


def test_errors():
    with pytest.raises(DataError, match="unknown embedded task"):
        load_embedded(["embedded_nope"], 3)
    with pytest.raises(DataError, match="unknown embedded split"):
        load_embedded(None, 3, split="dev")
    with pytest.raises(DataError, match="cannot draw"):
        load_embedded(["embedded_sign"], 20_000, split="test")
