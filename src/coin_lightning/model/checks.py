"""Checks of adapter directories and of Lightning checkpoints against the ``model`` config, before
any model weights load: each problem is one line naming the key or file (a
:class:`coin_lightning.errors.UserError`). The ``model`` values themselves are checked by
:class:`coin_lightning.model.config.ModelArgs`.

The checks read only small files: an adapter's ``adapter_config.json`` and the header of its
``adapter_model.safetensors``; a checkpoint through ``torch.load(weights_only=True, mmap=True)`` (the
tensors stay on disk); a local model's ``config.json``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from coin_lightning.errors import ConfigError
from coin_lightning.model.config import EMBEDDED, EMBEDDED_HUB_ID, TINY, ModelArgs
from coin_lightning.model.loading import ModelLoadError, _embedded_cache, first_line, hub_kwargs

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LORA_KEY = re.compile(r"\.(\w+)\.lora_A(?:\.\w+)?\.weight$")


def is_local(path: str) -> bool:
    """Whether ``path`` names a local file or directory (rather than a hub id such as ``owner/name``)."""
    return Path(path).expanduser().exists() or not _HUB_ID.match(str(path))


def model_config(args: ModelArgs) -> dict | None:
    """The base model's ``config.json`` as a dict when it is known without loading weights or reaching
    the network: the tiny LLaMA's sizes, the embedded model's cache, a local directory, or a hub id
    already in the Hugging Face cache; ``None`` otherwise."""
    if args.name_or_path == TINY:
        return {"hidden_size": args.tiny.hidden_size, "num_hidden_layers": args.tiny.num_hidden_layers,
                "max_position_embeddings": 2048}  # build_tiny_llama's; its vocabulary is the tokenizer's
    folder = _embedded_cache(args.cache_dir) if args.name_or_path == EMBEDDED else Path(args.name_or_path).expanduser()
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if args.name_or_path == EMBEDDED or not _HUB_ID.match(args.name_or_path):
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(args.name_or_path, local_files_only=True,
                                          **hub_kwargs(args.revision, args.cache_dir)).to_dict()
    except (OSError, ValueError):
        return None


def _hidden_size(args: ModelArgs) -> int | None:
    """The base model's hidden size when it is known without loading weights (tiny, cached, local)."""
    hidden = (model_config(args) or {}).get("hidden_size")
    return hidden if isinstance(hidden, int) else None


def _check_width(key: str, path: str, widths: set[int], hidden: int | None, args: ModelArgs, note: str = "") -> None:
    """Refuse LoRA tensors whose input width (``widths``, from :func:`_lora_shapes`) is not the model's ``hidden``."""
    if hidden is not None and widths and widths != {hidden}:
        raise ModelLoadError(f"{key}={path} was trained on a model of width {sorted(widths)[0]}, model.name_or_path="
                             f"{args.name_or_path!r} has width {hidden}{note}")


def check_model_ranges(args: ModelArgs, hidden_layer: int, cutoff_len: int | None) -> None:
    """Check the values whose valid range depends on the model against its config, before any weights
    load (skipped when :func:`model_config` cannot read the config without the network).

    Args:
        args: the ``model`` config (``model.pad_token_id`` is checked against the tokenizer's vocabulary when
            it loads, :func:`~coin_lightning.model.loading.load_tokenizer`).
        hidden_layer: ``loss.hidden_layer``, an index into the ``num_hidden_layers + 1`` hidden states.
        cutoff_len: ``data.cutoff_len`` in tokens, at most ``max_position_embeddings`` (or None).

    Raises:
        ConfigError: a value outside the model's range, naming the key and the model's value.
    """
    config = model_config(args)
    if not config:
        return
    layers, positions = config.get("num_hidden_layers"), config.get("max_position_embeddings")
    if isinstance(layers, int) and not -(layers + 1) <= hidden_layer <= layers:
        raise ConfigError(f"loss.hidden_layer={hidden_layer} but {args.name_or_path} has {layers} layers "
                          f"({layers + 1} hidden states: 0..{layers}, or -{layers + 1}..-1)")
    if isinstance(positions, int) and cutoff_len is not None and cutoff_len > positions:
        raise ConfigError(f"data.cutoff_len={cutoff_len} exceeds the {positions} positions of {args.name_or_path} "
                          "(max_position_embeddings)")


