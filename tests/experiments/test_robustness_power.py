"""The robustness study's power analysis and task floor, against hand computations."""
from __future__ import annotations

import gzip
import json
import math

import pytest

from experiments.robustness_study.power import (
    VarianceComponents,
    clean_accuracy,
    half_width,
    majority_rate,
    paired_differences,
    plan,
    screen,
    size_from_pilot,
    task_floor,
    variance_components,
)


def _rows(correct: dict) -> list[dict]:
    """Prediction rows from ``{(task, uid, perturbation, index): correct}`` (gold 1)."""
    level = {"clean": "clean", "deepwordbug": "character", "checklist": "sentence"}
    return [{"task": t, "uid": u, "perturbation": p, "level": level[p], "instruction_index": i, "gold": 1,
             "pred": int(c)} for (t, u, p, i), c in correct.items()]


def test_paired_differences_and_components_by_hand():
    # one task, 3 rows, 2 perturbed instructions (+ a clean one that must be ignored), 2 seeds
    keys = [("sst2", f"r{j}", p, 0) for j in range(3) for p in ("deepwordbug", "checklist")]
    ref = [_rows({**{k: False for k in keys}, ("sst2", "r0", "clean", 0): True})] * 2
    # seed 1: row r0 right under both, r1 under deepwordbug only; seed 2: r2 under both
    t1 = {k: (k[1] == "r0") or (k[1] == "r1" and k[2] == "deepwordbug") for k in keys}
    t2 = {k: k[1] == "r2" for k in keys}
    per_seed, per_inst = paired_differences([_rows(t1), _rows(t2)], ref)
    assert per_seed == [{("sst2", "r0"): 1.0, ("sst2", "r1"): 0.5, ("sst2", "r2"): 0.0},
                        {("sst2", "r0"): 0.0, ("sst2", "r1"): 0.0, ("sst2", "r2"): 1.0}]
    # deepwordbug: seed 1 2/3, seed 2 1/3 -> 1/2; checklist: 1/3 and 1/3 -> 1/3
    assert per_inst == pytest.approx({("sst2", "deepwordbug", 0): 0.5, ("sst2", "checklist", 0): 1 / 3})
    vc = variance_components(per_seed, per_inst)
    # within-seed row variances (ddof 1): seed 1 of (1, .5, 0) = .25, seed 2 of (0, 0, 1) = 1/3
    row = (0.25 + 1 / 3) / 2
    # seed means .5 and 1/3: variance (ddof 1) = (1/6)^2 / 2; less row / 3 rows -> floored at 0
    assert vc.row == pytest.approx(row)
    assert vc.seed == 0.0 and (1 / 6) ** 2 / 2 - row / 3 < 0
    assert vc.instruction == pytest.approx((0.5 - 1 / 3) ** 2 / 2)
    assert (vc.n_seeds, vc.n_rows, vc.n_instructions) == (2, 3, 2)


def test_half_width_and_plan_by_hand():
    vc = VarianceComponents(seed=0.0004, row=0.09, instruction=0.0008, n_seeds=2, n_rows=80, n_instructions=40)
    z = 1.959963984540054
    # S=3, N=600 rows: var = .0004/3 + .09/1800 + .0008/40
    assert half_width(vc, 3, 600, 40) == pytest.approx(z * math.sqrt(0.0004 / 3 + 0.09 / 1800 + 0.0008 / 40))
    # target 1.5 points: (0.015/z)^2 = 5.857e-5. S=3: room = 5.857e-5 - 1.333e-4 - 2e-5 < 0;
    # ... S=9: room = 5.857e-5 - 4.444e-5 - 2e-5 < 0; S=10: 5.857e-5 - 4e-5 - 2e-5 < 0 -> infeasible
    assert not plan(vc, 0.015, tasks=4, max_seeds=10)["feasible"]
    # S=11: room = (0.015/z)^2 - .0004/11 - .0008/40 = 2.2e-6 -> N >= .09 / (11 room) = 3709: 928 rows per
    # task of 4 > 400; S=12: room = 5.24e-6 -> N >= 1432 -> 358 rows per task, within 400
    room = (0.015 / z) ** 2 - 0.0004 / 12 - 0.0008 / 40
    got = plan(vc, 0.015, tasks=4, min_seeds=3, max_seeds=20, max_rows_per_task=400)
    assert got["feasible"] and got["seeds"] == 12
    assert got["rows_per_task"] == math.ceil(0.09 / (12 * room) / 4) == 358
    assert got["half_width"] <= 0.015
    assert half_width(vc, 12, 4 * 357, 40) > 0.015  # one row per task fewer misses it
    # with at most 300 rows per task it takes 13 seeds
    assert plan(vc, 0.015, tasks=4, max_seeds=20, max_rows_per_task=300)["seeds"] == 13


