"""Record selection: validation split by uid, stratified by task; FLAN-style caps and task weights."""
from __future__ import annotations

from collections import Counter

import pytest

from coin_lightning.data.records import DataError, Record
from coin_lightning.data.selection import apply_mixture, split_records
from coin_lightning.data.sources.glue import GLUE_TASKS


def test_validation_split_is_by_record_and_stratified(glue_records):
    train, val = split_records(glue_records, 80, seed=0)
    assert not {r.uid for r in train} & {r.uid for r in val}
    assert len(train) + len(val) == len(glue_records) and 80 <= len(val) <= 88
    assert Counter(r.task for r in val) == {t: 10 for t in GLUE_TASKS}
    assert split_records(glue_records, 80, seed=0) == (train, val)
    assert {r.uid for r in split_records(glue_records, 80, seed=1)[1]} != {r.uid for r in val}
    with pytest.raises(DataError, match="leaves no training records"):
        split_records(glue_records[:5], 5, seed=0)


def test_validation_groups_never_share_records_with_training(glue_root, tiny_tokenizer):
    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule

    dm = CoinDataModule(DataArgs(source="glue", root=str(glue_root), max_per_task=60, val_size=40), seed=0)
    dm.setup()
    uids = lambda ds: {e.uid for g in ds.groups for e in g.examples}  # noqa: E731
    assert uids(dm.train_dataset) and uids(dm.val_dataset)
    assert not uids(dm.train_dataset) & uids(dm.val_dataset)


def test_mixture_caps_and_weights():
    recs = [Record(t, {"x": str(i)}, label=0, uid=f"{t}/{i}") for t, n in (("a", 10), ("b", 4)) for i in range(n)]
    capped = apply_mixture(recs, max_per_task=6, seed=0)
    assert Counter(r.task for r in capped) == {"a": 6, "b": 4}
    weighted = apply_mixture(recs, task_weights={"a": 0.5, "b": 2.5}, seed=0)
    assert Counter(r.task for r in weighted) == {"a": 5, "b": 10}
    b = [r for r in weighted if r.task == "b"]
    # 2.5 x 4 records = two whole repeats of each record plus a seeded two of them a third time
    assert len({r.uid for r in b}) == 10
    assert sorted(Counter(r.uid.split("#")[0] for r in b).values()) == [2, 2, 3, 3]
    assert {r.uid.split("#")[0] for r in b} == {f"b/{i}" for i in range(4)}
    assert apply_mixture(recs, 6, {"a": 0.5}, seed=0) == apply_mixture(recs, 6, {"a": 0.5}, seed=0)
    with pytest.raises(DataError, match="task_weights names task"):
        apply_mixture(recs, task_weights={"zzz": 1.0})