def base_model_id(args: ModelArgs) -> str | None:
    """What an adapter trained on this model records as ``base_model_name_or_path``: the hub id or
    path of ``model.name_or_path``; for the embedded model the hub model it is a 4-bit copy of
    (:data:`~coin_lightning.model.config.EMBEDDED_HUB_ID`), so that the adapter loads on another
    machine (``AutoPeftModelForCausalLM``); ``None`` for the tiny LLaMA (random weights)."""
    return {TINY: None, EMBEDDED: EMBEDDED_HUB_ID}.get(args.name_or_path, args.name_or_path)


def _same_model(a: str, b: str, args: ModelArgs) -> bool:
    if args.name_or_path == EMBEDDED and Path(a).name == _embedded_cache(args.cache_dir).name:
        return True  # adapters written before the hub id was recorded name the local fp32 copy
    return a == b or Path(a).name.lower() == Path(b).name.lower()


def _lora_shapes(shapes: dict[str, tuple[int, ...]]) -> tuple[set[int], set[int], set[str]]:
    """Ranks, input widths of q/k/v projections and adapted module names, from ``lora_A`` weight shapes."""
    ranks, widths, modules = set(), set(), set()
    for name, shape in shapes.items():
        m = _LORA_KEY.search(name)
        if m and len(shape) == 2:
            ranks.add(shape[0])
            modules.add(m.group(1))
            if m.group(1) in ("q_proj", "k_proj", "v_proj"):
                widths.add(shape[1])
    return ranks, widths, modules


def check_adapter(path: str, args: ModelArgs, key: str = "adapter") -> None:
    """Check a saved peft adapter before loading: readable ``adapter_config.json``, a LoRA adapter
    made for this base model (recorded base name, and weight widths where the hidden size is known).

    A hub id (``owner/name``) that is not a local path is left to peft (it needs the hub).

    Raises:
        ModelLoadError: missing directory or config, unreadable JSON, another base model.
    """
    if not is_local(path):
        return
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"{key}={path}: no such directory")
    config_file = folder / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{key}={path}: no adapter_config.json in that directory") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_file}: unreadable adapter config ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ModelLoadError(f"{config_file}: not a LoRA adapter config (peft_type={config.get('peft_type') if isinstance(config, dict) else None!r})")
    recorded, expected = config.get("base_model_name_or_path"), base_model_id(args)
    if recorded and expected and not _same_model(str(recorded), expected, args):
        raise ModelLoadError(
            f"{key}={path} was trained on {recorded!r}, not on model.name_or_path={args.name_or_path!r}"
        )
    weights = folder / "adapter_model.safetensors"
    hidden = _hidden_size(args)
    if hidden is None or not weights.is_file():
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{weights}: unreadable adapter weights ({exc})") from None
    _check_width(key, path, _lora_shapes(shapes)[1], hidden, args, " (another base model)")


def check_checkpoint(path: str, args: ModelArgs, key: str = "ckpt_path") -> None:
    """Check that ``path`` is a readable Lightning checkpoint of this model's LoRA adapter.

    Loads it with ``torch.load(weights_only=True, mmap=True)`` on the CPU (tensors stay on disk, as
    Lightning itself loads it with ``weights_only``), then compares its LoRA tensors with the config:
    the rank (``model.lora.r`` when no starting ``model.adapter`` decides it), the adapted modules and
    the width where the hidden size is known.

    Raises:
        ModelLoadError: missing or unreadable file, not a Lightning checkpoint, or adapter tensors
            that do not fit the model's LoRA settings.
    """
    import pickle
    import zipfile

    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelLoadError(f"{key}={path}: no such file")
    if not zipfile.is_zipfile(file):
        raise ModelLoadError(f"{key}={path}: not a PyTorch checkpoint (truncated, or another format)")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"{key}={path}: not a Lightning checkpoint of this project (it holds Python objects that "
            "torch.load(weights_only=True), as used to resume, refuses)"
        ) from None
    except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{key}={path}: not a loadable checkpoint ({first_line(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise ModelLoadError(f"{key}={path}: not a Lightning checkpoint (no state_dict / pytorch-lightning_version)")
    shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    ranks, widths, modules = _lora_shapes(shapes)
    if not ranks:
        raise ModelLoadError(f"{key}={path}: the checkpoint holds no LoRA adapter tensors")
    if not args.adapter and ranks != {args.lora.r}:
        raise ModelLoadError(f"{key}={path} has LoRA rank {sorted(ranks)}, but model.lora.r={args.lora.r}")
    if not args.adapter and modules != set(args.lora.target_modules):
        raise ModelLoadError(
            f"{key}={path} adapts {sorted(modules)}, but model.lora.target_modules={list(args.lora.target_modules)}"
        )
    _check_width(key, path, widths, _hidden_size(args), args)
