"""Causal attention within each packed row on CPU: batched matmuls, one autograd node.

The rows of a :class:`~coin_lightning.model.packing.PackedRows` sequence (``[1, heads, N, D]``) are laid
out right-padded as grids ``[R kv_heads, L group, D]`` (``L`` = longest row, ``group = heads /
kv_heads`` query heads per key/value head, grouped-query attention, Ainslie et al. 2023), so that the
scores of a block of query positions ``[s, e)`` are one batched matmul against keys ``[0, e)`` only.
On a CPU with short rows this is faster than the tiled flash kernel behind SDPA (FLOPs:
``experiments/benchmarks/flops.py``). Only public torch operations are used; the backward is written
out (:class:`_PackedAttention`) so that it reuses the probabilities the forward kept.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from coin_lightning.model.packing import PackedRows

ATTENTION_BLOCK = 32
"""Query positions per block of :func:`packed_attention`: block ``b`` scores only the keys up to its end."""


def causal_bias(packed: PackedRows, group: int, dtype: torch.dtype, prefix: int = 0) -> torch.Tensor:
    """``[L group, prefix + L]``: row ``l group + g`` (position ``l``, ``g``-th query head of a group) is 0
    on the ``prefix`` keys every row shares and on its own keys ``j <= l``, ``-inf`` on later ones.
    Built once per forward (kept in ``packed.scratch``) for all layers."""
    key = ("causal", group, dtype, prefix)
    if key not in packed.scratch:
        L = packed.max_len
        bias = torch.full((L, prefix + L), float("-inf"), dtype=dtype, device=packed.attn_index.device)
        packed.scratch[key] = bias.triu_(prefix + 1).repeat_interleave(group, dim=0)
    return packed.scratch[key]


def pad_index(packed: PackedRows) -> torch.Tensor:
    """Long ``[R L - N]``: the padding positions of the right-padded ``[R, L]`` layout (flat)."""
    if "pad" not in packed.scratch:
        free = torch.ones(packed.rows * packed.max_len, dtype=torch.bool, device=packed.attn_index.device)
        free[packed.attn_index] = False
        packed.scratch["pad"] = free.nonzero().squeeze(1)
    return packed.scratch["pad"]


def to_grid(flat: torch.Tensor, packed: PackedRows, group: int) -> torch.Tensor:
    """``[N, kv_heads * group, D]`` packed -> ``[R kv_heads, L group, D]`` right-padded with zeros,
    position-major within each key/value head (row ``l * group + g`` = position ``l``, head ``g``)."""
    R, L, (_, h, d) = packed.rows, packed.max_len, flat.shape
    grid = flat.new_empty(R * L, h, d).index_copy_(0, packed.attn_index, flat).index_fill_(0, pad_index(packed), 0.0)
    kv = h // group
    return grid.view(R, L, kv, group, d).transpose(1, 2).reshape(R * kv, L * group, d)


def from_grid(grid: torch.Tensor, packed: PackedRows, group: int) -> torch.Tensor:
    """Inverse of :func:`to_grid` on the real positions: ``[R kv_heads, L group, D]`` -> ``[N, heads, D]``."""
    R, L, d = packed.rows, packed.max_len, grid.shape[-1]
    kv = grid.shape[0] // R
    rows = grid.view(R, kv, L, group, d).transpose(1, 2).reshape(R * L, kv * group, d)
    return rows.index_select(0, packed.attn_index)


def rows_after_prefix(x: torch.Tensor, packed: PackedRows, prefix: int) -> torch.Tensor:
    """``[1, h, prefix + N, D]`` (a shared prefix, then the packed tokens) -> ``[R, h, prefix + L, D]``:
    every row gets the prefix followed by its own tokens, right-padded with zeros."""
    R, L, (_, h, _, d) = packed.rows, packed.max_len, x.shape
    own = to_grid(x[0, :, prefix:].transpose(0, 1), packed, 1).view(R, h, L, d)
    return torch.cat([x[:, :, :prefix].expand(R, h, prefix, d), own], dim=2) if prefix else own


def attention_blocks(L: int) -> list[tuple[int, int]]:
    """Query-position blocks ``[start, end)`` of about :data:`ATTENTION_BLOCK` positions covering ``[0, L)``."""
    size = -(-L // -(-L // ATTENTION_BLOCK))  # equal blocks, none longer than ATTENTION_BLOCK
    return [(s, min(L, s + size)) for s in range(0, L, size)]


def softmax_backward(grad: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Gradient of the scores from that of ``probs = softmax(scores, -1)``:
    ``probs * (grad - sum(grad * probs, -1))`` (the softmax Jacobian-vector product). Overwrites ``grad``."""
    return grad.sub_((grad * probs).sum(-1, keepdim=True)).mul_(probs)


def _block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, length: int,
                     prefix: int, scale: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Softmax attention of grids ``q`` ``[R kv, L group, D]`` over ``k``, ``v`` ``[R kv, prefix + L, D]``
    with ``bias`` ``[L group, prefix + L]``, a block of query positions ``[s, e)`` at a time against keys
    ``[0, prefix + e)``: the output ``[R kv, L group, D]`` and each block's probabilities."""
    group = q.shape[1] // length
    out, probs = torch.empty_like(q), []
    for start, end in attention_blocks(length):
        rows, keys = slice(start * group, end * group), prefix + end  # later keys are masked for these rows
        p = torch.baddbmm(bias[rows, :keys], q[:, rows], k[:, :keys].transpose(1, 2), alpha=scale).softmax(-1)
        out[:, rows] = torch.bmm(p, v[:, :keys])
        probs.append(p)
    return out, probs


