"""The reserved key/value cache: the same keys and values as transformers' growing cache, written in
place while there is room, concatenated after that."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from coin_lightning.eval.kv_cache import ReservedLayer, reserve_cache


def _cache(batch=2, heads=3, length=5, dim=4, layers=2):
    g = torch.Generator().manual_seed(0)
    return DynamicCache(ddp_cache_data=[(torch.randn(batch, heads, length, dim, generator=g),
                                         torch.randn(batch, heads, length, dim, generator=g)) for _ in range(layers)])


def test_reserved_cache_matches_dynamic_cache_and_writes_in_place():
    plain, reserved = _cache(), reserve_cache(_cache(), extra=3)
    assert all(isinstance(layer, ReservedLayer) for layer in reserved.layers)
    buffer = reserved.layers[0]._keys_buffer.data_ptr()
    g = torch.Generator().manual_seed(1)
    for step in range(5):  # 3 steps fit, then it falls back to concatenation
        for i in range(2):
            k, v = torch.randn(2, 3, 1, 4, generator=g), torch.randn(2, 3, 1, 4, generator=g)
            want = plain.update(k, v, i)
            got = reserved.update(k, v, i)
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        assert reserved.get_seq_length() == plain.get_seq_length() == 6 + step
        in_buffer = reserved.layers[0].keys.data_ptr() == buffer
        assert in_buffer == (step < 3)


def test_reserved_layer_follows_a_replaced_tensor():
    reserved = reserve_cache(_cache(batch=2), extra=4)
    reserved.batch_repeat_interleave(2)  # replaces keys/values: later updates must use the new ones
    k, v = torch.ones(4, 3, 1, 4), torch.zeros(4, 3, 1, 4)
    keys, values = reserved.update(k, v, 0)
    assert keys.shape == (4, 3, 6, 4) and bool((keys[:, :, -1] == 1).all())
    torch.testing.assert_close(keys[0::2, :, :5], keys[1::2, :, :5])


def test_reserve_cache_rejects_a_negative_size_and_leaves_other_layers():
    with pytest.raises(ValueError, match="extra=-1"):
        reserve_cache(_cache(), -1)
    cache = _cache()
    assert reserve_cache(cache, 0) is cache and type(cache.layers[0]) is not ReservedLayer
