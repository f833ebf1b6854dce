"""Evaluation tasks: PromptBench's content format, label words by the dataset's ids, the row sample."""
from __future__ import annotations

import pytest

from coin_lightning.data.records import DataError, Record
from coin_lightning.data.sources.glue import format_glue_content
from coin_lightning.eval.engine.tasks import load_task, render_input, sample_rows, task_from_records
from tests.eval.eval_helpers import tiny


@pytest.mark.parametrize("dataset, fields, expected", [
    ("sst2", {"sentence": "a fine film "}, "a fine film "),
    ("cola", {"sentence": "Him went."}, "Him went."),
    ("qqp", {"question1": "Why?", "question2": "How?"}, "Question 1: Why? Question 2: How?"),
    ("mnli", {"premise": "P.", "hypothesis": "H."}, "Premise: P. Hypothesis: H."),
    ("qnli", {"question": "Who?", "sentence": "Her."}, "Question: Who? Context: Her."),
    ("rte", {"sentence1": "A.", "sentence2": "B."}, "Sentence 1: A. Sentence 2: B."),
    ("mrpc", {"sentence1": "A.", "sentence2": "B."}, "Sentence 1: A. Sentence 2: B."),
    ("wnli", {"sentence1": "A.", "sentence2": "B."}, "Sentence 1: A. Sentence 2: B."),
])
def test_promptbench_content_format(dataset, fields, expected):
    assert format_glue_content(dataset, fields) == expected


def test_bad_content_input():
    with pytest.raises(DataError, match="no field"):
        format_glue_content("rte", {"sentence1": "A."})
    with pytest.raises(DataError, match="no content format"):
        format_glue_content("boolq", {})


def test_render_input_puts_content_on_the_next_line():
    assert render_input("Classify:", "x y") == "Classify:\nx y"


def test_glue_task_label_words_follow_dataset_ids(shared_data):
    wnli = load_task("wnli", shared_data / "glue", None, 0)
    rte = load_task("rte", shared_data / "glue", None, 0)
    assert wnli.label_words == ("not_entailment", "entailment") and rte.label_words == ("entailment", "not_entailment")
    assert wnli.golds == [r.label for r in wnli.records] and len(wnli.records) == 71
    assert wnli.contents[0].startswith("Sentence 1: ") and " Sentence 2: " in wnli.contents[0]


def test_sample_is_seeded_sorted_and_model_free():
    records = [Record(task="t", fields={"x": str(i)}, uid=f"t/{i}") for i in range(50)]
    a = sample_rows(records, 10, seed=3, key="t/validation")
    assert a == sample_rows(records, 10, seed=3, key="t/validation")
    assert [r.uid for r in a] == sorted((r.uid for r in a), key=lambda u: int(u.split("/")[1]))
    assert a != sample_rows(records, 10, seed=4, key="t/validation")
    assert sample_rows(records, 80, 0, "k") == records and sample_rows(records, None, 0, "k") == records
    with pytest.raises(DataError, match="samples_per_task"):
        sample_rows(records, 0, 0, "k")


def test_task_from_records_labels_and_targets():
    labelled = [Record(task="p", fields={"n": "3"}, label=1, uid="p/0"), Record(task="p", fields={"n": "4"}, label=0, uid="p/1")]
    t = task_from_records("p", labelled, None, 0, label_words=("even", "odd"))
    assert t.golds == [1, 0] and t.contents == ["3", "4"]
    targets = [Record(task="m", fields={"a": "1", "b": "7"}, target="7", uid="m/0"),
               Record(task="m", fields={"a": "9", "b": "2"}, target="9", uid="m/1")]
    g = task_from_records("m", targets, None, 0)
    assert g.label_words == ("7", "9") and g.golds == [0, 1] and g.contents == ["1 7", "9 2"]
    with pytest.raises(DataError, match="label"):
        task_from_records("p", labelled, None, 0, label_words=("only",))
    with pytest.raises(DataError, match="no target"):
        task_from_records("p", labelled, None, 0)


def test_prompt_layouts():
    """training: the training wrapping; reference (CoIN's evaluation): instruction, content and
    '### Response:' without newlines."""
    from coin_lightning.data.records import build_prompt
    from coin_lightning.eval.engine.tasks import eval_prompt

    inst, content = "Is it 'positive' or 'negative'?", "Sentence A: fine. Sentence B: ok."
    assert eval_prompt(inst, content) == build_prompt(inst + "\n" + content, "alpaca") == f"{inst}\n{content}\n\n### Response:\n"
    assert eval_prompt(inst, content, "reference") == "Is it 'positive' or 'negative'? Sentence A: fine. Sentence B: ok.### Response:"
    assert eval_prompt(inst + " ", content, "reference", fmt="chat") == eval_prompt(inst, content, "reference")
    with pytest.raises(ValueError, match="eval.prompt_layout='flat'"):
        eval_prompt(inst, content, "flat")


def test_predictor_uses_the_prompt_layout():
    from coin_lightning.eval.engine.predict import Predictor
    from coin_lightning.eval.engine.tasks import eval_prompt

    model, tok = tiny()
    p = Predictor(model, tok, "alpaca", "rank", prompt_layout="reference")
    assert p.prompt("Say 'yes' or 'no'.", "x") == eval_prompt("Say 'yes' or 'no'.", "x", "reference") == "Say 'yes' or 'no'. x### Response:"
    assert p.encode([p.prompt("a", "b")])[0] == tok("a b### Response:")["input_ids"]


def test_mnli_aliases_count_once_unless_asked(caplog):
    import logging

    from coin_lightning.eval.settings import EvalSettings

    with caplog.at_level(logging.WARNING):
        s = EvalSettings.from_config({"tasks": ["sst2", "mnli", "rte", "mnli_matched", "mnli_mismatched"]})
    assert s.tasks == ["sst2", "mnli", "rte", "mnli_mismatched"]
    assert "mnli_matched scores the same rows as mnli" in caplog.text
    assert EvalSettings.from_config({"tasks": ["mnli_matched", "mnli"]}).tasks == ["mnli_matched"]
    both = EvalSettings.from_config({"tasks": ["mnli", "mnli_matched"], "dedup_aliases": False})
    assert both.tasks == ["mnli", "mnli_matched"]
    assert EvalSettings.from_config({"tasks": ["glue"]}).tasks.count("mnli_matched") == 0
