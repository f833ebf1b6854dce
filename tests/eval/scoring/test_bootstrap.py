"""``coin_lightning.eval.scoring.bootstrap``: paired bootstrap intervals of accuracy differences."""
from __future__ import annotations

import json
import math
import random

import pytest

from coin_lightning.compare import main
from coin_lightning.eval.reports.tables import write_results
from coin_lightning.eval.scoring.bootstrap import correctness, paired_bootstrap, read_predictions
from coin_lightning.eval.scoring.comparison import compare_runs
from coin_lightning.eval.scoring.metrics import RunDirError, fingerprint, summarize

LEVELS = {"clean": "clean", "deepwordbug": "character", "checklist": "sentence"}
CATEGORY = {"rte": "nli", "sst2": "sentiment"}


def rows_for(p_correct: dict, n_rows: int = 12, n_inst: int = 3, seed: int = 0) -> list[dict]:
    """Prediction rows for tasks rte/sst2 x perturbations; each correct with probability ``p_correct[p]``."""
    rng = random.Random(seed)
    return [{"task": t, "category": CATEGORY[t], "perturbation": p, "level": lv, "instruction_index": i,
             "uid": f"{t}/validation/{r}", "gold": 1, "pred": int(rng.random() < p_correct[p])}
            for t in CATEGORY for p, lv in LEVELS.items() for i in range(n_inst) for r in range(n_rows)]


def write_run(path, rows):
    uids = {t: sorted({r["uid"] for r in rows if r["task"] == t}) for t in CATEGORY}
    metrics = summarize(rows)
    metrics["fingerprint"] = fingerprint(uids, {"x": {}})
    metrics["run"] = {"model": "tiny:llama", "adapter": None}
    write_results(path, rows, metrics)
    return path


def test_point_estimates_equal_the_comparison_deltas(tmp_path):
    ref = write_run(tmp_path / "ref", rows_for({"clean": 0.6, "deepwordbug": 0.4, "checklist": 0.5}, seed=1))
    run = write_run(tmp_path / "run", rows_for({"clean": 0.7, "deepwordbug": 0.6, "checklist": 0.5}, seed=2))
    cmp = compare_runs([ref, run], ["ref", "run"], bootstrap=200)
    boot = cmp["bootstrap"]["run"]
    for lv in ("clean", "character", "sentence"):
        assert boot["per_level"][lv]["delta"] == pytest.approx(cmp["per_level"][lv]["run"]["delta"])
        assert boot["per_level"][lv]["low"] <= boot["per_level"][lv]["delta"] <= boot["per_level"][lv]["high"]
    assert boot["perturbed"]["delta"] == pytest.approx(cmp["per_level"]["perturbed"]["run"]["delta"])
    for cell in boot["per_task_level"]:
        row = next(r for r in cmp["per_task_level"] if r["task"] == cell["task"] and r["level"] == cell["level"])
        assert cell["delta"] == pytest.approx(row["run delta"])
    assert boot["per_category"]["nli"]["character"]["delta"] == pytest.approx(
        next(c["run delta"] for c in cmp["per_task_level"] if c["task"] == "rte" and c["level"] == "character"))


def test_identical_and_constant_differences_give_degenerate_intervals():
    ref = rows_for({"clean": 0.5, "deepwordbug": 0.5, "checklist": 0.5})
    same = paired_bootstrap(ref, ref, resamples=300)
    assert all(c == {"delta": 0.0, "low": 0.0, "high": 0.0} for c in same["per_level"].values())
    better = [dict(r, pred=1) for r in ref]      # every prediction right: the gain is the same under any draw
    wrong = [dict(r, pred=0) for r in ref]
    res = paired_bootstrap(better, wrong, resamples=300)
    assert [res["perturbed"][k] for k in ("delta", "low", "high")] == pytest.approx([1.0, 1.0, 1.0])


def test_row_bootstrap_matches_the_normal_approximation():
    """One cell, rows resampled: the percentile interval ~ mean +- 1.96 * sqrt(population var / n)."""
    n, rng = 600, random.Random(3)
    a = [int(rng.random() < 0.7) for _ in range(n)]
    b = [int(rng.random() < 0.5) for _ in range(n)]
    mk = lambda xs: [{"task": "rte", "category": "nli", "perturbation": "clean", "level": "clean",  # noqa: E731
                      "instruction_index": 0, "uid": f"u{i}", "gold": 1, "pred": x} for i, x in enumerate(xs)]
    res = paired_bootstrap(mk(a), mk(b), resamples=20000, seed=1, resample=("rows",))["per_level"]["clean"]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / n / n)
    assert res["delta"] == pytest.approx(mean)
    assert res["low"] == pytest.approx(mean - 1.96 * se, abs=0.15 * se)
    assert res["high"] == pytest.approx(mean + 1.96 * se, abs=0.15 * se)


