"""Your own evaluation task from a file (``eval.task_files``; coin_lightning.eval.task_files): the
rows, content, gold labels and every perturbation level, end to end on the tiny LLaMA."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from coin_lightning.data.records import DataError
from coin_lightning.errors import EvalConfigError
from coin_lightning.eval.run import build_instruction_set, load_tasks
from coin_lightning.eval.scoring.metrics import FILES
from coin_lightning.eval.settings import EvalSettings
from coin_lightning.evaluate import run as evaluate
from tests.eval.test_evaluate import _cfg, check_outputs
from tests.helpers import wordnet_missing

ROWS = [
    {"subject": "Refund", "body": "I was charged twice this month.", "label": "billing"},
    {"subject": "Crash", "body": "The app closes when I open settings.", "label": "technical"},
    {"subject": "Invoice", "body": "Please send the invoice for March.", "label": "Billing"},
    {"subject": "Login", "body": "My password reset link does not work.", "label": 1},
    {"subject": "Plan", "body": "How do I move to the yearly plan?", "label": "0"},
    {"subject": "Sync", "body": "Files do not sync between my devices.", "label": "technical"},
]
WORDS = ["billing", "technical"]
CLEAN = ["Read the support ticket below and decide whether it is about billing or technical problems. Answer billing or technical.",
         "Which team should handle this ticket, billing or technical? Reply with one word: billing or technical."]
SEMANTIC = ["Route the customer message to the right queue; the queues are billing and technical."]


def write_task(folder: Path, data: str, **extra) -> Path:
    spec = {"name": "tickets", "data": data, "input_fields": ["subject", "body"], "label_field": "label",
            "label_words": WORDS, "category": "support", "instructions": CLEAN, "semantic": SEMANTIC, **extra}
    path = folder / "tickets.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture()
def jsonl_task(tmp_path) -> Path:
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return write_task(tmp_path, "tickets.jsonl")


def gold(row: dict) -> str:
    value = row["label"]
    return WORDS[int(value)] if str(value).isdigit() else str(value).lower()


def test_task_file_rows_content_and_gold(jsonl_task):
    settings = EvalSettings.from_config({"tasks": ["tickets"], "task_files": [str(jsonl_task)], "samples_per_task": 4})
    task, = load_tasks(settings, None)
    assert task.name == "tickets" and task.category == "support" and task.label_words == tuple(WORDS)
    assert len(task.records) == 4
    for record, content, label in zip(task.records, task.contents, task.golds):
        row = ROWS[int(record.uid.split("/")[1])]
        assert content == f"Subject: {row['subject']} Body: {row['body']}"
        assert WORDS[label] == gold(row)


def test_csv_data_and_label_words_survive_the_perturbations(tmp_path):
    with (tmp_path / "tickets.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["subject", "body", "label"])
        writer.writeheader()
        writer.writerows(ROWS)
    path = write_task(tmp_path, "tickets.csv", input_fields=["body"])
    settings = EvalSettings.from_config({"tasks": ["tickets", "embedded_parity"], "task_files": [str(path)],
                                         "samples_per_task": None, "levels": ["clean", "character", "sentence", "semantic"]})
    tasks = load_tasks(settings, None)
    assert [t.name for t in tasks] == ["tickets", "embedded_parity"]
    assert tasks[0].contents == [r["body"] for r in ROWS] and [WORDS[g] for g in tasks[0].golds] == [gold(r) for r in ROWS]
    iset = build_instruction_set(settings, [t.name for t in tasks])
    assert iset.instructions_for("tickets") == CLEAN and iset.instructions_for("tickets", "semantic") == SEMANTIC
    assert iset.instructions_for("embedded_parity")  # the built-in task keeps the default instructions
    for pert in ("deepwordbug", "textbugger", "checklist", "stresstest"):
        perturbed = iset.instructions_for("tickets", pert)
        assert len(perturbed) == len(CLEAN) and all(p != c for p, c in zip(perturbed, CLEAN))
        for p, c in zip(perturbed, CLEAN):
            for word in WORDS:  # label words are never perturbed
                assert len(re.findall(rf"\b{word}\b", p)) == len(re.findall(rf"\b{word}\b", c))


def test_own_task_is_evaluated_at_every_level(jsonl_task, tmp_path, figures):
    if wordnet_missing():
        pytest.skip(wordnet_missing())
    run = tmp_path / "run"
    evaluate(_cfg(run, ["model=tiny_llama", "eval.tasks=[tickets]", f"eval.task_files=[{jsonl_task}]",
                        "eval.samples_per_task=4", "eval.method=rank"]))
    # 2 clean + 2 x 2 character + 2 x 2 word + 2 x 2 sentence + 1 semantic instructions, 4 rows each
    rows, metrics = check_outputs(run, (2 + 4 + 4 + 4 + 1) * 4, figures)
    assert metrics["levels"] == ["clean", "character", "word", "sentence", "semantic"]
    assert {r["level"] for r in rows} == set(metrics["levels"]) and {r["task"] for r in rows} == {"tickets"}
    assert {r["category"] for r in rows} == {"support"}
    for r in rows:
        assert r["gold_word"] == gold(ROWS[int(r["uid"].split("/")[1])])
    assert "tickets" in (run / FILES["markdown"]).read_text(encoding="utf-8")


def test_bad_task_files_name_file_key_and_row(tmp_path, jsonl_task):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": "x.jsonl", "label_field": "label", "label_words": WORDS,
                                   "input_fields": ["body"], "instructions": CLEAN, "labels": WORDS}), encoding="utf-8")
    with pytest.raises(EvalConfigError, match=r"bad\.yaml: unknown key 'labels'"):
        EvalSettings.from_config({"tasks": ["bad"], "task_files": [str(bad)]})
    with pytest.raises(EvalConfigError, match=r"eval\.tasks: unknown task 'other'.*tickets"):
        EvalSettings.from_config({"tasks": ["other"], "task_files": [str(jsonl_task)]})
    (tmp_path / "tickets.jsonl").write_text(json.dumps({"subject": "a", "body": "b", "label": "sales"}) + "\n", encoding="utf-8")
    settings = EvalSettings.from_config({"tasks": ["tickets"], "task_files": [str(jsonl_task)]})
    with pytest.raises(DataError, match=r"tickets\.jsonl line 1: label='sales' is neither a label word"):
        load_tasks(settings, None)
