"""Speed-ups of the model that change no result: CPU kernels behind ``model.cpu_speedups``, and
Liger-Kernel's GPU kernels behind ``model.liger_kernels``.

``model.cpu_speedups`` (:func:`apply`) does two things, each on public APIs:

- LoRA dropout masks drawn through the geometric gaps between dropped elements
  (:class:`~coin_lightning.speedups.dropout.LoraDropout`, the same Bernoulli masks), put in place of
  peft's ``nn.Dropout`` in each LoRA layer's ``lora_dropout`` ``ModuleDict``;
- with ``model.packed_sequences`` and ``sdpa``, attention over packed rows
  (:mod:`coin_lightning.speedups.attention`, registered with transformers' ``AttentionInterface`` and
  selected with ``set_attn_implementation``), whose CPU kernels are in :mod:`coin_lightning.speedups.kernels`.

``model.liger_kernels`` (:mod:`coin_lightning.speedups.liger`) is applied before the model is built.
"""
from __future__ import annotations

from torch import nn

from coin_lightning.speedups.attention import PACKED_SDPA, enable, packed_sdpa_attention
from coin_lightning.speedups.dropout import LoraDropout, use_fast_lora_dropout
from coin_lightning.speedups.kernels import packed_attention, packed_prefix_attention


def apply(model: nn.Module, packed_rows: bool) -> int:
    """Apply the CPU speed-ups to ``model`` (a transformers model, optionally wrapped by peft).

    Args:
        model: the model; its LoRA dropouts (if any) are replaced in place.
        packed_rows: also switch the transformers model under it to :data:`PACKED_SDPA` (the packing
            mode :data:`coin_lightning.model.packing.KERNEL`; the model must have been loaded with
            ``sdpa``).

    Returns:
        The number of LoRA dropouts replaced.
    """
    if packed_rows:
        enable(model.get_base_model() if hasattr(model, "get_base_model") else model)
    return use_fast_lora_dropout(model)


__all__ = ["PACKED_SDPA", "LoraDropout", "apply", "packed_attention", "packed_prefix_attention",
           "packed_sdpa_attention"]
