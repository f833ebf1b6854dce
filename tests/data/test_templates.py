"""Template bank: FLAN JSON and own YAML loaders, {options_} rendering, placeholder checks, matching."""
from __future__ import annotations

import json
import re

import pytest

from coin_lightning.data.records import DataError, Record
from coin_lightning.data.sources.embedded import EMBEDDED_TASKS, load_embedded
from coin_lightning.data.sources.glue import GLUE_FIELDS, GLUE_TASKS, LABEL_WORDS, load_glue
from coin_lightning.data.template_files import load_flan_templates, load_own_templates
from coin_lightning.data.templates import Template, TemplateBank, format_choices, format_options

# FLAN's options by GLUE label id and the FLAN key of each GLUE task, typed in from the table of
# ../shared/data/README.md (independent of the constants in sources/glue.py).
README_FLAN = {
    "cola": ("cola", ["unacceptable", "acceptable"]),
    "sst2": ("sst2", ["negative", "positive"]),
    "mrpc": ("glue_mrpc", ["no", "yes"]),
    "qqp": ("glue_qqp", ["no", "yes"]),
    "mnli": ("mnli", ["yes", "it is not possible to tell", "no"]),
    "qnli": ("qnli", ["yes", "no"]),
    "rte": ("rte", ["yes", "no"]),
    "wnli": ("wnli", ["no", "yes"]),
}
PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def test_format_options_is_flans_layout():
    assert format_options(["yes", "no"]) == "OPTIONS:\n- yes\n- no"
    assert format_choices(["a", "b"]) == "'a' or 'b'"
    assert format_choices(["a", "b", "c"]) == "'a', 'b' or 'c'"


def _first_per_label(records):
    seen = {}
    for r in records:
        seen.setdefault(r.label, r)
    return [seen[k] for k in sorted(seen)]


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_flan_templates_render_every_glue_task(task, glue_root, flan_json):
    """Every FLAN template of every GLUE task renders a real record with no placeholder left, with
    {options_} = FLAN's option list and {answer} = the option at the label id (README table)."""
    bank = load_flan_templates(flan_json)
    raw = json.loads(flan_json.read_text())
    key, options = README_FLAN[task]
    assert [t.input for t in bank.for_task(task)] == list(dict.fromkeys(e["input"] for e in raw[key]))
    for rec in _first_per_label(load_glue(task, "train", glue_root)):
        for i, tpl in enumerate(bank.for_task(task)):
            inp, tgt = bank.render(rec, i)
            text_with_fields = "".join(str(v) for v in rec.fields.values())
            for leftover in PLACEHOLDER.findall(inp + tgt):
                assert leftover in text_with_fields, f"{tpl.name} left {leftover} in {inp!r}"
            if "{options_}" in tpl.input:
                assert "OPTIONS:\n- " + "\n- ".join(options) in inp
            if tpl.target == "{answer}":
                assert tgt == options[rec.label]
            # every text field of the record appears in the rendered pair (rte: via premise/hypothesis)
            for name in GLUE_FIELDS[task]:
                if "{" + name + "}" in tpl.input or task == "rte" and "{" + {"sentence1": "premise", "sentence2": "hypothesis"}[name] + "}" in tpl.input:
                    assert rec.fields[name] in inp


def test_flan_duplicate_and_inverse_templates_are_excluded_from_pairs(flan_json):
    bank = load_flan_templates(flan_json)
    cola = bank.for_task("cola")
    assert len(cola) == 9  # FLAN lists one cola template twice
    (main,) = bank.paraphrase_sets("cola", "main")
    assert all(cola[i].target == "{answer}" for i in main) and len(main) == 7
    assert sorted(len(s) for s in bank.paraphrase_sets("cola", "all")) == [2, 7]
    # translation tasks have two target directions; both are sets of paraphrases
    assert all(len({bank.for_task("para_crawl")[i].target for i in s}) == 1 for s in bank.paraphrase_sets("para_crawl", "all"))


