"""GLUE source: local JSONL in the nyu-mll/glue schema, label names, bad rows."""
from __future__ import annotations

from collections import Counter

import pytest

from coin_lightning.data.records import DataError
from coin_lightning.data.sources.base import read_jsonl
from coin_lightning.data.sources.glue import GLUE_FIELDS, GLUE_LABEL_NAMES, GLUE_TASKS, LABEL_WORDS, load_glue

# From ../shared/data/README.md ("Schema and label ids" and "Files"), typed in independently.
README_LABELS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}
README_TRAIN_COUNTS = {
    "cola": {0: 1755, 1: 4245},
    "sst2": {0: 2629, 1: 3371},
    "mrpc": {0: 1194, 1: 2474},
    "qqp": {0: 100, 1: 100},
    "mnli": {0: 100, 1: 100, 2: 100},
    "qnli": {0: 100, 1: 100},
    "rte": {0: 1249, 1: 1241},
    "wnli": {0: 323, 1: 312},
}


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_glue_train_loads_with_readme_label_names_and_counts(task, glue_root):
    records = load_glue(task, "train", glue_root)
    assert GLUE_LABEL_NAMES[task] == README_LABELS[task]
    assert len(LABEL_WORDS[task]) == len(README_LABELS[task])
    assert dict(Counter(r.label for r in records)) == README_TRAIN_COUNTS[task]
    for r in records[:50]:
        assert set(r.fields) == set(GLUE_FIELDS[task]) and all(r.fields.values())
        assert r.uid.startswith(f"{task}/train/") and r.task == task
    assert len({r.uid for r in records}) == len(records)


def test_label_names_match_row_meaning(glue_root):
    """Spot checks whose answer is evident from the text (wnli's ids are the reverse of rte's)."""
    wnli = {(r.fields["sentence1"][:25], r.fields["sentence2"]): r for r in load_glue("wnli", "train", glue_root)}
    assert GLUE_LABEL_NAMES["wnli"][wnli["I stuck a pin through a c", "The carrot had a hole."].label] == "entailment"
    assert GLUE_LABEL_NAMES["wnli"][wnli["I stuck a pin through a c", "The pin had a hole."].label] == "not_entailment"
    rte = load_glue("rte", "train", glue_root)[0]
    assert rte.fields["sentence2"] == "Weapons of Mass Destruction Found in Iraq."
    assert GLUE_LABEL_NAMES["rte"][rte.label] == "not_entailment"


def test_bad_rows_raise_with_file_and_line_or_are_skipped_and_counted(tmp_path):
    d = tmp_path / "rte"
    d.mkdir()
    (d / "train.jsonl").write_text(
        '{"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0}\n'
        '{"sentence1": "a", "label": 1, "idx": 1}\n'
        "not json\n"
        '{"sentence1": "c", "sentence2": "d", "label": 7, "idx": 3}\n'
        '{"sentence1": "e", "sentence2": "f", "label": 1, "idx": 4}\n'
    )
    with pytest.raises(DataError, match=r"rte/train\.jsonl:2: missing key 'sentence2'"):
        load_glue("rte", "train", tmp_path)
    stats = {}
    before = read_jsonl.skipped.get(str(d / "train.jsonl"), 0)
    recs = load_glue("rte", "train", tmp_path, on_error="skip", stats=stats)
    assert [r.uid for r in recs] == ["rte/train/0", "rte/train/4"]
    assert stats["skipped"] == 2 and read_jsonl.skipped[str(d / "train.jsonl")] - before == 1
    with pytest.raises(DataError, match="unknown GLUE task"):
        load_glue("stsb", "train", tmp_path)
    with pytest.raises(DataError, match="no such file"):
        load_glue("cola", "train", tmp_path)