class _PackedAttention(torch.autograd.Function):
    """Block-causal attention within each packed row with batched matmuls; see :func:`packed_attention`."""

    @staticmethod
    def forward(ctx, query, key, value, scale, packed):
        group = query.shape[1] // key.shape[1]
        q = to_grid(query[0].transpose(0, 1), packed, group)  # [R kv, L group, D]
        k = to_grid(key[0].transpose(0, 1), packed, 1)  # [R kv, L, D]
        v = to_grid(value[0].transpose(0, 1), packed, 1)
        out, probs = _block_attention(q, k, v, causal_bias(packed, group, q.dtype), packed.max_len, 0, scale)
        ctx.save_for_backward(q, k, v, *probs)
        ctx.scale, ctx.packed, ctx.group = scale, packed, group
        return from_grid(out, packed, group).unsqueeze(0)  # [1, N, heads, D]

    @staticmethod
    def backward(ctx, grad):
        q, k, v, *probs = ctx.saved_tensors
        packed, group = ctx.packed, ctx.group
        grad_out = to_grid(grad[0], packed, group)  # [R kv, L group, D]
        grad_q, grad_k, grad_v = torch.empty_like(q), None, None
        blocks = list(zip(attention_blocks(packed.max_len), probs))
        for (start, end), p in reversed(blocks):  # the last block sees every key: it starts the sums
            rows = slice(start * group, end * group)
            g = grad_out[:, rows]
            grad_scores = softmax_backward(torch.bmm(g, v[:, :end].transpose(1, 2)), p)
            grad_q[:, rows] = torch.bmm(grad_scores, k[:, :end])
            dv = torch.bmm(p.transpose(1, 2), g)  # summed over the group's query heads
            dk = torch.bmm(grad_scores.transpose(1, 2), q[:, rows])
            if grad_v is None:
                grad_v, grad_k = dv, dk
            else:
                grad_v[:, :end].add_(dv), grad_k[:, :end].add_(dk)
        grad_q.mul_(ctx.scale), grad_k.mul_(ctx.scale)

        def back(t: torch.Tensor, g: int) -> torch.Tensor:  # -> [1, h, N, D]
            return from_grid(t, packed, g).transpose(0, 1).unsqueeze(0)

        return back(grad_q, group), back(grad_k, 1), back(grad_v, 1), None, None


def packed_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: PackedRows, scale: float
) -> torch.Tensor:
    """Causal attention within each row of a packed sequence, as one autograd node (the CPU kernel).

    Blocks of at most :data:`ATTENTION_BLOCK` query positions are scored against the keys up to their
    end (``b`` blocks: ``(b + 1) / 2b`` of the full ``L x L`` products, 5/8 for four), with the causal
    bias added by ``baddbmm``, a softmax, and one batched matmul with the values. The backward is the
    attention gradient (Vaswani et al. 2017) in four batched matmuls and a softmax backward
    (:func:`softmax_backward`) per block, from the probabilities kept by the forward (``[R heads, L, L]``
    at most). A real query never sees a later (padding) key; padding queries are dropped on the way out.

    Args:
        query: ``[1, heads, N, D]``.
        key, value: ``[1, kv_heads, N, D]``, ``heads`` a multiple of ``kv_heads``.
        packed: the :class:`~coin_lightning.model.packing.PackedRows` of the batch.
        scale: score scale (``D ** -0.5`` for LLaMA).

    Returns:
        ``[1, N, heads, D]`` (the layout transformers expects from an attention function).
    """
    return _PackedAttention.apply(query, key, value, scale, packed)


def packed_prefix_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: PackedRows, scale: float
) -> torch.Tensor:
    """Inference kernel: packed rows that also attend to a cached prefix all of them share.

    The suffixes of a batch of prompts run as one packed sequence after the key/value cache of their
    common prefix (batch 1, ``P`` positions), so ``key`` and ``value`` hold the prefix followed by the
    packed tokens. Every row's keys become ``[prefix | own row]`` (``[R kv_heads, P + L, D]``); query
    position ``l`` sees the whole prefix and its row's keys ``j <= l``, in the blocks of
    :func:`packed_attention`.

    Args:
        query: ``[1, heads, N, D]``.
        key, value: ``[1, kv_heads, P + N, D]``.
        packed: the :class:`~coin_lightning.model.packing.PackedRows` of the suffixes.
        scale: score scale.

    Returns:
        ``[1, N, heads, D]``.

    Raises:
        ValueError: gradients are required (this kernel has no backward; training has no prefix).
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
        raise ValueError("packed_prefix_attention is for inference: it has no backward")
    group, P = query.shape[1] // key.shape[1], key.shape[2] - query.shape[2]

    def keys(x: torch.Tensor) -> torch.Tensor:  # [1, kv, P + N, D] -> [R kv, P + L, D]
        return rows_after_prefix(x, packed, P).flatten(0, 1)

    q = to_grid(query[0].transpose(0, 1), packed, group)  # [R kv, L group, D]
    out, _ = _block_attention(q, keys(key), keys(value), causal_bias(packed, group, q.dtype, P), packed.max_len,
                              P, scale)
    return from_grid(out, packed, group).unsqueeze(0)

