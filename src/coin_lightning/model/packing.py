"""Packed rows: the training forward on real tokens only, with no decoder compute on padding.

A CONTRACTS.md micro-batch is left-padded to its longest row (``[R, T]``); every linear layer of the
decoder would also run on the ``R T - N`` padding positions. :func:`pack_rows` lays the ``N`` real
tokens of all rows end to end as one sequence ``[1, N]`` with per-row position ids that restart at 0
(the layout of transformers' ``DataCollatorWithFlattening`` and FlashAttention's variable-length
kernels, Dao 2023), so projections, MLPs, norms and LoRA run on real tokens only; attention stays
within each row. :func:`unpack` returns hidden states to the batch's ``[R, T, H]`` layout, so losses
and pooling are unchanged.

How attention keeps to each row depends on the attention implementation (:func:`packing_mode`,
chosen once from the ``model`` config when the model is built):

- :data:`TRANSFORMERS` (``flash_attention_*``, ``flex_attention``): transformers itself splits the
  packed sequence at the restarting ``position_ids`` (FlashAttention's varlen kernels, or a
  block-diagonal flex mask); no project code runs inside attention.
- :data:`KERNEL` (``sdpa`` with ``model.cpu_speedups``): the project's packed attention
  (:mod:`coin_lightning.speedups.attention`) receives the :class:`PackedRows` as ``coin_packed``.
- ``None``: padded rows (``model.packed_sequences: false``, or ``sdpa``/``eager`` without
  ``model.cpu_speedups``: transformers' own packed path would attend over the whole ``N x N``
  sequence with a block-diagonal mask, quadratic in the number of rows).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

TRANSFORMERS = "transformers"
"""Packed rows through transformers' own attention (restarting ``position_ids``)."""
KERNEL = "kernel"
"""Packed rows through the project's attention function (``coin_packed`` keyword)."""
TRANSFORMERS_PACKED = ("flash_attention_2", "flash_attention_3", "flex_attention")
"""``model.attn_implementation`` values whose transformers kernels split packed rows themselves."""
MODE_ATTRIBUTE = "coin_packing"
"""Attribute of the base model holding its packing mode (set by :func:`set_packing_mode`)."""


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
    scratch: dict = field(default_factory=dict, repr=False, compare=False)
    """Tensors an attention kernel derives from these rows once per forward and reuses in every layer."""

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
        raise ValueError(f"pack_rows: row {int(bad.nonzero()[0, 0])} has no real token or a gap in its attention_mask")
    positions = (keep.long().cumsum(1) - 1)[keep]  # [N], 0 at each row's first real token
    max_len = int(lens.max())
    row_of = torch.repeat_interleave(torch.arange(keep.shape[0], device=input_ids.device), lens)
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


def choose_packing_mode(packed_sequences: bool, attn_implementation: str, cpu_speedups: bool) -> str | None:
    """The packing mode for a ``model`` config: :data:`TRANSFORMERS`, :data:`KERNEL` or ``None`` (padded
    rows); see the module docstring. Logs the path the forward takes (once per model built)."""
    if not packed_sequences:
        log.info("model: padded rows (attn_implementation=%s)", attn_implementation)
        return None
    if attn_implementation in TRANSFORMERS_PACKED:
        log.info("model: packed rows through transformers' %s (variable-length attention)", attn_implementation)
        return TRANSFORMERS
    if attn_implementation == "sdpa" and cpu_speedups:
        log.info("model: packed rows through the project's attention (sdpa, model.cpu_speedups)")
        return KERNEL
    log.info("model: padded rows: model.packed_sequences with attn_implementation=%s and cpu_speedups=%s "
             "(packing needs flash_attention_2/3 (attn_implementation=auto with flash-attn installed), "
             "flex_attention, or sdpa with model.cpu_speedups)", attn_implementation, cpu_speedups)
    return None


def set_packing_mode(model: torch.nn.Module, mode: str | None) -> None:
    """Record how ``model`` (the transformers model under any peft wrapper) runs packed rows."""
    setattr(model, MODE_ATTRIBUTE, mode)


def packing_mode(model: Any) -> str | None:
    """:data:`TRANSFORMERS`, :data:`KERNEL` or ``None`` (padded rows) for a transformers model."""
    return getattr(model, MODE_ATTRIBUTE, None)


def is_enabled(model: Any) -> bool:
    """Whether ``model`` attends through the project's packed attention (:data:`KERNEL`), which also
    takes packed rows after a cached prefix (:func:`coin_lightning.speedups.attention.packed_prefix_attention`)."""
    return packing_mode(model) == KERNEL

