"""Packed sequences for the training forward: no decoder compute on padding.

A CONTRACTS.md micro-batch is left-padded to its longest row (``[R, T]``); every linear layer of the
decoder would also run on the ``R T - N`` padding positions. :func:`pack_rows` lays the ``N`` real
tokens of all rows end to end as one sequence ``[1, N]`` with per-row position ids (the layout of
packed training in transformers' ``DataCollatorWithFlattening`` and FlashAttention's variable-length
kernels, Dao 2023), so projections, MLPs, norms and LoRA run on real tokens only.
:func:`packed_sdpa_attention` keeps attention within each row: it lays each row's queries, keys and
values out right-padded as ``[R, heads, L, head_dim]`` (``L`` = longest row) and runs causal SDPA,
whose ``is_causal`` kernels never let a real token see a later (padding) position, then gathers the
real positions back. :func:`unpack` returns hidden states to the batch's ``[R, T, H]`` layout, so
losses and pooling are unchanged. The evaluation prefill packs prompts the same way, after the
cached prefix they share (:func:`packed_prefix_attention`). Without packing arguments the attention
function is transformers' own SDPA (decoding steps, unpacked batches).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

PACKED_SDPA = "coin_packed_sdpa"
"""Name of the attention implementation registered with transformers by :func:`register`."""
FUSED_ATTENTION = "coin_fused_attention"
"""Attribute that marks an attention layer for :func:`packed_attention` (set by
:func:`coin_lightning.model.fused.use_fused_kernels`); unmarked layers attend through SDPA."""


@dataclass
class PackedRows:
    """The real tokens of a padded batch as one sequence, with the indices to undo it."""

    input_ids: torch.Tensor
    """Long ``[1, N]``: row 0's real tokens, then row 1's, ... (N = real tokens in the batch)."""
    position_ids: torch.Tensor
    """Long ``[1, N]``: position of each token within its row (0 at each row's first real token)."""
    keep: torch.Tensor
    """Bool ``[R, T]``: real positions of the padded batch (where :func:`unpack` writes)."""
    attn_index: torch.Tensor
    """Long ``[N]``: flat index of each packed token in the right-padded ``[R, max_len]`` layout."""
    max_len: int
    """Longest row (real tokens)."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    """Causal score biases and padding indices, built once per forward for all layers (:func:`packed_attention`)."""

    @property
    def rows(self) -> int:
        """``R``."""
        return int(self.keep.shape[0])

    def causal_bias(self, group: int, dtype: torch.dtype, prefix: int = 0) -> torch.Tensor:
        """``[L group, prefix + L]``: row ``l group + g`` (position ``l``, ``g``-th query head of a group)
        is 0 on the ``prefix`` keys every row shares and on its own keys ``j <= l``, ``-inf`` on later ones."""
        key = ("causal", group, dtype, prefix)
        if key not in self._cache:
            L = self.max_len
            bias = torch.full((L, prefix + L), float("-inf"), dtype=dtype, device=self.attn_index.device)
            self._cache[key] = bias.triu_(prefix + 1).repeat_interleave(group, dim=0)
        return self._cache[key]

    def pad_index(self) -> torch.Tensor:
        """Long ``[R L - N]``: the padding positions of the right-padded ``[R, L]`` layout (flat)."""
        if "pad" not in self._cache:
            free = torch.ones(self.rows * self.max_len, dtype=torch.bool, device=self.attn_index.device)
            free[self.attn_index] = False
            self._cache["pad"] = free.nonzero().squeeze(1)
        return self._cache["pad"]


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedRows:
    """Pack the real tokens of a padded batch (either padding side) into one sequence.

    Args:
        input_ids: Long ``[R, T]``.
        attention_mask: ``[R, T]``, 1 on real tokens; each row's real tokens must be contiguous.

    Returns:
        :class:`PackedRows`.

    Raises:
        ValueError: shapes differ, or a row has no real token or real tokens with gaps.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"pack_rows: input_ids {tuple(input_ids.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must be the same [R, T] shape")
    keep = attention_mask.bool()
    lens = keep.sum(1)
    first = keep.float().argmax(1)
    last = (keep.shape[1] - 1) - keep.flip(1).float().argmax(1)
    bad = (lens == 0) | (last - first + 1 != lens)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"pack_rows: row {row} has no real token or a gap in its attention_mask")
    device = input_ids.device
    positions = (keep.long().cumsum(1) - 1)[keep]  # [N], 0 at each row's first real token
    max_len = int(lens.max())
    row_of = torch.repeat_interleave(torch.arange(keep.shape[0], device=device), lens)
    return PackedRows(
        input_ids=input_ids[keep].unsqueeze(0),
        position_ids=positions.unsqueeze(0),
        keep=keep,
        attn_index=row_of * max_len + positions,
        max_len=max_len,
    )


