"""Contrastive groups: definitions of positive and hard negative, seeding, negative choice."""
from __future__ import annotations

from collections import Counter

import pytest

from coin_lightning.data.grouping import build_groups
from coin_lightning.data.records import DataError, Record
from coin_lightning.data.selection import validate_records
from coin_lightning.data.sources.embedded import load_embedded
from coin_lightning.data.sources.glue import GLUE_TASKS
from coin_lightning.data.template_files import load_flan_templates, load_own_templates
from coin_lightning.data.templates import Template, TemplateBank


@pytest.fixture(scope="module")
def flan_bank(flan_json):
    return load_flan_templates(flan_json)


def answer_of(bank, uid_to_record, ex):
    return bank.values(uid_to_record[ex.uid])["answer"]


def check_definitions(groups, records, bank, mode):
    """Every group satisfies the CoIN definitions, checked from the records and templates."""
    by_uid = {r.uid: r for r in records}
    name_to_tpl = {t.name: (task, i) for task, ts in bank.templates.items() for i, t in enumerate(ts)}
    anchors = Counter()
    for g in groups:
        assert len(g.pairs) == (2 if mode == "pair_of_pairs" else 1)
        assert len(g.negatives) == (0 if mode == "pair_of_pairs" else 1)
        anchor = g.pairs[0]
        anchors[anchor.original.uid] += 1
        rec = by_uid[anchor.original.uid]
        negatives = [p.original for p in g.pairs[1:]] + list(g.negatives)
        for pair in g.pairs:
            o, p = pair.original, pair.paraphrase
            # positive: same record, different template of the same task with the same target template
            assert o.uid == p.uid and o.template != p.template and o.task == p.task
            to, tp = bank.templates[name_to_tpl[o.template][0]][name_to_tpl[o.template][1]], bank.templates[name_to_tpl[p.template][0]][name_to_tpl[p.template][1]]
            assert to.target == tp.target
            # renders are really that record under those templates
            assert (o.input, o.target) == bank.render(by_uid[o.uid], name_to_tpl[o.template][1])
            assert (p.input, p.target) == bank.render(by_uid[p.uid], name_to_tpl[p.template][1])
            assert o.target == p.target
        for neg in negatives:
            # hard negative: same template, another record of the same task, a different target here
            assert neg.template == anchor.original.template and neg.task == rec.task
            assert neg.uid != anchor.original.uid
            assert neg.target != anchor.original.target
    return anchors


@pytest.mark.parametrize("mode", ["pair_of_pairs", "hard_negative_column"])
def test_groups_satisfy_the_definitions_on_glue_with_flan_templates(mode, glue_records, flan_bank):
    records = validate_records(glue_records, flan_bank)
    stats = {}
    groups = build_groups(records, flan_bank, mode, seed=3, stats=stats)
    anchors = check_definitions(groups, records, flan_bank, mode)
    every = set(r.uid for r in records)
    if mode == "hard_negative_column":
        assert Counter(anchors) == Counter({u: 1 for u in every})  # every record is the anchor once
    else:
        covered = {e.uid for g in groups for p in g.pairs for e in (p.original,)}
        assert covered == every  # every record is in some group, as anchor or as its negative
    assert stats["same_target_negatives"] == 0
    assert set(stats["groups_per_task"]) == set(GLUE_TASKS)


def test_groups_on_embedded_tasks_with_own_templates():
    bank = load_own_templates()
    records = load_embedded(n_per_task=40, seed=1)
    for mode in ("pair_of_pairs", "hard_negative_column"):
        groups = build_groups(validate_records(records, bank), bank, mode, seed=0)
        check_definitions(groups, records, bank, mode)


def test_same_seed_same_groups_other_seed_other_groups(glue_records, flan_bank):
    records = validate_records(glue_records, flan_bank)
    a = build_groups(records, flan_bank, seed=11)
    b = build_groups(records, flan_bank, seed=11)
    c = build_groups(records, flan_bank, seed=12)
    assert a == b
    assert a != c
    # per-task streams: dropping a task does not change the other tasks' groups
    no_rte = build_groups([r for r in records if r.task != "rte"], flan_bank, seed=11)
    key = lambda gs: sorted((g.pairs[0].original.uid, g.pairs[0].original.template, g.pairs[0].paraphrase.template) for g in gs if g.pairs[0].original.task == "cola")  # noqa: E731
    assert key(a) == key(no_rte)


def test_random_negatives_and_same_target_fallback():
    bank = TemplateBank({"t": (Template("a {x}"), Template("b {x}"))}, options={"t": ("n", "y")})
    recs = [Record("t", {"x": str(i)}, label=int(i < 2), uid=f"t/{i}") for i in range(6)]  # 2 y, 4 n
    stats = {}
    groups = build_groups(recs, bank, "hard_negative_column", seed=0, negatives="random", stats=stats)
    for g in groups:
        anchor_y = g.pairs[0].original.target == "y"
        assert (g.negatives[0].target == "y") != anchor_y  # a different target always exists here
    same = [Record("t", {"x": str(i)}, label=0, uid=f"t/{i}") for i in range(3)]
    stats = {}
    groups = build_groups(same, bank, "pair_of_pairs", seed=0, stats=stats)
    assert stats["same_target_negatives"] >= 1 and all(g.pairs[0].original.uid != g.pairs[1].original.uid for g in groups)
    with pytest.raises(DataError, match="single record"):
        build_groups(same[:1], bank, seed=0)
    one = TemplateBank({"t": (Template("a {x}"),)}, options={"t": ("n", "y")})
    with pytest.raises(DataError, match="no two templates"):
        validate_records(same, one)
