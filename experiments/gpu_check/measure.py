"""Throughput, model FLOPs utilisation and peak memory of a training run (a Lightning callback).

Added to a run as ``+callbacks.gpu_check_meter._target_=experiments.gpu_check.measure.StepMeter``
(and ``+callbacks.gpu_check_meter.path=<file>``), so that it works the same in this process and in
``python -m coin_lightning.train``; when training ends, rank 0 writes :meth:`StepMeter.result` and
what the trained model is made of (packing mode, dtypes) to ``path`` as JSON.
Each micro-batch is timed from ``on_train_batch_start`` to ``on_train_batch_end`` (CUDA synchronised
at both ends), so the optimizer step is included and data loading is not; the first ``warmup``
micro-batches are left out (kernel selection, allocator growth).

- tokens/s: real (non-padding) tokens of the timed micro-batches over their time;
- MFU: useful matmul FLOPs (:func:`experiments.benchmarks.flops.batch_flops`, ``mode="useful"``:
  real tokens, causal attention, LoRA backward) per second over the device's peak in the compute
  dtype: Lightning's datasheet figure (``get_available_flops``) on a GPU, a measured fp32 ``torch.mm``
  peak on a CPU;
- peak memory: ``torch.cuda.max_memory_allocated`` over the run (reset when training starts) on a
  GPU; on a CPU the process's peak resident set so far (``ru_maxrss``), not reset between runs.
"""
from __future__ import annotations

import json
import resource
import time
from typing import Any

import lightning as L
import torch

from experiments.benchmarks.flops import DecoderShape, LoraShape, batch_flops

GIB = 2**30


def compute_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Lightning precision string (``bf16-mixed`` -> bfloat16, ``32-true`` -> float32)."""
    text = str(precision)
    if text.startswith("bf16"):
        return torch.bfloat16
    return torch.float16 if text.startswith("16") else torch.float32


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """FLOP/s the device can reach in ``dtype``: Lightning's table for GPUs (None for unknown ones),
    the best of five timed ``[512, 512]`` fp32 matrix products on a CPU."""
    if device.type == "cuda":
        from lightning.fabric.utilities.throughput import get_available_flops

        return get_available_flops(device, dtype)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(8):
            torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 8 * 2 * 512**3 / best


def model_facts(pl_module: L.LightningModule) -> dict[str, Any]:
    """How the module's model is built: its packing mode (``padded`` without packing), and the dtypes of
    the frozen (base) and trainable (LoRA) parameters."""
    from coin_lightning.model import packing

    params = list(pl_module.model.parameters())
    return {
        "packing": packing.packing_mode(pl_module.model.get_base_model()) or "padded",
        "base_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in params if not p.requires_grad}),
        "lora_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in params if p.requires_grad}),
    }


class StepMeter(L.Callback):
    """Times training micro-batches and counts their tokens and useful FLOPs (see the module docstring).

    Args:
        path: JSON file written when training ends (rank 0): :meth:`result` and :func:`model_facts`.
        warmup: micro-batches at the start that are not timed.
    """

    def __init__(self, path: str, warmup: int = 2) -> None:
        self.path = path
        self.warmup = warmup
        self.seen = 0
        self.seconds = self.tokens = self.flops = 0.0
        self.timed = 0
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self.device, self.dtype = trainer.strategy.root_device, compute_dtype(trainer.precision)
        peft_model = pl_module.model
        self.shapes = DecoderShape.from_config(peft_model.get_base_model().config), LoraShape.from_peft(peft_model)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:  # noqa: D102
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # noqa: D102
        self._sync()
        dt = time.perf_counter() - self._t0
        self.seen += 1
        if self.seen <= self.warmup:
            return
        self.timed += 1
        self.seconds += dt
        self.tokens += float(batch["attention_mask"].sum())
        self.flops += batch_flops(batch, *self.shapes, mode="useful").total

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.is_global_zero:
            with open(self.path, "w", encoding="utf-8") as fh:
                json.dump({**self.result(), **model_facts(pl_module)}, fh)

    def result(self) -> dict[str, Any]:
        """``tokens_per_s``, ``mfu`` (None without a known peak), ``peak_memory_gib``, ``timed_batches``."""
        if self.device.type == "cuda":
            peak_memory = torch.cuda.max_memory_allocated(self.device) / GIB
        else:
            peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux
        peak = peak_flops(self.device, self.dtype) if self.timed else None
        rate = self.flops / self.seconds if self.seconds else None
        return {
            "tokens_per_s": self.tokens / self.seconds if self.seconds else None,
            "mfu": rate / peak if rate and peak else None,
            "peak_memory_gib": peak_memory,
            "timed_batches": self.timed,
        }