def test_task_floor_and_majority():
    rows = [{"task": "cola", "uid": f"c{i}", "gold": int(i < 7)} for i in range(10)]
    rows += [{"task": "sst2", "uid": f"s{i}", "gold": i % 2} for i in range(10)] * 2  # repeated rows count once
    maj = majority_rate(rows)
    assert maj == {"cola": 0.7, "sst2": 0.5}
    res = task_floor({"cola": {"continual": 0.72, "coin": 0.8}, "sst2": {"continual": 0.9, "coin": 0.85}}, maj, 0.05)
    assert res["kept"] == ["sst2"] and res["floor"] == 0.85
    assert "72.0% (continual)" in res["dropped"]["cola"] and "70.0%" in res["dropped"]["cola"]


def test_size_from_pilot_keeps_learned_tasks():
    # cola: every clean answer right in both arms (majority 50%); sst2: the reference arm at 25% (majority 50%)
    def run(sst2_right: int) -> list[dict]:
        rows = []
        for task, right in (("cola", 4), ("sst2", sst2_right)):
            for j in range(4):
                rows.append({"task": task, "uid": f"{task}{j}", "level": "clean", "perturbation": "clean",
                             "instruction_index": 0, "gold": j % 2, "pred": j % 2 if j < right else 1 - j % 2})
                rows.append({"task": task, "uid": f"{task}{j}", "level": "character", "perturbation": "deepwordbug",
                             "instruction_index": 0, "gold": j % 2, "pred": (j + j // 2) % 2})
        return rows
    assert clean_accuracy(run(1)) == {"cola": 1.0, "sst2": 0.25}
    out = size_from_pilot({"continual": [run(1), run(1)], "coin": [run(4), run(3)]}, 0.05, half_width_points=50,
                          confidence=0.95, min_seeds=2, max_seeds=3, max_rows_per_task=4)
    assert out["tasks"]["kept"] == ["cola"] and set(out["tasks"]["dropped"]) == {"sst2"}
    assert set(out["plans"]) == {"coin - continual"} and out["chosen"]["seeds"] == 2
    # the perturbed rows are the same in both arms: no difference, the smallest sizes reach any target
    assert out["chosen"]["feasible"] and out["plans"]["coin - continual"]["half_width"] == pytest.approx(0, abs=1e-12)
    # no task beats its majority rate by 100 points: nothing to size
    assert set(size_from_pilot({"continual": [run(4)], "coin": [run(4)]}, 1.0, 1.5, 0.95, 3, 8, 10)) == {"tasks"}


def test_screen_reads_committed_jobs(tmp_path):
    # two seeds; sst2: 4 rows (3 gold 1, 1 gold 0), cola: 4 rows all gold 1
    def job(name, sst2_pred, cola_pred):
        rows = [{"task": "sst2", "uid": f"s{j}", "level": "clean", "gold": int(j < 3), "pred": p}
                for j, p in enumerate(sst2_pred)]
        rows += [{"task": "cola", "uid": f"c{j}", "level": "clean", "gold": 1, "pred": p} for j, p in enumerate(cola_pred)]
        rows.append({"task": "sst2", "uid": "s0", "level": "character", "gold": 1, "pred": 0})  # not clean: ignored
        d = tmp_path / name
        d.mkdir()
        with gzip.open(d / "predictions.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        return d

    a = job("seed1", [1, 1, 1, 0], [1, 0, 0, 0])  # sst2 4/4, cola 1/4
    b = job("seed2", [1, 1, 0, 0], [1, 1, 0, 0])  # sst2 3/4, cola 2/4
    got = screen([a, b], 0.05)
    assert got["clean"] == {"sst2": {"screen": pytest.approx(0.875)}, "cola": {"screen": pytest.approx(0.375)}}
    assert got["majority"] == {"sst2": 0.75, "cola": 1.0}
    assert got["kept"] == ["sst2"] and list(got["dropped"]) == ["cola"]
    assert "37.5%" in got["dropped"]["cola"] and "100.0%" in got["dropped"]["cola"]
    with pytest.raises(FileNotFoundError, match=r"No such file or directory: .*missing/predictions\.jsonl\.gz"):
        screen([tmp_path / "missing"], 0.05)
