"""FSDP mixed precision (``coin_lightning.training.fsdp``, ``conf/trainer/fsdp.yaml``) on CPU.

What runs here: the policy composed from the config and seen through Lightning's ``FSDPStrategy``
(fp32 gradient reduction and buffers under ``bf16-mixed``, where Lightning's plugin alone uses bf16),
and the wrap rule's fp32 override for LoRA units. The two-rank FSDP run of ``test_distributed.py``
trains with that override under ``32-true`` and matches one process. bf16 numerics need a GPU (no bf16
on CPU): ``experiments/gpu_check`` compares FSDP with this policy against DDP's numerics on one batch.
"""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import FSDPPrecision

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.training.fsdp import LoraWrapRule, mixed_precision_policy

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def _strategy(precision: str, *extra: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["trainer=fsdp", f"trainer.precision={precision}", "output_dir=unused", *extra])
    strategy = instantiate(cfg.trainer.strategy)
    strategy.precision_plugin = FSDPPrecision(precision)  # what the Trainer attaches for trainer.precision
    return strategy


def _dtypes(mp) -> tuple:
    return mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype


@pytest.mark.parametrize(
    "precision, want",
    [
        ("bf16-mixed", (None, FP32, FP32)),  # base in model.dtype, autocast computes; reduce and RoPE in fp32
        ("16-mixed", (None, FP32, FP32)),
        ("32-true", (FP32, FP32, FP32)),  # Lightning's own policy
        ("bf16-true", (BF16, BF16, BF16)),  # everything in bf16 was asked for
    ],
)
def test_fsdp_strategy_uses_the_config_policy(precision, want):
    assert _dtypes(_strategy(precision).mixed_precision_config) == want


def test_lightning_alone_would_reduce_gradients_and_keep_buffers_in_bf16():
    """The reason for the policy: Lightning 2.6's plugin maps bf16-mixed to bf16 for all three dtypes."""
    assert _dtypes(FSDPPrecision("bf16-mixed").mixed_precision_config) == (BF16, BF16, BF16)


def test_param_dtype_option_casts_the_gathered_base():
    strategy = _strategy("bf16-mixed", "trainer.strategy.mixed_precision.param_dtype=bfloat16")
    assert _dtypes(strategy.mixed_precision_config) == (BF16, FP32, FP32)
    with pytest.raises(ValueError, match="param_dtype='int8'"):
        mixed_precision_policy("bf16-mixed", "int8")
    with pytest.raises(ValueError, match="trainer.precision='transformer-engine-mixed'"):
        mixed_precision_policy("transformer-engine-mixed")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
def test_lora_units_are_fp32_under_mixed_precision(tiny_model, precision):
    from coin_lightning.model.lora import apply_lora
    from tests.conftest import TINY_CFG

    model = apply_lora(tiny_model[0], TINY_CFG)
    rule = LoraWrapRule(["LlamaDecoderLayer"], precision)
    decisions = {n: rule(m) for n, m in model.named_modules()}
    lora = {n for n, p in model.named_parameters() if p.requires_grad}
    lora_units = {n for n in decisions if f"{n}.weight" in lora}
    assert lora_units and all(".lora_A." in n or ".lora_B." in n for n in lora_units)
    for name in lora_units:
        if precision == "32-true":  # the root's fp32 policy applies
            assert decisions[name] is True
        else:
            assert _dtypes(decisions[name]["mixed_precision"]) == (FP32, FP32, FP32)
    layers = {n for n, m in model.named_modules() if type(m).__name__ == "LlamaDecoderLayer"}
    assert {n for n, d in decisions.items() if d is True} == (layers if precision != "32-true" else layers | lora_units)
