"""``experiments/robustness_study/instruction_regime.py`` (the two-task regime over sst2 sentences) and the
drop and pilot figures of ``instruction_summary.py``, on small hand-written data (no model)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from coin_lightning.compare import main as compare_main
from coin_lightning.eval.scoring.metrics import summarize
from experiments.robustness_study import instruction_summary
from experiments.robustness_study.instruction_regime import (
    ANSWER_WORDS,
    EVAL_INSTRUCTIONS,
    TASKS,
    TRAIN_TEMPLATES,
    write_regime,
)
from experiments.robustness_study.instruction_study import settings
from experiments.robustness_study.instruction_summary import drop_intervals, pilot_record, seed_cells

SENTENCES = [("a warm , funny film", 1), ("a dull mess", 0), ("moving and wise", 1), ("tedious from start to end", 0),
             ("a small gem", 1), ("flat and lifeless", 0)]


def _glue(root: Path) -> Path:
    (root / "sst2").mkdir(parents=True)
    for split in ("train", "validation"):
        with (root / "sst2" / f"{split}.jsonl").open("w") as fh:
            for i, (s, lab) in enumerate(SENTENCES):
                fh.write(json.dumps({"sentence": s, "label": lab, "idx": i}) + "\n")
    return root


def test_regime_rows_are_coin_triples_told_apart_by_the_instruction(tmp_path):
    out = write_regime(_glue(tmp_path / "glue"), tmp_path / "regime", groups=40, seed=3)
    with open(out["train_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 80
    label = dict(SENTENCES)
    for k in range(0, 80, 2):
        anchor, negative = rows[k], rows[k + 1]
        task = anchor["task_name"]
        assert task == TASKS[(k // 2) % 2] and negative["task_name"] == task
        a_inst, a_text = anchor["original_instruction"].split("\n")
        b_inst, b_text = anchor["paraphrased_instruction"].split("\n")
        # the positive: the same sentence under another of the task's training templates
        assert a_text == b_text and a_inst != b_inst and {a_inst, b_inst} <= set(TRAIN_TEMPLATES[task])
        # the hard negative: the same two templates, another sentence with the other answer
        assert negative["original_instruction"].split("\n")[0] == a_inst
        assert negative["paraphrased_instruction"].split("\n")[0] == b_inst
        assert negative["targets"] != anchor["targets"]
        for row in (anchor, negative):
            sentence = row["original_instruction"].split("\n")[1]
            assert row["targets"] == ANSWER_WORDS[task][label[sentence]]
    # both tasks answer each sentence, with opposite words: only the instruction tells them apart
    assert ANSWER_WORDS["sst2_positive"] == tuple(reversed(ANSWER_WORDS["sst2_negative"]))


def test_evaluation_instructions_are_unseen_and_do_not_name_the_answer_words(tmp_path):
    out = write_regime(_glue(tmp_path / "glue"), tmp_path / "regime", groups=2)
    for task, path in zip(TASKS, out["task_files"]):
        spec = yaml.safe_load(Path(path).read_text())
        assert spec["name"] == task and spec["label_words"] == list(ANSWER_WORDS[task])
        assert Path(spec["data"]) == (tmp_path / "glue" / "sst2" / "validation.jsonl").resolve()
        evaluated = spec["instructions"] + spec["semantic"]
        assert len(spec["instructions"]) == len(spec["semantic"]) == 6 and len(set(evaluated)) == 12
        assert not set(evaluated) & {t for ts in TRAIN_TEMPLATES.values() for t in ts}
        for text in evaluated:
            assert not re.search(r"\b(yes|no)\b", text, re.IGNORECASE), text
    assert set(EVAL_INSTRUCTIONS) == set(TASKS)


def _job(path: Path, correct: dict[str, list[int]]) -> Path:
    """A finished evaluation: ``correct[level]`` the correctness of rows 0..n-1 under one instruction."""
    rows = [{"task": "t", "category": "c", "perturbation": lv, "level": lv, "instruction_index": 0,
             "instruction": f"{lv} instruction", "uid": f"t/{i}", "gold": 1, "pred": 1 if ok else 0}
            for lv, oks in correct.items() for i, ok in enumerate(oks)]
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "metrics.json").write_text(json.dumps({"levels": list(correct), "tasks": ["t"], "fingerprint": {}}))
    return path


def test_settings_name_what_a_job_trains_so_a_changed_lambda_is_not_taken_as_done():
    line = ("python -m coin_lightning.train model=m data.path=/a/train.csv loss.lambda=1000 loss.pooling=last_prompt "
            "seed=1 'evaluation.eval.tasks=[a,b]' trainer.max_steps=300 optimizer.lr=1.0e-3 hydra.run.dir=/w/j")
    recorded = line.split(" ")  # as the runner reads a job's recorded command line
    rerun = ["python", "-m", "coin_lightning.train", "model=m", "data.path=/b/train.csv", "loss.lambda=1",
             "loss.pooling=last_prompt", "seed=1", "evaluation.eval.tasks=[a,b]", "trainer.max_steps=300",
             "optimizer.lr=1.0e-3", "hydra.run.dir=/v/j"]
    assert settings(recorded) == {"loss.lambda": "1000", "loss.pooling": "last_prompt", "seed": "1",
                                  "trainer.max_steps": "300", "optimizer.lr": "1.0e-3"}
    assert settings(rerun) == {**settings(recorded), "loss.lambda": "1"}  # paths may move; lambda may not


def test_drop_intervals_are_clean_minus_level_accuracy(tmp_path):
    job = _job(tmp_path / "job", {"clean": [1, 1, 1, 0], "character": [1, 0, 0, 0], "word": [1, 1, 1, 1]})
    drops = drop_intervals(seed_cells([str(job)]), resamples=200)
    assert drops["character"]["mean"] == pytest.approx(50.0)   # 75% clean, 25% character
    assert drops["word"]["mean"] == pytest.approx(-25.0)       # better than clean: a negative drop
    assert drops["perturbed"]["mean"] == pytest.approx(12.5)
    for d in drops.values():
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]


def test_pilot_record_reads_the_drop_and_off_label_rate(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"overall": {"clean": 0.77, "perturbed": 0.7296, "unparseable": 0.025}}))
    (tmp_path / "job.json").write_text(json.dumps({"setting": "steps300", "overrides": []}))
    rec = pilot_record(tmp_path)
    assert rec["setting"] == "steps300"
    assert rec["continual_drop"] == pytest.approx(4.04) and rec["off_label_rate"] == pytest.approx(2.5)
    lam = tmp_path / "lambda"  # a lambda pilot of a CoIN arm: its record names the arm
    lam.mkdir()
    (lam / "metrics.json").write_text(json.dumps({"overall": {"clean": 0.4975, "perturbed": 0.503, "unparseable": 0.0}}))
    (lam / "job.json").write_text(json.dumps({"arm": "coin_last_prompt", "lambda": 1000, "pooling": "last_prompt", "seed": 1}))
    rec = pilot_record(lam)
    assert "continual_drop" not in rec and rec["setting"] == "lambda" and rec["lambda"] == 1000
    assert rec["drop"] == pytest.approx(-0.55) and rec["clean"] == pytest.approx(49.75)


def _sweep_job(sweep: Path, results: Path, name: str, overrides: dict, correct: dict[str, list[int]]) -> None:
    """A finished sweep job (Hydra overrides, predictions, metrics) and its small outputs in the results."""
    rows = [{"task": "t", "category": "c", "perturbation": lv, "level": lv, "instruction_index": k,
             "instruction": f"{lv} instruction {k}", "uid": f"t/{i}", "gold": 1, "pred": {1: 1, 0: 0, -1: -1}[ok]}
            for lv, oks in correct.items() for k in range(2) for i, ok in enumerate(oks)]
    metrics = {**summarize(rows), "fingerprint": {"rows": "r", "instructions": "i", "rows_per_task": {"t": 4}}}
    for d in (sweep / name / "eval", results / "jobs" / "sweep" / name):
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(metrics))
    (sweep / name / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (sweep / name / ".hydra").mkdir()
    (sweep / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))


def test_summary_schema_gate_and_robustness_effect(tmp_path, monkeypatch):
    """Three arms x two seeds of hand-written predictions through compare --sweep and write_summary."""
    from matplotlib.figure import Figure

    saved, savefig = {}, Figure.savefig

    def recording(fig, path, *args, **kwargs):  # drop_figure saves and closes its figure: keep it to read
        saved[Path(path).name] = fig
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    cfg = OmegaConf.load(Path(instruction_summary.__file__).with_name("instruction_study.yaml"))
    cfg.bootstrap = 50
    sweep, results, out = tmp_path / "sweep", tmp_path / "results", tmp_path / "compare"
    clean = [1, 1, 1, 1]
    character = {"continual": [1, 0, -1, 0], "coin_last": [1, 1, 1, 0], "coin_last_prompt": [1, 1, 0, 0]}
    for seed in (1, 2):
        for arm, a in cfg.arms.items():
            _sweep_job(sweep, results, f"{arm}_seed{seed}",
                       {"data.append_eos": False, "loss.lambda": a["lambda"], "loss.pooling": a.pooling, "seed": seed},
                       {"clean": clean, "character": character[arm]})
    (results / "jobs" / "pilot" / "steps300").mkdir(parents=True)
    (results / "jobs" / "pilot" / "steps300" / "metrics.json").write_text(
        json.dumps({"overall": {"clean": 1.0, "perturbed": 0.25, "unparseable": 0.125}}))
    (results / "jobs" / "pilot" / "steps300" / "job.json").write_text(json.dumps({"setting": "steps300", "overrides": []}))
    assert compare_main(["--sweep", str(sweep), "--reference", "loss.lambda=0,loss.pooling=last",
                         "--bootstrap", "50", "--out", str(out)]) == 0
    s = instruction_summary.write_summary(cfg, out, results)
    assert set(s) >= {"primary_metric", "regime", "gate", "arms", "robustness_effect", "delta_perturbed"}
    assert s["primary_metric"] == "exact_match" and s["regime"]["tasks"] == list(TASKS)
    assert s["regime"]["pilots"] == [{"setting": "steps300", "overrides": [], "continual_drop": 75.0,
                                      "off_label_rate": 12.5, "clean": 100.0, "perturbed": 25.0}]
    cont = s["arms"]["continual"]
    assert (cont["clean"], cont["perturbed"], cont["drop"]) == (100.0, 25.0, 75.0)
    assert cont["off_label_rate"] == pytest.approx(100 * 2 / 16)   # one of 8 character answers, half the rows
    assert (cont["pooling"], cont["append_eos"], cont["seeds"]) == ("last", False, [1, 2])
    assert s["arms"]["coin_last_prompt"]["pooling"] == "last_prompt"
    assert s["gate"]["passed"] and s["gate"]["continual_drop"] == 75.0
    assert s["pairing"]["holds"]
    # robustness effect: continual's drop minus the arm's (75 - 25 and 75 - 50 points)
    effect = s["robustness_effect"]
    assert effect["coin_last - continual"]["mean"] == pytest.approx(50.0)
    assert effect["coin_last_prompt - continual"]["mean"] == pytest.approx(25.0)
    assert s["delta_perturbed"]["coin_last - continual"]["mean"] == pytest.approx(50.0)
    for e in [*effect.values(), *s["delta_perturbed"].values()]:
        for key in ("ci95", "ci95_independent_seeds"):
            assert e[key][0] <= e["mean"] <= e[key][1]
    assert (results / "drop_by_level.png").read_bytes()[:4] == b"\x89PNG"
    # the figure: a bar per arm at its drop from clean, from the hand-written answers (clean: 4 of 4 right;
    # character: continual 1, coin_last 3, coin_last_prompt 2 of 4) -> 75, 25 and 50 points at every level
    ax = saved["drop_by_level.png"].axes[0]
    levels = [t.get_text() for t in ax.get_xticklabels()]
    assert "character" in levels and "clean" not in levels
    drawn = {c.get_label(): [p.get_height() for p in c] for c in ax.containers if c.__class__.__name__ == "BarContainer"}
    want = {"continual": 75.0, "coin_last": 25.0, "coin_last_prompt": 50.0}
    assert drawn == {arm: pytest.approx([d] * len(levels)) for arm, d in want.items()}
