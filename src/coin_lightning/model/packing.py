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
losses and pooling are unchanged. Without packing arguments the attention function is transformers'
own SDPA (evaluation, generation, KV caches).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PACKED_SDPA = "coin_packed_sdpa"
"""Name of the attention implementation registered with transformers by :func:`register`."""


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

    @property
    def rows(self) -> int:
        """``R``."""
        return int(self.keep.shape[0])


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
    ``value`` ``[1, kv_heads, N, D]`` are laid out as ``[R, *, L, D]`` right-padded rows, causal SDPA
    runs per row (grouped-query heads shared, ``enable_gqa``), and the output comes back as
    ``[1, N, heads, D]`` (the layout transformers expects). The ``N x N`` mask transformers built for
    the packed sequence is not used. Without it: ``transformers.integrations.sdpa_attention``.

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
    R, L, index = packed.rows, packed.max_len, packed.attn_index

    def rows(x: torch.Tensor) -> torch.Tensor:  # [1, h, N, D] -> [R, h, L, D]
        h, d = x.shape[1], x.shape[3]
        flat = x[0].transpose(0, 1)  # [N, h, D]
        grid = flat.new_zeros(R * L, h, d).index_copy(0, index, flat)
        return grid.view(R, L, h, d).transpose(1, 2)

    gqa = query.shape[1] != key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        rows(query), rows(key), rows(value), is_causal=True, scale=scaling, enable_gqa=gqa
    )  # [R, heads, L, D]
    out = out.transpose(1, 2).reshape(R * L, out.shape[1], out.shape[3]).index_select(0, index)
    return out.unsqueeze(0), None


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


__all__ = ["PACKED_SDPA", "PackedRows", "pack_rows", "unpack", "packed_sdpa_attention", "register", "enable",
           "is_enabled"]
