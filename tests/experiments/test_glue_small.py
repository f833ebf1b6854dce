"""``experiments/glue_small/run.py``: the whole experiment end to end on the tiny random LLaMA."""
from __future__ import annotations

import csv
import json

import pytest

from experiments.glue_small.run import main


def test_end_to_end_on_tiny_llama(tmp_path, shared_data):
    """Train lambda=0 and lambda=1000, evaluate both (rank and generate), compare with intervals, analyze,
    collect. (The base model's evaluation is the same command without ``adapter=``; skipped for time.)"""
    results, work = tmp_path / "results", tmp_path / "work"
    argv = ["--model", "tiny_llama", "--lambdas", "0", "1000", "--steps", "2", "--tasks", "sst2", "rte", "--generate-tasks", "sst2", "--rows", "2", "--analyze-rows", "3",
            "--projection", "pca", "--bootstrap", "50", "--skip-base", "--data", str(shared_data), "--work", str(work),
            "--results", str(results), "data.cutoff_len=96"]
    assert main(argv) == 0
    names = ["continual", "coin_1000"]
    cmp = json.loads((results / "comparison.json").read_text())
    assert cmp["names"] == names
    assert cmp["fingerprint"]["rows_per_task"] == {"sst2": 2, "rte": 2}
    assert set(cmp["bootstrap"]) == {"coin_1000"}
    assert set(cmp["levels"]) == {"clean", "character", "word", "sentence", "semantic"}
    # the committed per-run tables are the evaluation's own numbers
    for n in names:
        with open(results / f"eval_{n}_per_task_level.csv") as fh:
            cells = {(r["task"], r["level"]): float(r["mean"]) for r in csv.DictReader(fh)}
        for row in cmp["per_task_level"]:
            assert cells[(row["task"], row["level"])] == pytest.approx(row[n])
    for n in ("continual", "coin_1000"):
        assert json.loads((results / f"analysis_{n}.json").read_text())["overall"] <= 1.0
        assert (results / f"representations_{n}.png").read_bytes().startswith(b"\x89PNG")
        assert json.loads((results / f"train_{n}.json").read_text())["global_step"] == 2
    meta = json.loads((results / "experiment.json").read_text())
    assert [s["stage"] for s in meta["stages"]] == [
        "train continual", "train coin_1000", "evaluate continual", "evaluate coin_1000", "compare",
        "evaluate continual (generate)", "evaluate coin_1000 (generate)", "compare (generate)",
        "analyze continual", "analyze coin_1000"]
    assert all(s["wall_s"] > 0 for s in meta["stages"])
    assert (results / "commands.sh").read_text().count("coin_lightning.") == 10
    gen = json.loads((results / "comparison_generate.json").read_text())
    assert gen["fingerprint"]["rows_per_task"] == {"sst2": 2} and gen["names"] == names
    assert json.loads((work / "eval_generate" / "continual" / "metrics.json").read_text())["run"]["method"] == "generate"
    # --resume runs nothing again, rewrites the same numbers and keeps the wall times measured before
    assert main(argv + ["--resume"]) == 0
    assert json.loads((results / "comparison.json").read_text())["per_level"] == cmp["per_level"]
    resumed = json.loads((results / "experiment.json").read_text())["stages"]
    assert all(s["skipped"] for s in resumed)
    assert [s["wall_s"] for s in resumed] == [s["wall_s"] for s in meta["stages"]]


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(SystemExit, match="must start with 0"):
        main(["--lambdas", "1000", "0", "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="templates.json not found|glue not found"):
        main(["--data", str(tmp_path), "--work", str(tmp_path)])
