"""FLAN-collection source: fields recovered from rendered rows by template matching."""
from __future__ import annotations

import json

import pytest

from coin_lightning.data.records import DataError
from coin_lightning.data.sources.flan import flan_task_key, load_flan
from coin_lightning.data.sources.glue import GLUE_TASKS, load_glue
from coin_lightning.data.template_files import load_flan_templates

FLAN_KEY = {"mrpc": "glue_mrpc", "qqp": "glue_qqp"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, glue_root, flan_json):
    """A Muennighoff/flan-layout directory: GLUE rows rendered with every FLAN template (answer and
    inverted ones), plus one row that matches nothing. Returns (root, expected values per line)."""
    bank = load_flan_templates(flan_json)
    root = tmp_path_factory.mktemp("flan")
    (root / "train").mkdir()
    expected = {}
    for task in GLUE_TASKS:
        key = FLAN_KEY.get(task, task)
        lines = []
        for j, rec in enumerate(load_glue(task, "train", glue_root)[:12]):
            i = j % len(bank.for_task(task))
            vals = bank.values(rec)
            inp, tgt = bank.for_task(task)[i].render(vals)
            lines.append(json.dumps({"inputs": inp, "targets": tgt, "task": f"{key}_10templates"}))
            expected[(key, len(lines))] = (vals, bank.for_task(task)[i])
        lines.append(json.dumps({"inputs": "Something FLAN never wrote.", "targets": "yes", "task": f"{key}_10templates"}))
        (root / "train" / f"{key}_10templates_train.jsonl").write_text("\n".join(lines) + "\n")
    return root, expected


def test_task_names_map_to_template_keys(flan_json):
    bank = load_flan_templates(flan_json)
    assert flan_task_key("rte_10templates", bank) == "rte"
    assert flan_task_key("mnli_mismatched_10templates", bank) == "mnli"
    assert flan_task_key("anli_r3_10templates", bank) == "anli"
    assert flan_task_key("wmt16_translate_deen_10templates", bank) == "wmt16_translate"
    assert flan_task_key("arc_challenge_10templates", bank) == "arc"
    assert flan_task_key("mrpc", bank) == "glue_mrpc"
    assert flan_task_key("nonexistent_task", bank) is None


def test_rendered_rows_give_back_their_fields_and_unmatched_are_counted(rendered, flan_json):
    root, expected = rendered
    bank = load_flan_templates(flan_json)
    stats = {}
    records, unmatched = load_flan(bank, root, stats=stats)
    assert unmatched == {FLAN_KEY.get(t, t): 1 for t in GLUE_TASKS}
    # rows of inverted templates that drop a field (qnli: "Can you generate a question ...?" has no
    # context sentence) cannot form pairs: counted apart, not silently kept
    lacking = {}
    for (key, _), (_, tpl) in expected.items():
        sets = bank.paraphrase_sets(key)
        if not {p for i in sets[0] for p in bank.templates[key][i].placeholders} <= tpl.placeholders | {"options_"}:  # GLUE options come from the bank
            lacking[key] = lacking.get(key, 0) + 1
    assert lacking and stats["incomplete_flan"] == lacking
    assert len(records) == len(expected) - sum(lacking.values())
    for r in records:
        vals, tpl = expected[(r.task, r.meta["row"])]
        assert r.meta["template"] == tpl.name
        for name in tpl.placeholders - {"answer"}:
            assert r.fields[name] == vals[name]
        if "answer" in tpl.placeholders:
            assert r.target == vals["answer"]
        # the record renders again under every template of its task (what a positive needs)
        for other in bank.paraphrase_sets(r.task)[0]:
            inp, tgt = bank.render(r, other)
            assert tgt == vals["answer"] and "{" not in inp.replace(str(vals), "")


def test_task_filter_and_bad_rows(tmp_path, rendered, flan_json):
    root, _ = rendered
    bank = load_flan_templates(flan_json)
    records, _ = load_flan(bank, root, tasks=["mrpc", "rte"])
    assert {r.task for r in records} == {"glue_mrpc", "rte"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"inputs": "x", "targets": "y", "task": "rte_10templates"}) + "\n"
        + json.dumps({"inputs": "x", "task": "rte"}) + "\n"
        + json.dumps({"inputs": "x", "targets": "y", "task": "made_up_task"}) + "\n"
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:2: column 'targets'"):
        load_flan(bank, bad)
    stats = {}
    records, unmatched = load_flan(bank, bad, on_error="skip", stats=stats)
    assert records == [] and unmatched == {"rte": 1} and stats["skipped"] == 2


def test_datamodule_trains_on_flan_rows(rendered, flan_json, tiny_tokenizer):
    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule

    root, _ = rendered
    dm = CoinDataModule(DataArgs(source="flan", root=str(root), templates=str(flan_json), val_size=16), tokenizer=tiny_tokenizer, seed=0)
    dm.setup()
    assert dm.stats["unmatched_flan"] == {FLAN_KEY.get(t, t): 1 for t in GLUE_TASKS}
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_pairs"] == 2 and batch["input_ids"].shape[0] == 4
