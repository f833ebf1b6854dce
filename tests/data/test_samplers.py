"""Sharding across ranks keeps groups whole; the length-grouped sampler is rank-aware and seeded."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from coin_lightning.data.collate import Collator, collate
from coin_lightning.data.config import DataArgs
from coin_lightning.data.datamodule import CoinDataModule
from coin_lightning.data.records import DataError
from coin_lightning.data.samplers import LengthGroupedSampler


@pytest.fixture(scope="module", params=["pair_of_pairs", "hard_negative_column"])
def dm(request, tiny_tokenizer):
    m = CoinDataModule(DataArgs(source="embedded", n_per_task=30, val_size=0, group=request.param, batch_size=4), tokenizer=tiny_tokenizer, seed=0)
    m.setup()
    return m


def row_index(ds):
    """Real-token row -> (item, role, position) for every row of every item."""
    out = {}
    for i, g in enumerate(ds.encoded):
        for role, rows in (("o", g.originals), ("p", g.paraphrases), ("n", g.negatives)):
            for k, r in enumerate(rows):
                out.setdefault(tuple(r.ids.tolist()), set()).add((i, role, k))
    return out


def items_of_batch(batch, index, n_per_item, n_neg_per_item):
    """Recover the items of a collated batch from its rows and check each one is complete and laid
    out as CONTRACTS.md says (originals, then paraphrases in the same order, then negatives)."""
    P = batch["num_pairs"]
    rows = [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert len(rows) == (2 + (1 if n_neg_per_item else 0)) * P
    items = []
    for slot in range(0, P, n_per_item):
        cands = {i for i, role, k in index[rows[slot]] if role == "o" and k == 0}
        for k in range(n_per_item):
            cands &= {i for i, role, kk in index[rows[slot + k]] if role == "o" and kk == k}
            cands &= {i for i, role, kk in index[rows[P + slot + k]] if role == "p" and kk == k}
        if n_neg_per_item:
            cands &= {i for i, role, kk in index[rows[2 * P + slot // n_per_item]] if role == "n"}
        assert cands, "a group is split or misplaced in the batch"
        items.append(min(cands))
    return items


@pytest.mark.parametrize("use_length_sampler", [False, True])
def test_two_ranks_keep_every_group_whole(dm, use_length_sampler):
    ds = dm.train_dataset
    items_per_batch = dm.batch_size // dm.pairs_per_item
    index = row_index(ds)
    n_neg = len(ds.encoded[0].negatives)
    seen = []
    for rank in range(2):
        if use_length_sampler:
            sampler = LengthGroupedSampler(ds.lengths, items_per_batch, num_replicas=2, rank=rank, seed=0)
        else:
            sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        assert isinstance(sampler, DistributedSampler)  # Lightning leaves such samplers in place
        loader = DataLoader(ds, batch_size=items_per_batch, sampler=sampler, collate_fn=Collator(dm.tokenizer.pad_token_id))
        mine = []
        for batch in loader:
            got = items_of_batch(batch, index, dm.pairs_per_item, n_neg)
            mine += got
        assert len(mine) == len(sampler)
        seen.append(mine)
    assert set(seen[0]) | set(seen[1]) == set(range(len(ds)))  # every group, on some rank
    padding = len(seen[0]) + len(seen[1]) - len(ds)
    assert len(set(seen[0]) & set(seen[1])) <= padding and len(seen[0]) == len(seen[1])


def test_length_sampler_groups_similar_lengths_and_is_seeded():
    lengths = [(i * 37) % 101 + 5 for i in range(1000)]
    s = LengthGroupedSampler(lengths, 4, num_replicas=2, rank=0, seed=1)
    t = LengthGroupedSampler(lengths, 4, num_replicas=2, rank=1, seed=1)
    a, b = list(s), list(t)
    assert list(LengthGroupedSampler(lengths, 4, num_replicas=2, rank=0, seed=1)) == a
    assert not set(a) & set(b) and len(set(a) | set(b)) == 1000 and len(a) == len(s) == 500
    # both ranks' micro-batches of one step come from one sorted run: similar widths
    spread = [max(lengths[i] for i in a[k:k + 4] + b[k:k + 4]) - min(lengths[i] for i in a[k:k + 4] + b[k:k + 4]) for k in range(0, 500, 4)]
    assert sum(spread) / len(spread) < 5
    s.set_epoch(1)
    assert list(s) != a
    # padding to whole steps, or trimming
    odd = LengthGroupedSampler(lengths[:13], 4, num_replicas=2, rank=1, seed=0)
    assert len(list(odd)) == len(odd) == 8
    assert len(LengthGroupedSampler(lengths[:13], 4, num_replicas=2, rank=1, drop_last=True)) == 4
    with pytest.raises(ValueError, match="batch_items must be positive, got 0"):
        LengthGroupedSampler(lengths, 0)


def test_datamodule_uses_the_length_sampler(tiny_tokenizer):
    m = CoinDataModule(DataArgs(source="embedded", n_per_task=20, val_size=0, batch_size=4, group_by_length=True), tokenizer=tiny_tokenizer)
    m.setup()
    loader = m.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler) and loader.batch_size == 2
    assert Counter(len(b["response_start"]) for b in loader) == {8: len(loader)}


def test_sequential_order_is_the_dataset_order_every_epoch(tiny_tokenizer):
    """data.order=sequential (the reference: no shuffling) yields the dataset's groups in order, every
    epoch; shuffled changes the order between epochs."""
    m = CoinDataModule(DataArgs(source="embedded", n_per_task=10, val_size=0, batch_size=2, order="sequential"), tokenizer=tiny_tokenizer)
    m.setup()
    ds = m.train_dataset
    for epoch in (0, 1):
        loader = m.train_dataloader()
        loader.sampler.set_epoch(epoch)
        got = [b["input_ids"] for b in loader]
        assert len(got) == len(ds)
        for k in (0, 1, len(ds) - 1):
            assert torch.equal(got[k], collate([ds[k]], tiny_tokenizer.pad_token_id)["input_ids"])
    shuffled = CoinDataModule(DataArgs(source="embedded", n_per_task=10, val_size=0, batch_size=2), tokenizer=tiny_tokenizer)
    shuffled.setup()
    orders = []
    for epoch in (0, 1):
        loader = shuffled.train_dataloader()
        loader.sampler.set_epoch(epoch)
        orders.append(list(iter(loader.sampler)))
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(len(ds)))


def test_order_is_validated_at_construction():
    with pytest.raises(DataError, match="data.order='random' is not one of shuffled, sequential"):
        CoinDataModule(DataArgs(order="random"))
    with pytest.raises(DataError, match="data.order=sequential keeps the dataset order"):
        CoinDataModule(DataArgs(order="sequential", group_by_length=True))
