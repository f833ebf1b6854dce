"""Greedy adversarial search and its cached instruction sets (coin_lightning.eval.instructions.adversarial)."""
from __future__ import annotations

import json
import re

import pytest

from coin_lightning.eval.instructions.adversarial import attack_instruction, attack_instruction_set, greedy_attack
from coin_lightning.eval.instructions.sets import InstructionSet, load_instruction_file

WEIGHTS = {"a": 0.30, "b": 0.05, "c": 0.20, "d": 0.10}


def toy_candidates(text: str) -> list[str]:
    """Upper-case one more lower-case letter of ``text`` (a toy edit space)."""
    return [text[:i] + ch.upper() + text[i + 1 :] for i, ch in enumerate(text) if ch.islower()]


def toy_accuracy(text: str) -> float:
    """1 minus the weights of the upper-cased letters (so the best edits are known in advance)."""
    return round(1.0 - sum(WEIGHTS[c.lower()] for c in text if c.isupper()), 10)


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, text):
        self.calls.append(text)
        return self.fn(text)


def test_greedy_takes_the_largest_drop_at_each_step():
    acc = Counter(toy_accuracy)
    result = greedy_attack("abcd", toy_candidates, acc, query_budget=100)
    # independent expectation: every edit lowers accuracy, so greedy upper-cases all letters
    assert result.instruction == "ABCD" and result.accuracy == pytest.approx(1 - sum(WEIGHTS.values()))
    assert result.clean_accuracy == 1.0 and result.steps == 4
    assert result.queries == len(set(acc.calls)) == len(acc.calls)  # each string scored once
    # after step 1 the current text must be the single best one-edit candidate
    assert "Abcd" in acc.calls


def test_query_budget_is_respected():
    for budget in (2, 3, 5, 8):
        acc = Counter(toy_accuracy)
        result = greedy_attack("abcd", toy_candidates, acc, query_budget=budget)
        assert len(acc.calls) <= budget and result.queries <= budget
        assert result.accuracy <= result.clean_accuracy
    with pytest.raises(ValueError, match="query_budget"):
        greedy_attack("abcd", toy_candidates, toy_accuracy, query_budget=1)


def test_stops_when_no_candidate_lowers_accuracy():
    flat = Counter(lambda text: 0.5)
    result = greedy_attack("abcd", toy_candidates, flat, query_budget=100)
    assert result.steps == 1 and result.instruction != "abcd"  # always_edit: one perturbed step
    assert result.queries == 1 + 4 + 3  # clean, step 1 (forced), step 2 (no gain: stop)
    zero = greedy_attack("abcd", toy_candidates, lambda t: 0.0, query_budget=100)
    assert zero.steps == 1 and zero.queries == 2  # nothing to lower: one edit, then stop
    kept = greedy_attack("abcd", toy_candidates, lambda t: 0.5, query_budget=100, always_edit=False)
    assert kept.instruction == "abcd" and kept.steps == 0


def test_attack_instruction_keeps_label_words_and_is_deterministic():
    clean = "Decide whether the second sentence below follows from the first: entailment or 'not_entailment'."

    def accuracy(text: str) -> float:  # lower when more of the clean words are broken
        kept = sum(w in text.split() for w in clean.split())
        return kept / len(clean.split())

    runs = [attack_instruction(clean, "deepwordbug", accuracy, 30, task="rte", index=2) for _ in range(2)]
    assert runs[0] == runs[1]
    result = runs[0]
    assert result.accuracy < result.clean_accuracy and result.queries <= 30
    assert re.findall(r"(?<!\w)(?:not_)?entailment(?!\w)", result.instruction) == ["entailment", "not_entailment"]


def test_attack_instruction_set_writes_and_reuses_its_cache(tmp_path):
    base = InstructionSet.from_dict({
        "clean": {"rte": ["Is the first sentence enough to prove the second one? Reply entailment or not_entailment.",
                          "Label the pair below entailment or not_entailment."]},
        "semantic": {"rte": ["Say entailment or not_entailment for the sentences that follow.",
                             "Tag the sentence pair entailment or not_entailment."]},
    })
    calls = []

    def accuracy(task: str, text: str) -> float:
        calls.append((task, text))
        return sum(map(ord, text)) % 97 / 97  # arbitrary but deterministic

    cfg = {"perturbations": ["deepwordbug", "checklist"], "adversarial": {"candidates_per_step": 4}}
    path = tmp_path / "adv.yaml"
    out = attack_instruction_set(base, accuracy, cfg, query_budget=6, cache_path=path, fingerprint={"model": "toy"})
    assert out.perturbations == ["clean", "deepwordbug", "checklist", "semantic"]
    assert out.instructions_for("rte", "semantic") == base.instructions_for("rte", "semantic")
    for pert in ("deepwordbug", "checklist"):
        assert len(out.instructions_for("rte", pert)) == 2
        assert all(p != c for p, c in zip(out.instructions_for("rte", pert), out.instructions_for("rte")))
    assert load_instruction_file(path).to_dict() == out.to_dict()
    meta = json.loads(path.with_name("adv.yaml.meta.json").read_text())
    assert len(meta["attacks"]) == 4 and all(a["queries"] <= 6 for a in meta["attacks"])
    assert all(task == "rte" for task, _ in calls)

    n = len(calls)
    again = attack_instruction_set(base, accuracy, cfg, query_budget=6, cache_path=path, fingerprint={"model": "toy"})
    assert again.to_dict() == out.to_dict() and len(calls) == n  # reused, no query
    attack_instruction_set(base, accuracy, cfg, query_budget=6, cache_path=path, fingerprint={"model": "other"})
    assert len(calls) > n  # another model: searched again


def test_evaluation_names_are_kept_for_mnli_rows():
    base = InstructionSet.from_dict({"clean": {"mnli": ["Pick entailment, neutral or contradiction for the pair below."]}})
    out = attack_instruction_set(base, lambda task, text: 0.5, {"perturbations": ["stresstest"]}, query_budget=3,
                                 tasks=["mnli_matched"])
    assert out.tasks() == ["mnli_matched"]
    assert out.instructions_for("mnli_matched", "stresstest")[0].startswith(base.instructions_for("mnli")[0] + " ")