def test_resampling_instructions_widens_the_interval():
    """Instructions that disagree add variance only when instructions are resampled too."""
    ref = rows_for({"clean": 0.5, "deepwordbug": 0.5, "checklist": 0.5}, n_rows=40, n_inst=4, seed=5)
    run = [dict(r, pred=int(r["instruction_index"] % 2 == 0)) for r in ref]  # half the instructions all right
    rows_only = paired_bootstrap(run, ref, resamples=2000, resample=("rows",))["per_level"]["clean"]
    both = paired_bootstrap(run, ref, resamples=2000)["per_level"]["clean"]
    assert both["delta"] == pytest.approx(rows_only["delta"])
    assert both["high"] - both["low"] > 1.5 * (rows_only["high"] - rows_only["low"])


def test_a_perturbed_instruction_is_drawn_with_its_clean_instruction():
    """Instruction 0 is right everywhere in the run and wrong everywhere in the reference, at every
    level: the drop of each side moves with the draw of base instruction 0, but the difference of drops
    is 0 under every draw, because each replicate weighs instruction 0's clean and perturbed variants
    alike. Drawn per (task, level) instead, the interval of the robustness effect would be wide."""
    ref = rows_for({"clean": 0.5, "deepwordbug": 0.5, "checklist": 0.5}, n_rows=30, n_inst=4, seed=7)
    run = [dict(r, pred=1) if r["instruction_index"] == 0 else r for r in ref]
    ref = [dict(r, pred=0) if r["instruction_index"] == 0 else r for r in ref]
    res = paired_bootstrap(run, ref, resamples=500, resample=("instructions",))
    for effect in res["robustness_effect"].values():
        assert [effect["delta"], effect["low"], effect["high"]] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    clean = res["per_level"]["clean"]     # each level's own difference still varies with the draw
    assert clean["delta"] == pytest.approx(0.25) and clean["high"] - clean["low"] > 0.2
    # a perturbation that covers only some clean instructions draws its own: intervals stay defined
    partial = [r for r in ref if r["perturbation"] == "clean" or r["instruction_index"] < 2]
    part_run = [r for r in run if r["perturbation"] == "clean" or r["instruction_index"] < 2]
    res = paired_bootstrap(part_run, partial, resamples=200, resample=("instructions",))
    char = res["per_level"]["character"]   # its 2 instructions differ by 1 and 0: a draw gives 0, 0.5 or 1
    assert [char["delta"], char["low"], char["high"]] == pytest.approx([0.5, 0.0, 1.0])


def test_bad_input(tmp_path):
    ref = rows_for({"clean": 0.5, "deepwordbug": 0.5, "checklist": 0.5})
    other = [dict(r, uid=r["uid"] + "x") for r in ref]
    with pytest.raises(ValueError, match="different rows or instructions"):
        paired_bootstrap(other, ref)
    with pytest.raises(ValueError, match="different \\(task, level\\) cells"):
        paired_bootstrap([r for r in ref if r["level"] != "sentence"], ref)
    with pytest.raises(ValueError, match="not every row was scored"):
        correctness(ref[1:])
    with pytest.raises(ValueError, match="bad bootstrap arguments"):
        paired_bootstrap(ref, ref, resample=("tasks",))
    with pytest.raises(RunDirError, match="predictions.jsonl not found"):
        read_predictions(tmp_path)
    (tmp_path / "predictions.jsonl").write_text('{"task": "rte"}\n{oops\n')
    with pytest.raises(RunDirError, match="predictions.jsonl:2: malformed JSONL row"):
        read_predictions(tmp_path)


def test_cli_writes_intervals(tmp_path):
    ref = write_run(tmp_path / "ref", rows_for({"clean": 0.6, "deepwordbug": 0.4, "checklist": 0.5}, seed=1))
    run = write_run(tmp_path / "run", rows_for({"clean": 0.7, "deepwordbug": 0.6, "checklist": 0.5}, seed=2))
    out = tmp_path / "cmp"
    assert main([str(ref), str(run), "--names", "continual", "coin", "--bootstrap", "100", "--out", str(out)]) == 0
    text = (out / "comparison.md").read_text()
    assert "Paired bootstrap" in text and "vs `continual`" in text and "By task category." in text
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["bootstrap"]["coin"]["resamples"] == 100
    assert set(saved["per_category"]) == {"nli", "sentiment"}
