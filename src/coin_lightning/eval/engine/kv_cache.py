"""A key/value cache with room reserved for the tokens greedy decoding will add.

``transformers``' ``DynamicLayer`` grows by ``torch.cat`` at every step, which copies the whole
cache of every layer for each new token: for 64 rows decoding 7 tokens after 80-token prompts on a
CPU that was 0.5 s of a 2.3 s decode, as much as the step's attention. :func:`reserve_cache` moves
each layer's keys and values into a buffer with ``extra`` free positions once; the layer's
``update`` then writes new tokens into that buffer in place and hands attention a view of its
filled part. :func:`~coin_lightning.eval.engine.decode.merge_prefilled` builds such layers directly
while it stacks prefilled batches, so decoding copies the cache once. Everything else of the cache
(``get_seq_length``, masks, ``crop``, batch selection) sees the same ``keys``/``values`` tensors as
with a plain ``DynamicLayer``.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class ReservedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` (``[B, kv_heads, T, D]``) are views of buffers
    ``[B, kv_heads, T + extra, D]``; :meth:`update` fills the free positions in place.

    Args:
        keys, values: the cached ``[B, kv_heads, T, D]`` tensors, or a list of ``[B_i, kv_heads, T_i, D]``
            parts (several prefilled batches): these are left-padded with zeros to the longest ``T`` and
            stacked on the batch dimension (:func:`~coin_lightning.eval.engine.decode.merge_prefilled`).
        extra: free positions reserved after ``T``.

    When a new chunk does not fit, or when something replaced ``keys``/``values`` (batch selection,
    ``batch_repeat_interleave``, ``crop``), it falls back to ``DynamicLayer.update`` (concatenation),
    so results never depend on the reservation, only speed does.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, extra: int):
        super().__init__()
        self._keys_buffer, filled = _stacked(keys, extra)
        self._values_buffer, _ = _stacked(values, extra)
        self.dtype, self.device = self._keys_buffer.dtype, self._keys_buffer.device
        self.is_initialized = True
        self._set_filled(filled)

    def _set_filled(self, n: int) -> None:
        self.keys = self._keys_buffer[..., :n, :]
        self.values = self._values_buffer[..., :n, :]
        self._views = (self.keys, self.values)

    def free(self) -> int:
        """Positions :meth:`update` can still write in place (0 once ``keys`` was replaced)."""
        untouched = self._views[0] is self.keys and self._views[1] is self.values
        return self._keys_buffer.shape[-2] - self.keys.shape[-2] if untouched else 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append ``[B, kv_heads, m, D]`` keys and values; return the filled ``[B, kv_heads, T + m, D]`` views."""
        n, m = self.keys.shape[-2], key_states.shape[-2]
        if m > self.free() or key_states.shape[0] != self.keys.shape[0]:
            return super().update(key_states, value_states, *args, **kwargs)
        self._keys_buffer[..., n:n + m, :].copy_(key_states)
        self._values_buffer[..., n:n + m, :].copy_(value_states)
        self._set_filled(n + m)
        return self.keys, self.values


def _stacked(parts, extra: int) -> tuple[torch.Tensor, int]:
    """One buffer ``[sum B_i, kv_heads, T + extra, D]`` holding ``parts`` left-padded to ``T``, and ``T``."""
    parts = [parts] if isinstance(parts, torch.Tensor) else list(parts)
    filled = max(t.shape[-2] for t in parts)
    first = parts[0]
    buffer = first.new_empty((sum(t.shape[0] for t in parts), *first.shape[1:-2], filled + extra, first.shape[-1]))
    row = 0
    for t in parts:
        pad = filled - t.shape[-2]
        rows = buffer[row:row + t.shape[0]]
        rows[..., :pad, :].zero_()
        rows[..., pad:filled, :].copy_(t)
        row += t.shape[0]
    return buffer, filled


def reserve_cache(cache, extra: int):
    """Give every plain ``DynamicLayer`` of ``cache`` room for ``extra`` more positions (in place).

    A :class:`ReservedLayer` with less free room is moved to a larger buffer. Layers of other kinds
    (sliding-window, static, quantized) and empty layers are left as they are. Costs one copy of the
    cache; returns ``cache``.

    Raises:
        ValueError: ``extra < 0``.
    """
    if extra < 0:
        raise ValueError(f"reserve_cache: extra={extra} must be >= 0")
    layers = getattr(cache, "layers", None)
    if extra == 0 or layers is None:
        return cache
    for i, layer in enumerate(layers):
        if type(layer) not in (DynamicLayer, ReservedLayer) or not layer.is_initialized or layer.keys.numel() == 0:
            continue
        if isinstance(layer, ReservedLayer) and layer.free() >= extra:
            continue
        layers[i] = ReservedLayer(layer.keys, layer.values, extra)
    return cache