def unpack(hidden: torch.Tensor, packed: PackedRows) -> torch.Tensor:
    """Scatter packed states ``[1, N, H]`` back to the padded layout ``[R, T, H]`` (zeros at padding).

    Differentiable: the gradient of a padded position is dropped, that of a real one flows back.
    """
    R, T = packed.keep.shape
    flat = hidden.reshape(-1, hidden.shape[-1])
    return flat.new_zeros(R, T, flat.shape[-1]).index_put((packed.keep,), flat)


ATTENTION_BLOCK = 32
"""Query positions per block of :func:`packed_attention`: block ``b`` scores only the keys up to its end."""


def _to_grid(flat: torch.Tensor, packed: PackedRows, group: int) -> torch.Tensor:
    """``[N, kv_heads * group, D]`` packed -> ``[R kv_heads, L group, D]`` right-padded with zeros,
    position-major within each key/value head (row ``l * group + g`` = position ``l``, head ``g``)."""
    R, L, (_, h, d) = packed.rows, packed.max_len, flat.shape
    grid = flat.new_empty(R * L, h, d).index_copy_(0, packed.attn_index, flat).index_fill_(0, packed.pad_index(), 0.0)
    kv = h // group
    return grid.view(R, L, kv, group, d).transpose(1, 2).reshape(R * kv, L * group, d)


def _from_grid(grid: torch.Tensor, packed: PackedRows, group: int) -> torch.Tensor:
    """Inverse of :func:`_to_grid` on the real positions: ``[R kv_heads, L group, D]`` -> ``[N, heads, D]``."""
    R, L, d = packed.rows, packed.max_len, grid.shape[-1]
    kv = grid.shape[0] // R
    rows = grid.view(R, kv, L, group, d).transpose(1, 2).reshape(R * L, kv * group, d)
    return rows.index_select(0, packed.attn_index)


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether the CPU kernels may run on ``x``: on CPU, in eager mode, without autocast (elsewhere
    kernels are fused by other means). Shared by these kernels and :mod:`coin_lightning.model.fused`."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu")


def _rows_after_prefix(x: torch.Tensor, packed: PackedRows, prefix: int) -> torch.Tensor:
    """``[1, h, prefix + N, D]`` (a shared prefix, then the packed tokens) -> ``[R, h, prefix + L, D]``:
    every row gets the prefix followed by its own tokens, right-padded with zeros."""
    R, L, (_, h, _, d) = packed.rows, packed.max_len, x.shape
    own = _to_grid(x[0, :, prefix:].transpose(0, 1), packed, 1).view(R, h, L, d)
    return torch.cat([x[:, :, :prefix].expand(R, h, prefix, d), own], dim=2) if prefix else own


