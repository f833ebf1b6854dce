"""A key/value cache with room reserved for the tokens greedy decoding will add.

``transformers``' ``DynamicLayer`` grows by ``torch.cat`` at every step, which copies the whole
cache of every layer for each new token: for 64 rows decoding 7 tokens after 80-token prompts on a
CPU that was 0.5 s of a 2.3 s decode, as much as the step's attention. :func:`reserve_cache` moves
each layer's keys and values into a buffer with ``extra`` free positions once; the layer's
``update`` then writes new tokens into that buffer in place and hands attention a view of its
filled part. Everything else of the cache (``get_seq_length``, masks, ``crop``, batch selection)
sees the same ``keys``/``values`` tensors as with a plain ``DynamicLayer``.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` (``[B, kv_heads, T, D]``) are views of buffers
    ``[B, kv_heads, T + free, D]``; :meth:`update` fills the free positions in place.

    When a new chunk does not fit, or when something replaced ``keys``/``values`` (batch selection,
    ``batch_repeat_interleave``, ``crop``), it falls back to ``DynamicLayer.update`` (concatenation),
    so results never depend on the reservation, only speed does.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, extra: int):
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        filled = keys.shape[-2]
        self._keys_buffer = keys.new_empty((*keys.shape[:-2], filled + extra, keys.shape[-1]))
        self._values_buffer = values.new_empty((*values.shape[:-2], filled + extra, values.shape[-1]))
        self._keys_buffer[..., :filled, :].copy_(keys)
        self._values_buffer[..., :filled, :].copy_(values)
        self._set_filled(filled)

    def _set_filled(self, n: int) -> None:
        self.keys = self._keys_buffer[..., :n, :]
        self.values = self._values_buffer[..., :n, :]
        self._views = (self.keys, self.values)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append ``[B, kv_heads, m, D]`` keys and values; return the filled ``[B, kv_heads, T + m, D]`` views."""
        n, m = self.keys.shape[-2], key_states.shape[-2]
        untouched = self._views[0] is self.keys and self._views[1] is self.values
        if not untouched or n + m > self._keys_buffer.shape[-2] or key_states.shape[0] != self.keys.shape[0]:
            return super().update(key_states, value_states, *args, **kwargs)
        self._keys_buffer[..., n:n + m, :].copy_(key_states)
        self._values_buffer[..., n:n + m, :].copy_(value_states)
        self._set_filled(n + m)
        return self.keys, self.values


def reserve_cache(cache, extra: int):
    """Give every plain ``DynamicLayer`` of ``cache`` room for ``extra`` more positions (in place).

    Layers of other kinds (sliding-window, static, quantized) and empty layers are left as they are.
    Costs one copy of the cache; returns ``cache``.

    Raises:
        ValueError: ``extra < 0``.
    """
    if extra < 0:
        raise ValueError(f"reserve_cache: extra={extra} must be >= 0")
    layers = getattr(cache, "layers", None)
    if extra == 0 or layers is None:
        return cache
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel() > 0:
            layers[i] = ReservedLayer(layer.keys, layer.values, extra)
    return cache
