"""Speed-ups of the model that change no result: CPU kernels behind ``model.cpu_speedups``, and
Liger-Kernel's GPU kernels behind ``model.liger_kernels``.

``model.cpu_speedups`` (:func:`coin_lightning.model.lora.use_speedups`) does two things, each on public APIs:

- LoRA dropout masks drawn through the geometric gaps between dropped elements
  (:class:`~coin_lightning.speedups.dropout.LoraDropout`, the same Bernoulli masks), put in place of
  peft's ``nn.Dropout`` in each LoRA layer's ``lora_dropout`` ``ModuleDict``;
- with ``model.packed_sequences`` and ``sdpa``, attention over packed rows
  (:mod:`coin_lightning.speedups.attention`, registered with transformers' ``AttentionInterface`` and
  selected with ``set_attn_implementation``), whose CPU kernels are in :mod:`coin_lightning.speedups.kernels`.

``model.liger_kernels`` (:func:`apply_liger`): Liger-Kernel (Hsu et al. 2024, ``pip install '.[gpu]'``
from a clone) replaces RMSNorm, the SwiGLU MLP and the rotary embedding of supported transformers
architectures by fused Triton kernels. It is applied through its public per-architecture functions
(``MODEL_TYPE_TO_APPLY_LIGER_FN``, e.g. ``apply_liger_kernel_to_llama``) before the model is built, so the
model is constructed with Liger's modules. Its cross-entropy kernels are left off: the CoIN losses project
only response positions onto the vocabulary (:func:`coin_lightning.losses.response_cross_entropies`), not
through the model's ``forward(labels=...)``.
"""
from __future__ import annotations

import importlib.util
import inspect

import torch

from coin_lightning.errors import ConfigError

PACKAGE = "liger_kernel"
"""Import name of Liger-Kernel (distribution ``liger-kernel``, the ``gpu`` extra)."""


def check_liger(liger_kernels: bool, key: str = "model.liger_kernels") -> None:
    """Refuse ``model.liger_kernels: true`` without a CUDA device or without the package (cheap: no import).

    Raises:
        ConfigError: one line naming ``model.liger_kernels``.
    """
    if not liger_kernels:
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"{key}=true needs a CUDA GPU (Liger's kernels are Triton GPU kernels); set {key}=false")
    if importlib.util.find_spec(PACKAGE) is None:
        raise ConfigError(f"{key}=true needs the liger-kernel package: pip install '.[gpu]'")


def apply_liger(model_type: str, key: str = "model.liger_kernels") -> None:
    """Apply Liger's kernels to the transformers architecture ``model_type`` (e.g. ``"llama"``); models
    of that architecture built afterwards use them. Call :func:`check_liger` first.

    Raises:
        ConfigError: Liger-Kernel has no kernels for ``model_type``.
    """
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    patch = MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if patch is None:
        raise ConfigError(f"{key}=true: Liger-Kernel has no kernels for model type {model_type!r}; "
                          f"supported: {', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}")
    accepted = inspect.signature(patch).parameters
    patch(**{name: False for name in ("cross_entropy", "fused_linear_cross_entropy") if name in accepted})

