"""Metrics against a hand computation on a small fixed prediction table."""
from __future__ import annotations

import pytest

from coin_lightning.eval.scoring.metrics import fingerprint, pdr, per_instruction, summarize

LEVEL = {"clean": "clean", "deepwordbug": "character", "textfooler": "word"}
CATEGORY = {"A": "nli", "B": "sentiment"}
# (task, perturbation, instruction index, correct of 4, unparseable of the wrong ones)
TABLE = [
    ("A", "clean", 0, 4, 0),        # 1.00
    ("A", "clean", 1, 2, 2),        # 0.50, both wrong answers unparseable
    ("A", "deepwordbug", 0, 3, 0),  # 0.75 -> PDR 1 - 0.75/1.00 = 0.25
    ("A", "deepwordbug", 1, 1, 0),  # 0.25 -> PDR 1 - 0.25/0.50 = 0.50
    ("A", "textfooler", 0, 4, 0),   # 1.00 -> PDR 0
    ("A", "textfooler", 1, 3, 0),   # 0.75 -> PDR 1 - 0.75/0.50 = -0.50 (accuracy rose)
    ("B", "clean", 0, 0, 0),        # 0.00
    ("B", "clean", 1, 2, 0),        # 0.50
    ("B", "deepwordbug", 0, 1, 0),  # 0.25 -> PDR undefined (clean accuracy 0)
    ("B", "deepwordbug", 1, 1, 0),  # 0.25 -> PDR 0.50
]


def rows():
    out = []
    for task, pert, idx, correct, unparseable in TABLE:
        for i in range(4):
            pred = 1 if i < correct else (-1 if i < correct + unparseable else 0)
            out.append({"task": task, "category": CATEGORY[task], "perturbation": pert, "level": LEVEL[pert],
                        "instruction_index": idx, "instruction": f"{pert} {idx}", "uid": f"{task}/{i}",
                        "gold": 1, "pred": pred})
    return out


def test_pdr_sign_and_value():
    assert pdr(0.6, 0.8) == pytest.approx(0.25)      # a drop is positive
    assert pdr(0.9, 0.6) == pytest.approx(-0.5)      # a gain is negative
    assert pdr(0.8, 0.8) == 0.0
    assert pdr(0.3, 0.0) is None


def test_per_instruction_accuracy_and_paired_pdr():
    table = {(g["task"], g["perturbation"], g["instruction_index"]): g for g in per_instruction(rows())}
    assert table[("A", "clean", 1)]["accuracy"] == 0.5
    assert table[("A", "clean", 1)]["unparseable"] == 0.5
    assert table[("A", "clean", 0)]["pdr"] is None
    assert table[("A", "deepwordbug", 0)]["pdr"] == pytest.approx(0.25)
    assert table[("A", "deepwordbug", 1)]["pdr"] == pytest.approx(0.5)
    assert table[("A", "textfooler", 1)]["pdr"] == pytest.approx(-0.5)
    assert table[("B", "deepwordbug", 0)]["pdr"] is None
    assert table[("B", "deepwordbug", 1)]["pdr"] == pytest.approx(0.5)


def test_summary_matches_hand_computation():
    m = summarize(rows(), ["clean", "character", "word", "sentence", "semantic"])
    assert m["levels"] == ["clean", "character", "word"]  # levels without predictions are left out
    assert m["tasks"] == ["A", "B"]
    cell = {(c["task"], c["level"]): c for c in m["per_task_level"]}
    # mean and population std across the instructions of a (task, level)
    assert cell[("A", "clean")]["mean"] == pytest.approx(0.75) and cell[("A", "clean")]["std"] == pytest.approx(0.25)
    assert cell[("A", "character")]["mean"] == pytest.approx(0.5) and cell[("A", "character")]["std"] == pytest.approx(0.25)
    assert cell[("A", "word")]["mean"] == pytest.approx(0.875) and cell[("A", "word")]["std"] == pytest.approx(0.125)
    assert cell[("B", "clean")]["mean"] == pytest.approx(0.25)
    assert cell[("B", "character")]["std"] == pytest.approx(0.0)
    assert cell[("A", "character")]["pdr"] == pytest.approx((0.25 + 0.5) / 2)
    assert cell[("A", "word")]["pdr"] == pytest.approx((0.0 - 0.5) / 2)
    assert cell[("B", "character")]["pdr"] == pytest.approx(0.5)      # the undefined one is left out
    assert cell[("A", "clean")]["pdr"] is None
    assert cell[("A", "clean")]["unparseable"] == pytest.approx((0 + 0.5) / 2)
    # per level: mean over tasks
    lv = m["per_level"]
    assert lv["clean"]["mean"] == pytest.approx((0.75 + 0.25) / 2)
    assert lv["character"]["mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert lv["character"]["std"] == pytest.approx((0.25 + 0.0) / 2)
    assert lv["character"]["pdr"] == pytest.approx((0.375 + 0.5) / 2)
    assert lv["word"]["mean"] == pytest.approx(0.875) and lv["word"]["n_tasks"] == 1
    # per category
    assert m["per_category"]["nli"]["word"]["mean"] == pytest.approx(0.875)
    assert m["per_category"]["sentiment"]["character"]["mean"] == pytest.approx(0.25)
    assert "word" not in m["per_category"]["sentiment"]
    # overall
    o = m["overall"]
    assert o["clean"] == pytest.approx(0.5)
    assert o["perturbed"] == pytest.approx((0.5 + 0.875 + 0.25) / 3)
    assert o["all"] == pytest.approx((0.75 + 0.5 + 0.875 + 0.25 + 0.25) / 5)
    assert o["pdr"] == pytest.approx((0.375 - 0.25 + 0.5) / 3)
    assert o["unparseable"] == pytest.approx(2 / 40) and o["n_examples"] == 40


def test_pdr_uses_clean_mean_when_instruction_counts_differ():
    r = [x for x in rows() if not (x["perturbation"] == "deepwordbug" and x["instruction_index"] == 0)]
    table = {(g["task"], g["perturbation"], g["instruction_index"]): g for g in per_instruction(r)}
    # deepwordbug now has 1 instruction against 2 clean ones: the denominator is the clean mean
    assert table[("A", "deepwordbug", 1)]["pdr"] == pytest.approx(1 - 0.25 / 0.75)
    assert table[("B", "deepwordbug", 1)]["pdr"] == pytest.approx(1 - 0.25 / 0.25)


def test_summarize_rejects_empty_and_incomplete_rows():
    with pytest.raises(ValueError, match="no predictions"):
        summarize([])
    bad = rows()[:1]
    del bad[0]["gold"]
    with pytest.raises(ValueError, match="gold"):
        summarize(bad)


def test_fingerprint_changes_with_rows_or_instructions_only():
    uids = {"rte": ["rte/validation/1", "rte/validation/2"]}
    inst = {"clean": {"rte": ["a", "b"]}}
    f = fingerprint(uids, inst)
    assert f == fingerprint({"rte": list(uids["rte"])}, {"clean": {"rte": ["a", "b"]}})
    assert f["rows"] != fingerprint({"rte": ["rte/validation/1", "rte/validation/3"]}, inst)["rows"]
    assert f["instructions"] != fingerprint(uids, {"clean": {"rte": ["a", "c"]}})["instructions"]
    assert f["rows_per_task"] == {"rte": 2}
