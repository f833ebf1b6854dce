"""Batched forward passes for evaluation: the prefill of prompts (optionally after a cached shared
prefix) and label-word log-likelihoods; greedy generation continues from the prefill with
``model.generate`` (:mod:`coin_lightning.eval.engine.generation`).

Layout of a batch: every row is ``[shared prefix | left padding | row suffix]``. The prefix (all
tokens the prompts of one instruction share, i.e. the instruction and the prompt wrapper up to the
content) is encoded once with batch size 1; its key/value cache is repeated to the batch and the
suffixes are processed after it with the attention mask ``[prefix ones | suffix mask]`` and explicit
position ids (``prefix length + running count of real suffix tokens``), so every real token sees the
same keys at the same positions as in one unpadded pass over the whole prompt. With ``prefix=None``
rows are whole prompts, left-padded, with the same position rule: the uncached reference path.

Shapes: ``B`` rows, ``P`` prefix tokens, ``S`` padded suffix length, ``V`` vocabulary, ``K`` label
words. All functions run under ``torch.inference_mode()``; callers put the model in ``eval()``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache

from coin_lightning.losses import pool_hidden
from coin_lightning.model.packing import PackedRows, is_enabled, pack_rows, unpack


@dataclass
class Prefix:
    """The encoded shared prefix of one group of prompts."""

    ids: list[int]
    """Its token ids (``P`` of them)."""
    cache: Any
    """The model's key/value cache for them, batch size 1 (a ``transformers`` ``Cache``)."""


@dataclass
class Prefilled:
    """The state after encoding a batch of prompts: ready to decode or to score continuations."""

    last_logits: torch.Tensor
    """Float ``[B, V]``: next-token logits after each prompt's last token."""
    cache: Any
    """Key/value cache for ``[B, P + S]`` positions (mutated by later calls)."""
    attention_mask: torch.Tensor
    """Long ``[B, P + S]``: 1 on prefix and real suffix tokens, 0 on padding."""
    next_position: torch.Tensor
    """Long ``[B]``: the position id of the first token after each prompt (its real length)."""
    last_hidden: torch.Tensor | None = None
    """Float ``[B, H]``: final-layer hidden state at each prompt's last token (when asked), pooled with
    :func:`coin_lightning.losses.pool_hidden` (``last``: the last non-padding token), as in training."""


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, capped so every sequence keeps at least one token.

    Raises:
        ValueError: no sequences, or an empty one.
    """
    shortest = min((len(s) for s in sequences), default=0)
    if shortest == 0:
        raise ValueError("shared_prefix_length needs non-empty token sequences")
    return min(len(os.path.commonprefix([list(s) for s in sequences])), shortest - 1)


def encode_prefix(model, ids: Sequence[int]) -> Prefix | None:
    """Encode ``ids`` once (batch 1, positions ``0..P-1``: an unpacked :func:`prefill` of the one row);
    ``None`` for an empty prefix."""
    if not ids:
        return None
    return Prefix(ids=list(ids), cache=prefill(model, [ids], 0, packed=False).cache)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, device=None, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists (on the ``left`` or ``right``) to ``[B, S]`` Long ids and a ``[B, S]`` 0/1 mask."""
    ids = [torch.tensor(list(r), dtype=torch.long) for r in rows]
    padded = pad_sequence(ids, batch_first=True, padding_value=pad_id, padding_side=side)
    mask = pad_sequence([torch.ones_like(r) for r in ids], batch_first=True, padding_value=0, padding_side=side)
    return padded.to(device), mask.to(device)


def packs_prompts(model) -> bool:
    """Whether :func:`prefill` runs a batch as one packed sequence: the model attends with
    :data:`coin_lightning.model.packing.PACKED_SDPA` (``model.packed_sequences``) and has no
    sliding-window attention (whose caches and masks the packed path does not build)."""
    return is_enabled(model) and getattr(model.config, "sliding_window", None) is None


def prefill(model, suffixes: Sequence[Sequence[int]], pad_id: int, prefix: Prefix | None = None,
            hidden: bool = False, packed: bool | None = None) -> Prefilled:
    """Encode a batch of prompts ``prefix.ids + suffix`` (or whole ``suffixes`` without a prefix).

    With ``packed`` the suffixes' real tokens run end to end as one sequence (after the prefix
    cache, :func:`coin_lightning.model.packing.packed_prefix_attention`), so no layer computes on
    padding, as in training (:mod:`coin_lightning.model.packing`); the key/value cache is then laid
    out per row as in the padded path. Both give the same state up to floating-point rounding.

    Args:
        model: a causal LM taking ``input_ids, attention_mask, position_ids, past_key_values``.
        suffixes: ``B`` token lists, each non-empty.
        pad_id: padding token id (never attended to).
        prefix: the shared encoded prefix, or ``None``.
        hidden: also return the last layer's hidden state at each prompt's last token.
        packed: pack the suffixes; ``None``: when :func:`packs_prompts` says the model can.

    Returns:
        A :class:`Prefilled` state.

    Raises:
        ValueError: ``packed=True`` for a model that :func:`packs_prompts` rules out.
    """
    can_pack = packs_prompts(model)
    if packed and not can_pack:
        raise ValueError("prefill(packed=True) needs a model attending with packed rows (model.packed_sequences, "
                         "no sliding window)")
    device = next(model.parameters()).device
    ids, mask = pad_rows(suffixes, pad_id, device)
    offset = len(prefix.ids) if prefix is not None else 0
    full_mask = torch.cat([mask.new_ones((len(suffixes), offset)), mask], dim=1)
    if can_pack and packed is not False:
        return _prefill_packed(model, ids, mask, full_mask, prefix, hidden)
    positions = offset + (mask.cumsum(dim=1) - 1).clamp(min=0)
    cache = copy.deepcopy(prefix.cache) if prefix is not None else None
    if cache is not None:
        cache.batch_repeat_interleave(len(suffixes))
    with torch.inference_mode():
        out = model(
            input_ids=ids,
            attention_mask=full_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            output_hidden_states=hidden,
            # the last position as an index tensor: ``logits_to_keep=1`` hands the LM head a strided
            # [B, 1, H] slice, which F.linear runs as a batched matmul over the weight repeated B times (on
            # a CPU: the V x H matrix read once per row, 100 ms for 16 rows of SmolLM2); the index gathers
            # a contiguous copy, which runs as one matmul
            logits_to_keep=torch.tensor([ids.shape[1] - 1], device=device),
        )
    return Prefilled(
        last_logits=out.logits[:, -1].float(),
        cache=out.past_key_values,
        attention_mask=full_mask,
        next_position=positions[:, -1] + 1,
        last_hidden=pool_hidden(out.hidden_states[-1], mask, "last").float() if hidden else None,
    )