def attention_blocks(L: int) -> list[tuple[int, int]]:
    """Query-position blocks ``[start, end)`` of about :data:`ATTENTION_BLOCK` positions covering ``[0, L)``."""
    size = -(-L // -(-L // ATTENTION_BLOCK))  # equal blocks, none longer than ATTENTION_BLOCK
    return [(s, min(L, s + size)) for s in range(0, L, size)]


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
        q = _to_grid(query[0].transpose(0, 1), packed, group)  # [R kv, L group, D]
        k = _to_grid(key[0].transpose(0, 1), packed, 1)  # [R kv, L, D]
        v = _to_grid(value[0].transpose(0, 1), packed, 1)
        out, probs = _block_attention(q, k, v, packed.causal_bias(group, q.dtype), packed.max_len, 0, scale)
        ctx.save_for_backward(q, k, v, *probs)
        ctx.scale, ctx.packed, ctx.group = scale, packed, group
        return _from_grid(out, packed, group).unsqueeze(0)  # [1, N, heads, D]

    @staticmethod
    def backward(ctx, grad):
        q, k, v, *probs = ctx.saved_tensors
        packed, group = ctx.packed, ctx.group
        grad_out = _to_grid(grad[0], packed, group)  # [R kv, L group, D]
        grad_q, grad_k, grad_v = torch.empty_like(q), None, None
        blocks = list(zip(attention_blocks(packed.max_len), probs))
        for (start, end), p in reversed(blocks):  # the last block sees every key: it starts the sums
            rows = slice(start * group, end * group)
            g = grad_out[:, rows]
            grad_scores = torch._softmax_backward_data(torch.bmm(g, v[:, :end].transpose(1, 2)), p, -1, p.dtype)
            grad_q[:, rows] = torch.bmm(grad_scores, k[:, :end])
            dv = torch.bmm(p.transpose(1, 2), g)  # summed over the group's query heads
            dk = torch.bmm(grad_scores.transpose(1, 2), q[:, rows])
            if grad_v is None:
                grad_v, grad_k = dv, dk
            else:
                grad_v[:, :end].add_(dv), grad_k[:, :end].add_(dk)
        grad_q.mul_(ctx.scale), grad_k.mul_(ctx.scale)

        def back(t: torch.Tensor, g: int) -> torch.Tensor:  # -> [1, h, N, D]
            return _from_grid(t, packed, g).transpose(0, 1).unsqueeze(0)

        return back(grad_q, group), back(grad_k, 1), back(grad_v, 1), None, None


def packed_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: PackedRows, scale: float
) -> torch.Tensor:
    """Causal attention within each row of a packed sequence, as one autograd node (the CPU kernel).

    Each row's queries, keys and values are laid out right-padded (``L`` = longest row); the
    ``group = heads / kv_heads`` query heads that share a key/value head (grouped-query attention,
    Ainslie et al. 2023) are stacked position-major, ``[R kv_heads, L group, D]``, so the scores of a
    block of query positions ``[s, e)`` are one batched matmul against keys ``[0, e)`` only
    (``b`` blocks of at most :data:`ATTENTION_BLOCK` positions: ``(b + 1) / 2b`` of the full ``L x L``
    products, 5/8 for four), with the causal bias added by ``baddbmm``, a softmax, and one batched matmul with
    the values. The backward is the attention gradient (Vaswani et al. 2017) in four batched matmuls
    and a softmax backward per block, from the probabilities kept by the forward
    (``[R heads, L, L]`` at most). A real query never sees a later (padding) key; padding queries are
    dropped on the way out. On a CPU with short rows this is faster than the tiled flash kernel
    behind SDPA (FLOPs: ``experiments/benchmarks/flops.py``).

    Args:
        query: ``[1, heads, N, D]``.
        key, value: ``[1, kv_heads, N, D]``, ``heads`` a multiple of ``kv_heads``.
        packed: the :class:`PackedRows` of the batch.
        scale: score scale (``D ** -0.5`` for LLaMA).

    Returns:
        ``[1, N, heads, D]`` (the layout transformers expects from an attention function).
    """
    return _PackedAttention.apply(query, key, value, scale, packed)


