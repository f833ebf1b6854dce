"""The reserved key/value cache: the same keys and values as transformers' growing cache, written in
place while there is room, concatenated after that."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from coin_lightning.eval.engine.kv_cache import ReservedLayer, reserve_cache


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


def test_reserved_layer_stacks_parts_left_padded():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 3, 5, 4, generator=g), torch.randn(1, 3, 3, 4, generator=g)
    layer = ReservedLayer([a, b], [a + 1, b + 1], extra=2)
    assert layer.keys.shape == (3, 3, 5, 4) and layer._keys_buffer.shape == (3, 3, 7, 4)
    torch.testing.assert_close(layer.keys[:2], a, rtol=0, atol=0)
    torch.testing.assert_close(layer.keys[2:, :, 2:], b, rtol=0, atol=0)
    assert float(layer.keys[2:, :, :2].abs().sum()) == 0.0
    torch.testing.assert_close(layer.values[2:, :, 2:], b + 1, rtol=0, atol=0)


def test_reserve_cache_grows_a_full_reserved_layer():
    cache = reserve_cache(_cache(), extra=1)
    assert cache.layers[0].free() == 1
    keys = cache.layers[0].keys.clone()
    reserve_cache(cache, extra=3)
    assert cache.layers[0].free() == 3
    torch.testing.assert_close(cache.layers[0].keys, keys, rtol=0, atol=0)
    kept = cache.layers[0]
    assert reserve_cache(cache, extra=2).layers[0] is kept  # room enough: left as it is