def _prefill_packed(model, ids: torch.Tensor, mask: torch.Tensor, full_mask: torch.Tensor, prefix: Prefix | None,
                    hidden: bool) -> Prefilled:
    """:func:`prefill` on packed rows: ``ids``/``mask`` ``[B, S]`` left-padded suffixes, ``full_mask`` ``[B, P + S]``."""
    rows = pack_rows(ids, mask)
    offset = full_mask.shape[1] - mask.shape[1]
    lengths = mask.sum(dim=1)
    ends = lengths.cumsum(dim=0) - 1  # each row's last token in the packed sequence
    with torch.inference_mode():
        out = model(
            input_ids=rows.input_ids,
            position_ids=rows.position_ids + offset,
            past_key_values=copy.deepcopy(prefix.cache) if prefix is not None else None,
            use_cache=True,
            output_hidden_states=hidden,
            logits_to_keep=ends,
            coin_packed=rows,
        )
        layers = [tuple(_rows_cache(t, rows, offset) for t in (layer.keys, layer.values))
                  for layer in out.past_key_values.layers]
    return Prefilled(
        last_logits=out.logits[0].float(),
        cache=DynamicCache(ddp_cache_data=layers),
        attention_mask=full_mask,
        next_position=offset + lengths,
        last_hidden=out.hidden_states[-1][0, ends].float() if hidden else None,
    )


def _rows_cache(t: torch.Tensor, rows: PackedRows, offset: int) -> torch.Tensor:
    """Packed cache ``[1, kv_heads, P + N, D]`` -> per row ``[B, kv_heads, P + S, D]``: the prefix, then
    each row's tokens in the batch's left-padded layout (:func:`~coin_lightning.model.packing.unpack`;
    zeros at padding, never attended to: the mask is 0 there)."""
    (_, kv, _, dim), (B, S) = t.shape, rows.keep.shape
    own = unpack(t[:, :, offset:].transpose(1, 2).reshape(1, -1, kv * dim), rows).view(B, S, kv, dim)
    return torch.cat([t[:, :, :offset].expand(B, kv, offset, dim), own.transpose(1, 2)], dim=2)


def label_log_likelihoods(model, state: Prefilled, candidates: Sequence[Sequence[int]], pad_id: int,
                          max_rows: int = 256) -> torch.Tensor:
    """Summed log-probability (nats) of each candidate's tokens as the continuation of each prompt.

    The first token is scored from ``state.last_logits``; the rest by teacher-forced passes over the
    ``B * K`` (prompt, candidate) pairs, reusing the prompt cache repeated per candidate (in chunks of
    at most ``max_rows`` rows). Consumes ``state.cache``.

    Args:
        candidates: ``K`` non-empty token lists (the label words' tokens).
        max_rows: bound on ``B * candidates per pass`` (memory of the repeated cache).

    Returns:
        Float ``[B, K]``.
    """
    if not candidates or any(len(c) == 0 for c in candidates):
        raise ValueError("label_log_likelihoods needs non-empty candidate token lists")
    scores = torch.log_softmax(state.last_logits, dim=-1)[:, [c[0] for c in candidates]]
    longer = [j for j, c in enumerate(candidates) if len(c) > 1]
    step = max(1, max_rows // state.last_logits.shape[0])
    for start in range(0, len(longer), step):
        chunk = longer[start:start + step]
        cache = state.cache if start + step >= len(longer) else copy.deepcopy(state.cache)  # the last chunk consumes it
        scores[:, chunk] += _continuation_log_likelihoods(model, state, cache, [candidates[j] for j in chunk], pad_id)
    return scores


def _continuation_log_likelihoods(model, state: Prefilled, cache, candidates: Sequence[Sequence[int]],
                                  pad_id: int) -> torch.Tensor:
    """Float ``[B, K]``: summed log-probabilities of tokens ``1..`` of each candidate (consumes ``cache``)."""
    device = state.last_logits.device
    batch, k = state.last_logits.shape[0], len(candidates)
    feed, valid = pad_rows([c[:-1] for c in candidates], pad_id, device, "right")
    target = pad_rows([c[1:] for c in candidates], 0, device, "right")[0]
    cache.batch_repeat_interleave(k)  # rows ordered (b0,k0), (b0,k1), ...
    mask = torch.cat([state.attention_mask.repeat_interleave(k, dim=0), valid.repeat(batch, 1)], dim=1)
    positions = state.next_position.repeat_interleave(k)[:, None] + torch.arange(feed.shape[1], device=device)[None]
    with torch.inference_mode():
        out = model(
            input_ids=feed.repeat(batch, 1),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    picked = logp.gather(-1, target.repeat(batch, 1)[..., None])[..., 0]
    return (picked * valid.repeat(batch, 1)).sum(dim=1).view(batch, k)
