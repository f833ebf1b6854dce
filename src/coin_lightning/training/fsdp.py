"""LoRA-aware FSDP settings: which modules become their own FSDP unit (``conf/trainer/fsdp.yaml``).

A LoRA model has a large frozen base and a small trainable adapter. FSDP flattens the parameters of
each wrapped unit into one ``FlatParameter``; keeping frozen and trainable tensors in separate units
means (1) gradients and optimizer state are allocated for adapter units only, (2) every unit has one
dtype even when the base is loaded in bf16 while peft keeps the adapter in fp32, and (3) the frozen
base of each decoder layer is sharded and gathered one layer at a time. This is the policy peft's
``fsdp_auto_wrap_policy`` builds (decoder layers + trainable leaf modules), written as a config-time
factory that needs no model instance.
"""
from __future__ import annotations

from typing import Sequence

import torch


def is_trainable_leaf(module: torch.nn.Module) -> bool:
    """True for a module without children whose ``weight`` requires grad (a LoRA ``lora_A``/``lora_B`` Linear)."""
    weight = getattr(module, "weight", None)
    return next(module.children(), None) is None and isinstance(weight, torch.nn.Parameter) and weight.requires_grad


def lora_wrap_policy(layer_classes: Sequence[str] = ("LlamaDecoderLayer",)):
    """An FSDP ``auto_wrap_policy``: one unit per decoder layer and one per trainable leaf module.

    Args:
        layer_classes: class names of the transformer blocks to wrap (``LlamaDecoderLayer`` for LLaMA
            and SmolLM2; ``MistralDecoderLayer``, ``Qwen2DecoderLayer``, ... for other families; a
            model's ``_no_split_modules`` lists them). Matched by name, so the config needs no import.

    Returns:
        A ``torch.distributed.fsdp.wrap.CustomPolicy`` for ``FSDPStrategy(auto_wrap_policy=...)``.
        Modules not selected (embeddings, final norm, LM head) stay in the root unit.

    Raises:
        ValueError: ``layer_classes`` is empty.
    """
    from torch.distributed.fsdp.wrap import CustomPolicy

    names = frozenset(layer_classes)
    if not names:
        raise ValueError("trainer.strategy.auto_wrap_policy.layer_classes is empty; name the decoder layer class")
    return CustomPolicy(_WrapRule(names))


class _WrapRule:
    """The picklable predicate behind :func:`lora_wrap_policy` (spawned workers receive it by pickle)."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def __call__(self, module: torch.nn.Module) -> bool:
        return type(module).__name__ in self.names or is_trainable_leaf(module)