def packed_prefix_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: PackedRows, scale: float
) -> torch.Tensor:
    """Inference kernel: packed rows that also attend to a cached prefix all of them share.

    The evaluation prefill (:func:`coin_lightning.eval.engine.decode.prefill`) runs the suffixes of a batch
    of prompts as one packed sequence after the key/value cache of their common prefix (batch 1,
    ``P`` positions), so ``key`` and ``value`` hold the prefix followed by the packed tokens. Every
    row's keys become ``[prefix | own row]`` (``[R kv_heads, P + L, D]``); query position ``l`` sees
    the whole prefix and its row's keys ``j <= l``, in the blocks of :func:`packed_attention`.

    Args:
        query: ``[1, heads, N, D]``.
        key, value: ``[1, kv_heads, P + N, D]``.
        packed: the :class:`PackedRows` of the suffixes.
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
        return _rows_after_prefix(x, packed, P).flatten(0, 1)

    q = _to_grid(query[0].transpose(0, 1), packed, group)  # [R kv, L group, D]
    out, _ = _block_attention(q, keys(key), keys(value), packed.causal_bias(group, q.dtype, P), packed.max_len,
                              P, scale)
    return _from_grid(out, packed, group).unsqueeze(0)




def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention function (transformers ``AttentionInterface``) for packed rows, else plain SDPA.

    With ``coin_packed=PackedRows`` in ``kwargs`` (passed through the decoder call by
    :meth:`coin_lightning.model.module.CoinModule.encode`): ``query`` ``[1, heads, N, D]``, ``key`` and
    ``value`` ``[1, kv_heads, N, D]`` attend causally within each row and the output comes back as
    ``[1, N, heads, D]`` (the layout transformers expects). For a layer marked with
    :data:`FUSED_ATTENTION`, on CPU in fp32 eager mode, this is :func:`packed_attention`; otherwise
    (unmarked, GPU, autocast, ``torch.compile``) the rows are laid out as
    ``[R, *, L, D]`` right-padded and run through causal SDPA (grouped-query heads shared,
    ``enable_gqa``), which dispatches to flash kernels. The ``N x N`` mask transformers built for the
    packed sequence is not used. When ``key`` and ``value`` are longer than ``query`` (``[1, kv_heads,
    P + N, D]``: a cached prefix before the packed tokens, the evaluation prefill) every row also
    attends to those ``P`` positions (:func:`packed_prefix_attention`, or SDPA with the mask
    ``[L, P + L]``). Without ``coin_packed``: ``transformers.integrations.sdpa_attention``.

    Raises:
        ValueError: attention dropout > 0 with packed rows (LLaMA uses none).
    """
    packed = kwargs.pop("coin_packed", None)
    if packed is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if dropout:
        raise ValueError("packed_sdpa_attention: attention dropout is not supported")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    prefix = key.shape[2] - query.shape[2]  # cached positions before the packed tokens (evaluation prefill)
    if getattr(module, FUSED_ATTENTION, False) and query.dtype == torch.float32 and eager_cpu(query):
        if prefix:
            return packed_prefix_attention(query, key, value, packed, scale), None
        return packed_attention(query, key, value, packed, scale), None
    R, L = packed.rows, packed.max_len
    gqa = query.shape[1] != key.shape[1]
    mask = None if not prefix else torch.ones(L, prefix + L, dtype=torch.bool, device=query.device).tril_(prefix)
    q, k, v = (_rows_after_prefix(x, packed, shared) for x, shared in ((query, 0), (key, prefix), (value, prefix)))
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=not prefix, scale=scale, enable_gqa=gqa
    )  # [R, heads, L, D]
    return _from_grid(out.reshape(R * out.shape[1], L, out.shape[3]), packed, 1).unsqueeze(0), None


def register() -> None:
    """Register :data:`PACKED_SDPA` with transformers' attention and mask interfaces (idempotent).

    Masks are built as for ``sdpa`` (the packed path ignores them).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


def enable(model) -> None:
    """Switch a transformers model from ``sdpa`` to :data:`PACKED_SDPA` (same results on padded input).

    Raises:
        ValueError: the model uses another attention implementation (e.g. ``eager``).
    """
    current = model.config._attn_implementation
    if current == PACKED_SDPA:
        return
    if current != "sdpa":
        raise ValueError(f"model.packed_sequences needs model.attn_implementation=sdpa, got {current!r}")
    register()
    model.set_attn_implementation(PACKED_SDPA)


def is_enabled(model) -> bool:
    """Whether ``model`` (a transformers model) attends with :data:`PACKED_SDPA`."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == PACKED_SDPA


__all__ = ["ATTENTION_BLOCK", "FUSED_ATTENTION", "PACKED_SDPA", "PackedRows", "attention_blocks", "eager_cpu", "enable",
           "is_enabled", "pack_rows", "packed_attention", "packed_prefix_attention", "packed_sdpa_attention",
           "register", "unpack"]
