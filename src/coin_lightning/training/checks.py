"""Checks of a composed ``train.yaml`` config before any model loads, and of the data's size against
the trainer's validation interval. Every problem is one line naming the key (a ``ConfigError`` or
``ModelLoadError``, both :class:`coin_lightning.errors.UserError`).
"""
from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig

from coin_lightning.config_types import check_range, check_required
from coin_lightning.data.checks import check_data_config
from coin_lightning.errors import ConfigError
from coin_lightning.model.checks import check_adapter, check_checkpoint, check_model_ranges
from coin_lightning.model.config import ModelArgs
from coin_lightning.speedups.liger import check_liger

log = logging.getLogger(__name__)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    return float(value)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer")
    return value


def check_trainer(trainer: DictConfig, model: ModelArgs) -> None:
    """Check the ``trainer`` node's values that Lightning would only trip over later (or never).

    Raises:
        ConfigError: ``max_steps`` 0 or below -1 (0 trains nothing and writes no adapter),
            ``max_epochs`` < -1 or 0, ``accumulate_grad_batches`` < 1, ``val_check_interval`` not a
            positive int or a fraction in (0, 1], ``gradient_clip_val`` < 0, bf16 on a CPU.
    """
    max_steps = _integer("trainer.max_steps", trainer.get("max_steps", -1))
    if max_steps == 0 or max_steps < -1:
        raise ConfigError(f"trainer.max_steps={max_steps} trains nothing: give a positive number of optimizer steps, or -1 for whole epochs")
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (_integer("trainer.max_epochs", max_epochs) == 0 or max_epochs < -1):
        raise ConfigError(f"trainer.max_epochs={max_epochs} trains nothing: give a positive number, or -1")
    if max_steps == -1 and max_epochs == -1:
        raise ConfigError("trainer.max_steps=-1 and trainer.max_epochs=-1 never stop: set one of them")
    check_range("trainer.accumulate_grad_batches", _integer("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1)), low=1)
    vci = trainer.get("val_check_interval")
    if vci is not None:
        if isinstance(vci, int) and not isinstance(vci, bool):
            check_range("trainer.val_check_interval", vci, low=1)
        else:
            check_range("trainer.val_check_interval", _number("trainer.val_check_interval", vci), low=0, high=1, low_open=True)
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        check_range("trainer.gradient_clip_val", _number("trainer.gradient_clip_val", clip), low=0)
    if str(trainer.get("accelerator")) == "cpu" and ("bf16" in str(trainer.get("precision")) or model.dtype == "bfloat16"):
        raise ConfigError(
            f"trainer.accelerator=cpu with precision={trainer.get('precision')} / model.dtype={model.dtype}: bf16 on a CPU "
            "is about 80x slower than fp32; use trainer.precision=32-true model.dtype=float32, or trainer=gpu"
        )


def check_train_config(cfg: DictConfig) -> ModelArgs:
    """Check every value of a ``train.yaml`` config that can be checked without loading a model:
    required values (``???``), ``loss``, ``model`` (with ``model.adapter``), ``data`` (values and files), ``optimizer.lr``, ``warmup_ratio``,
    ``seed``, ``trainer``, the values whose range depends on the model (against its config,
    :func:`~coin_lightning.model.checks.check_model_ranges`) and ``ckpt_path`` (a readable Lightning
    checkpoint of this LoRA setup).

    Returns:
        The checked :class:`ModelArgs`.

    Raises:
        ConfigError, ModelLoadError, DataError: one line naming the key at fault.
    """
    from coin_lightning.losses import LossArgs

    check_required(cfg)
    loss = LossArgs.from_config(cfg.loss)
    args = ModelArgs.from_config(cfg.model)
    check_liger(args.liger_kernels)
    if args.quantization:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"model.quantization={args.quantization!r} needs a CUDA GPU (bitsandbytes)")
    _integer("seed", cfg.get("seed"))
    check_range("warmup_ratio", _number("warmup_ratio", cfg.get("warmup_ratio")), low=0, high=1, high_open=True)
    optimizer = cfg.get("optimizer") or {}
    if "lr" in optimizer:
        check_range("optimizer.lr", _number("optimizer.lr", optimizer.lr), low=0, low_open=True)
    if cfg.get("data") is not None:
        check_data_config(cfg.data)
    check_trainer(cfg.trainer, args)
    check_model_ranges(args, loss.hidden_layer, (cfg.get("data") or {}).get("cutoff_len"))
    if args.adapter:
        check_adapter(args.adapter, args, key="model.adapter")
    if cfg.get("ckpt_path") and str(cfg.ckpt_path) != "auto":  # auto: checked once resolved (training/run.py)
        check_checkpoint(str(cfg.ckpt_path), args)
    return args
