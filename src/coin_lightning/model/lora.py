"""Wrapping a base model with trainable LoRA adapters (peft)."""
from __future__ import annotations

from typing import Any

from coin_lightning.model import packing
from coin_lightning.model.checks import base_model_id
from coin_lightning.model.config import EMBEDDED, TINY, resolve_attn_implementation
from coin_lightning.model.loading import ModelArgs, ModelLoadError, first_line, load_adapter, load_model
from coin_lightning.speedups import attention
from coin_lightning.speedups.dropout import use_fast_lora_dropout


def apply_lora(model, cfg: Any):
    """Return ``model`` wrapped in a trainable peft ``PeftModel``.

    With ``model.adapter`` set, training starts from that adapter (the paper starts from
    ``tloen/alpaca-lora-7b``, Sec. 4.1); otherwise a fresh LoRA with ``model.lora`` settings (the B
    matrices start at zero, so the wrapped model equals the base model at step 0).
    Only adapter parameters require gradients afterwards. With ``model.gradient_checkpointing`` the
    non-reentrant variant is enabled (the reentrant one breaks with frozen inputs under peft). Packed
    rows and the speed-ups are set up as :func:`use_speedups` says.

    Raises:
        coin_lightning.model.loading.ModelLoadError: the starting adapter cannot be loaded, peft
            refuses the ``model.lora`` settings (e.g. target modules the model lacks).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    args = ModelArgs.from_config(cfg)
    if args.quantization:  # peft's preparation of a bitsandbytes base, as the reference's prepare_model_for_int8_training
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if args.adapter:
        peft_model = load_adapter(model, args.adapter, True, args.adapter_revision, args.cache_dir)
    else:
        config = LoraConfig(
            r=args.lora.r,
            lora_alpha=args.lora.alpha,
            lora_dropout=args.lora.dropout,
            target_modules=list(args.lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:  # e.g. target modules the model does not have
            raise ModelLoadError(f"model.lora: {first_line(exc)}") from None
        # the saved adapter names a base model that loads elsewhere (not a local cache path) and its revision
        peft_model.peft_config["default"].base_model_name_or_path = base_model_id(args)
        peft_model.peft_config["default"].revision = args.revision if args.name_or_path not in (EMBEDDED, TINY) else None
    use_speedups(peft_model, args)
    return peft_model


def use_speedups(model, args: ModelArgs) -> None:
    """Set up packed rows and the speed-ups the ``model`` config asks for, on a loaded model.

    The packing mode (:func:`coin_lightning.model.packing.choose_packing_mode`) is recorded on the
    transformers model; with ``model.cpu_speedups`` the LoRA dropouts are replaced in place
    (:func:`~coin_lightning.speedups.dropout.use_fast_lora_dropout`) and, in the mode
    :data:`~coin_lightning.model.packing.KERNEL`, the attention is switched to
    :data:`~coin_lightning.speedups.attention.PACKED_SDPA` (:func:`~coin_lightning.speedups.attention.enable`).

    Args:
        model: a transformers causal LM, optionally wrapped by peft (LoRA dropouts are replaced in place).
        args: the ``model`` config.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    attn = resolve_attn_implementation(args.attn_implementation)
    packed = args.packed_sequences and args.position_ids == "mask"  # packing restarts positions at each row
    mode = packing.choose_packing_mode(packed, attn, args.cpu_speedups)
    if args.cpu_speedups:  # attention over packed rows needs a model loaded with sdpa (the mode KERNEL)
        if mode == packing.KERNEL:
            attention.enable(base)
        use_fast_lora_dropout(model)
    packing.set_packing_mode(base, mode)


def load_for_inference(cfg: Any, adapter: str | None = None):
    """Load the model to evaluate as training builds it, with the same speed-ups.

    The base model (``model.name_or_path``) carries ``model.adapter`` when one is set, as in training
    (:func:`apply_lora`): ``model=alpaca`` is LLaMA-7B + alpaca-lora, the paper's starting point
    (Sec. 4.1). An evaluated ``adapter`` takes that adapter's place: training continues
    ``model.adapter`` itself rather than adding a second LoRA, so the adapter it saves already holds
    the starting weights plus what was learned (stacking it on ``model.adapter`` would count the
    starting adapter twice).

    Packed rows and the speed-ups are set up as in training (:func:`use_speedups`): in the packing mode
    :data:`~coin_lightning.model.packing.KERNEL` the evaluation prefill packs prompts.

    Returns:
        ``(model, tokenizer)``, the model a ``PeftModel`` when ``adapter`` or ``model.adapter`` is set.

    Raises:
        coin_lightning.model.loading.ModelLoadError: the model or an adapter cannot be loaded.
    """
    args = ModelArgs.from_config(cfg)
    model, tokenizer = load_model(cfg)
    if adapter:
        model = load_adapter(model, adapter, cache_dir=args.cache_dir)  # a directory, or a hub id at its main revision
    elif args.adapter:
        model = load_adapter(model, args.adapter, False, args.adapter_revision, args.cache_dir)
    use_speedups(model, args)
    return model, tokenizer