def test_match_recovers_fields_for_every_flan_glue_template(glue_root, flan_json):
    bank = load_flan_templates(flan_json)
    for task in GLUE_TASKS:
        rec = load_glue(task, "train", glue_root)[0]
        vals = bank.values(rec)
        for tpl in bank.for_task(task):
            inp, tgt = tpl.render(vals)
            got = tpl.match(inp, tgt)
            assert got is not None, tpl.name
            assert got == {k: vals[k] for k in tpl.placeholders}


def test_match_rejects_other_text_and_checks_repeated_fields():
    tpl = Template("Q: {a}\nagain {a}? {options_}", "{answer}")
    assert tpl.match("Q: x\nagain x? OPTIONS:\n- y\n- n", "y") == {"a": "x", "options_": "OPTIONS:\n- y\n- n", "answer": "y"}
    assert tpl.match("Q: x\nagain z? OPTIONS:\n- y\n- n", "y") is None
    assert tpl.match("Something else", "y") is None
    both = Template("{context} and", "{context} {answer}")
    assert both.match("abc and", "abc yes") == {"context": "abc", "answer": "yes"}
    assert both.match("abc and", "abd yes") is None


def test_own_templates_cover_glue_and_embedded_tasks_with_known_fields():
    bank = load_own_templates()
    derived = {"options_", "choices", "answer"}
    for task in GLUE_TASKS:
        tpls = bank.for_task(task)
        assert len(tpls) >= 10, task
        for t in tpls:
            assert t.placeholders <= set(GLUE_FIELDS[task]) | derived, t.name
            assert set(GLUE_FIELDS[task]) <= t.placeholders, f"{t.name} drops a field"
            assert t.target == "{answer}"
        assert bank.options[task] == LABEL_WORDS[task]
    for task, spec in EMBEDDED_TASKS.items():
        tpls = bank.for_task(task)
        assert len(tpls) >= 10, task
        fields = set(load_embedded([task], 1)[0].fields)
        for t in tpls:
            assert t.placeholders <= fields | derived and fields <= t.placeholders, t.name
            if spec.options is None:
                assert not t.placeholders & {"options_", "choices"}, t.name
        assert len({t.input for t in tpls}) == len(tpls)


def test_own_templates_render_label_words_by_label_id(glue_root):
    bank = load_own_templates()
    for task in GLUE_TASKS:
        for rec in _first_per_label(load_glue(task, "train", glue_root)):
            for i in range(len(bank.for_task(task))):
                inp, tgt = bank.render(rec, i)
                assert tgt == LABEL_WORDS[task][rec.label]
                assert not PLACEHOLDER.findall(inp.replace(rec.fields.get("sentence", ""), ""))


def test_missing_placeholder_names_file_row_and_key():
    bank = TemplateBank({"t": (Template("A {x} and {y}", name="own:t/0"), Template("B {x}", name="own:t/1"))}, options={"t": ("n", "y")})
    rec = Record("t", {"x": "1"}, label=0, uid="t/train/7", meta={"source": "data/t.jsonl", "row": 8})
    with pytest.raises(DataError, match=r"data/t\.jsonl:8.*own:t/0.*'y'"):
        bank.check(rec)
    assert bank.render(rec, 1) == ("B 1", "n")


def test_bad_label_empty_target_and_unknown_task_are_errors():
    bank = TemplateBank({"t": (Template("{x}"),)}, options={"t": ("n", "y")})
    with pytest.raises(DataError, match="label 5"):
        bank.render(Record("t", {"x": "1"}, label=5, meta={"source": "f", "row": 3}), 0)
    gen = TemplateBank({"g": (Template("{x}"),)})
    with pytest.raises(DataError, match="f:3: empty target"):
        gen.render(Record("g", {"x": "1"}, target="  ", meta={"source": "f", "row": 3}), 0)
    with pytest.raises(DataError, match="unknown task 'nope'"):
        gen.for_task("nope")
