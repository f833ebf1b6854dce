"""Wrapping a base model with trainable LoRA adapters (peft)."""
from __future__ import annotations

from typing import Any

from coin_lightning.model import packing
from coin_lightning.model.dropout import use_fast_lora_dropout
from coin_lightning.model.fused import use_fused_kernels
from coin_lightning.model.loading import ModelArgs, ModelLoadError, load_adapter, load_model


def apply_lora(model, cfg: Any):
    """Return ``model`` wrapped in a trainable peft ``PeftModel``.

    With ``model.adapter`` set, training starts from that adapter (the paper starts from
    ``tloen/alpaca-lora-7b``, Sec. 4.1); otherwise a fresh LoRA with ``model.lora`` settings (the B
    matrices start at zero, so the wrapped model equals the base model at step 0).
    Only adapter parameters require gradients afterwards. With ``model.gradient_checkpointing`` the
    non-reentrant variant is enabled (the reentrant one breaks with frozen inputs under peft). With
    ``model.lora.fast_dropout`` (default) peft's LoRA dropouts become
    :class:`coin_lightning.model.dropout.LoraDropout` (same masks in distribution, cheaper on CPU).
    With ``model.packed_sequences`` (default) the base model attends with
    :data:`coin_lightning.model.packing.PACKED_SDPA`, so ``CoinModule.encode`` can pack rows. With
    ``model.fused_kernels`` (default) LoRA projections, RMSNorms and packed attention run as single
    autograd functions on CPU (:func:`coin_lightning.model.fused.use_fused_kernels`).

    Raises:
        coin_lightning.model.loading.ModelLoadError: the starting adapter cannot be loaded, peft
            refuses the ``model.lora`` settings (e.g. target modules the model lacks), or
            ``packed_sequences`` with an attention implementation other than ``sdpa``.
    """
    args = ModelArgs.from_config(cfg)
    if args.packed_sequences:
        try:
            packing.enable(model)
        except ValueError as exc:
            raise ModelLoadError(f"{exc} (or set model.packed_sequences=false)") from None
    peft_model = _wrap(model, args)
    if args.cpu_speedups:
        use_fast_lora_dropout(peft_model)
    if args.cpu_speedups:
        use_fused_kernels(peft_model)
    return peft_model


def _wrap(model, args: ModelArgs):
    from peft import LoraConfig, get_peft_model

    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if args.adapter:
        return load_adapter(model, args.adapter, True, args.adapter_revision, args.cache_dir)
    config = LoraConfig(
        r=args.lora.r,
        lora_alpha=args.lora.alpha,
        lora_dropout=args.lora.dropout,
        target_modules=list(args.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules the model does not have
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model.lora: {first}") from None


def load_for_inference(cfg: Any, adapter: str | None = None):
    """Load the model to evaluate as training builds it, with the same speed-ups.

    The base model (``model.name_or_path``) carries ``model.adapter`` when one is set, as in training
    (:func:`apply_lora`): ``model=alpaca`` is LLaMA-7B + alpaca-lora, the paper's starting point
    (Sec. 4.1). An evaluated ``adapter`` takes that adapter's place: training continues
    ``model.adapter`` itself rather than adding a second LoRA, so the adapter it saves already holds
    the starting weights plus what was learned (stacking it on ``model.adapter`` would count the
    starting adapter twice).

    With ``model.packed_sequences`` (and ``sdpa`` attention) the base model attends with
    :data:`coin_lightning.model.packing.PACKED_SDPA`, so the evaluation prefill packs prompts
    (:func:`coin_lightning.eval.decode.prefill`); with ``model.fused_kernels`` the LoRA, RMSNorm and
    packed-attention kernels run on CPU (:func:`coin_lightning.model.fused.use_fused_kernels`). Other
    attention implementations are kept as they are (the prefill then pads).

    Returns:
        ``(model, tokenizer)``, the model a ``PeftModel`` when ``adapter`` or ``model.adapter`` is set.

    Raises:
        coin_lightning.model.loading.ModelLoadError: the model or an adapter cannot be loaded.
    """
    args = ModelArgs.from_config(cfg)
    model, tokenizer = load_model(cfg)
    if args.packed_sequences and model.config._attn_implementation == "sdpa":
        packing.enable(model)
    if adapter:
        model = load_adapter(model, adapter, cache_dir=args.cache_dir)  # a directory, or a hub id at its main revision
    elif args.adapter:
        model = load_adapter(model, args.adapter, False, args.adapter_revision, args.cache_dir)
    if args.cpu_speedups:
        use_fused_kernels(model)
    return model, tokenizer
