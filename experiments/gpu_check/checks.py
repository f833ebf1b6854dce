"""The checks of ``make gpu-check`` (see ``run.py``); each returns a JSON-able dict with an ``ok`` flag.

Tolerances (also in docs/SCALING.md):

- one fixed batch, CPU fp32 vs GPU ``bf16-mixed``: generation loss (CE) within relative
  :data:`CE_REL_TOL`, InfoNCE within absolute :data:`INFO_NCE_ABS_TOL`;
- FSDP (this project's mixed-precision policy) vs the plain module under the same autocast (DDP's
  per-rank numerics), same batch: loss within relative :data:`FSDP_LOSS_REL_TOL`, LoRA gradients
  within relative norm :data:`FSDP_GRAD_REL_TOL`;
- Liger-Kernel (``model.liger_kernels``) vs transformers' own modules, one fixed batch on the GPU in
  fp32: generation loss within relative :data:`LIGER_CE_REL_TOL`, InfoNCE within absolute
  :data:`LIGER_INFO_NCE_ABS_TOL`;
- evaluation: GPU ``32-true`` predictions (parsed label and generated text) identical to the CPU's;
  GPU ``bf16-mixed`` parsed labels agree on at least :data:`BF16_MIN_AGREEMENT` of the rows (bf16
  rounding can flip greedy near-ties).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

CE_REL_TOL = 2e-2
"""CPU fp32 vs GPU bf16-mixed: relative difference of the generation loss on one fixed batch."""
INFO_NCE_ABS_TOL = 0.1
"""CPU fp32 vs GPU bf16-mixed: absolute difference of InfoNCE (temperature 0.05 amplifies bf16 rounding)."""
FSDP_LOSS_REL_TOL = 1e-3
"""FSDP with the project's policy vs the unwrapped module under autocast: relative loss difference."""
FSDP_GRAD_REL_TOL = 1e-2
"""The same comparison for LoRA gradients: ``||g_fsdp - g_ref|| / ||g_ref||``."""
LIGER_CE_REL_TOL = 1e-3
"""GPU fp32, with vs without Liger's kernels: relative difference of the generation loss on one fixed batch."""
LIGER_INFO_NCE_ABS_TOL = 1e-2
"""The same comparison for InfoNCE (absolute)."""
BF16_MIN_AGREEMENT = 0.9
"""Share of evaluation rows whose GPU bf16 prediction equals the CPU fp32 prediction."""

REPO = Path(__file__).resolve().parents[2]


def compose(overrides: list[str]):
    """The training config with ``overrides`` (no output directory is created)."""
    from coin_lightning.download import compose_config

    return compose_config("train", overrides)


def fixed_batch_module(out: Path, overrides: tuple[str, ...] = ()):
    """The embedded model with a seeded non-zero LoRA in a CoinModule (eval mode: no dropout) and the
    first training batch of the embedded data, all on the CPU in fp32 (``overrides``: more config overrides)."""
    import lightning as L
    from hydra.utils import instantiate

    from coin_lightning.model.loading import load_model
    from coin_lightning.model.lora import apply_lora
    from coin_lightning.model.module import CoinModule

    cfg = compose(["model=smollm2_135m", f"output_dir={out}", *overrides])
    L.seed_everything(0)
    base, tokenizer = load_model(cfg.model)
    model = apply_lora(base, cfg.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    return CoinModule(model, loss=cfg.loss).eval(), batch


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def check_loss_cpu_vs_gpu(out: Path) -> dict[str, Any]:
    """CE and InfoNCE of one fixed batch: CPU fp32 vs GPU bf16-mixed through Lightning Fabric's autocast."""
    import lightning as L

    module, batch = fixed_batch_module(out)
    with torch.no_grad():
        cpu = module.compute(batch)
    fabric = L.Fabric(accelerator="cuda", devices=1, precision="bf16-mixed")
    module = module.to(fabric.device)
    with torch.no_grad(), fabric.autocast():
        gpu = module.compute(fabric.to_device(batch))
    ce_rel = _rel(float(gpu.ce), float(cpu.ce))
    nce_abs = abs(float(gpu.info_nce) - float(cpu.info_nce))
    return {
        "ce_cpu_fp32": float(cpu.ce), "ce_gpu_bf16": float(gpu.ce), "ce_rel_diff": ce_rel, "ce_rel_tol": CE_REL_TOL,
        "info_nce_cpu_fp32": float(cpu.info_nce), "info_nce_gpu_bf16": float(gpu.info_nce),
        "info_nce_abs_diff": nce_abs, "info_nce_abs_tol": INFO_NCE_ABS_TOL,
        "ok": ce_rel <= CE_REL_TOL and nce_abs <= INFO_NCE_ABS_TOL,
    }


def check_liger(out: Path) -> dict[str, Any]:
    """CE and InfoNCE of one fixed batch on the GPU in fp32, with ``model.liger_kernels`` false and true
    (the same LoRA weights). Runs last: Liger replaces transformers' LLaMA modules for every model built
    after it. Skipped (``ok``) without the liger-kernel package."""
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        return {"ok": True, "skipped": "liger-kernel is not installed (pip install 'coin-lightning[gpu]')"}
    plain, batch = fixed_batch_module(out)
    lora = {k: v for k, v in plain.model.state_dict().items() if "lora_" in k}
    liger, _ = fixed_batch_module(out, ("model.liger_kernels=true",))
    liger.model.load_state_dict(lora, strict=False)
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        a = plain.cuda().compute(batch)
        plain.cpu()
        b = liger.cuda().compute(batch)
    ce_rel = _rel(float(b.ce), float(a.ce))
    nce_abs = abs(float(b.info_nce) - float(a.info_nce))
    return {
        "ce": float(a.ce), "ce_liger": float(b.ce), "ce_rel_diff": ce_rel, "ce_rel_tol": LIGER_CE_REL_TOL,
        "info_nce": float(a.info_nce), "info_nce_liger": float(b.info_nce), "info_nce_abs_diff": nce_abs,
        "info_nce_abs_tol": LIGER_INFO_NCE_ABS_TOL,
        "ok": ce_rel <= LIGER_CE_REL_TOL and nce_abs <= LIGER_INFO_NCE_ABS_TOL,
    }


def _loss_and_grads(module, batch, wrap=None) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and LoRA gradients of one forward/backward, under bf16 autocast on CUDA (optionally FSDP-wrapped)."""
    model = wrap(module) if wrap else module
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch["input_ids"].is_cuda):
        loss = model(batch)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is not None:
            grads[name.replace("_fsdp_wrapped_module.", "")] = p.grad.detach().float().clone()
    return loss.detach().item(), grads


def check_fsdp_matches_ddp(out: Path, device: str = "cuda", backend: str = "nccl") -> dict[str, Any]:
    """One GPU, world size 1: FSDP with ``conf/trainer/fsdp.yaml``'s policies vs the unwrapped module
    (what each DDP rank computes), same batch, loss and LoRA gradients. Lightning's default FSDP policy
    (bf16 reduce and buffers) is measured alongside for contrast (reported, not checked).
    (``device="cpu", backend="gloo"`` runs the same code without autocast, for debugging the check.)"""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision

    from coin_lightning.training.fsdp import lora_wrap_policy, mixed_precision_policy

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        dev = torch.device(device, torch.cuda.current_device()) if device == "cuda" else torch.device(device)
        module, batch = fixed_batch_module(out)
        module = module.to(dev)
        batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
        ref_loss, ref = _loss_and_grads(copy.deepcopy(module), batch)

        def fsdp(policy, lora_precision):
            wrap = lora_wrap_policy(["LlamaDecoderLayer"], lora_precision)
            return lambda m: FSDP(m, auto_wrap_policy=wrap, mixed_precision=policy, use_orig_params=True, device_id=dev)

        bf16 = torch.bfloat16
        policies = {  # (root policy, precision the LoRA units' override follows)
            "project": (mixed_precision_policy("bf16-mixed"), "bf16-mixed"),
            "lightning_default": (MixedPrecision(param_dtype=bf16, reduce_dtype=bf16, buffer_dtype=bf16), None),
        }
        result: dict[str, Any] = {"loss_ref": ref_loss}
        for label, (policy, lora_precision) in policies.items():
            loss, grads = _loss_and_grads(copy.deepcopy(module), batch, wrap=fsdp(policy, lora_precision))
            names = sorted(ref)
            diff = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(grads[n] - ref[n]) for n in names]))
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(ref[n]) for n in names]))
            result[label] = {"loss": loss, "loss_rel_diff": _rel(loss, ref_loss), "grad_rel_diff": float(diff / norm)}
        mine = result["project"]
        result["tolerances"] = {"loss_rel": FSDP_LOSS_REL_TOL, "grad_rel": FSDP_GRAD_REL_TOL}
        result["ok"] = mine["loss_rel_diff"] <= FSDP_LOSS_REL_TOL and mine["grad_rel_diff"] <= FSDP_GRAD_REL_TOL
        return result
    finally:
        dist.destroy_process_group()


def _metric_mean(metrics_csv: Path, column: str) -> float | None:
    with metrics_csv.open() as fh:
        values = [float(r[column]) for r in csv.DictReader(fh) if r.get(column) not in (None, "")]
    return sum(values) / len(values) if values else None


def check_training(out: Path, steps: int) -> dict[str, Any]:
    """``steps`` optimizer steps of the embedded model with ``trainer=gpu`` (bf16-mixed), in this process."""
    from coin_lightning.training.run import train

    run_dir = out / "train"
    cfg = compose([
        "trainer=gpu", f"trainer.max_steps={steps}", "logger=csv", "~callbacks.progress", f"output_dir={run_dir}",
    ])
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - t0
    metrics = run_dir / "csv" / "metrics.csv"
    loss = summary["metrics"].get("train/loss")
    return {
        "steps": summary["global_step"], "wall_s": round(wall, 1),
        "tokens_per_s": _metric_mean(metrics, "train|items_per_sec"),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "final_train_loss": loss, "adapter": summary["paths"].get("adapter"),
        "ok": summary["global_step"] == steps and loss is not None and math.isfinite(loss),
    }


def _predictions(run_dir: Path) -> dict[tuple, tuple]:
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines() if line.strip()]
    return {(r["task"], r["perturbation"], r["instruction_index"], r["uid"]): (r["pred"], r["answer"]) for r in rows}


def check_evaluation(out: Path, adapter: str | None, samples: int) -> dict[str, Any]:
    """``python -m coin_lightning.evaluate`` on a few embedded-task rows (clean instructions) with the
    trained adapter: ``trainer=cpu``, ``trainer=gpu trainer.precision=32-true`` and ``trainer=gpu``."""
    runs = {"cpu": ["trainer=cpu"], "gpu_fp32": ["trainer=gpu", "trainer.precision=32-true"], "gpu_bf16": ["trainer=gpu"]}
    common = ["eval.tasks=[embedded]", "eval.levels=[clean]", f"eval.samples_per_task={samples}", "logger=csv"]
    if adapter:
        common.append(f"adapter={adapter}")
    preds, result = {}, {}
    for name, args in runs.items():
        run_dir = out / f"eval_{name}"
        cmd = [sys.executable, "-m", "coin_lightning.evaluate", *common, *args, f"hydra.run.dir={run_dir}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return {"ok": False, "failed": name, "error": tail[0]}
        result[f"{name}_wall_s"] = round(time.perf_counter() - t0, 1)
        preds[name] = _predictions(run_dir)
    cpu = preds["cpu"]
    same_rows = all(set(p) == set(cpu) for p in preds.values())
    agree = {  # fp32: label and generated text identical; bf16: the parsed label
        "gpu_fp32": sum(preds["gpu_fp32"].get(k) == v for k, v in cpu.items()) / len(cpu),
        "gpu_bf16": sum(preds["gpu_bf16"].get(k, (None,))[0] == v[0] for k, v in cpu.items()) / len(cpu),
    }
    result.update({
        "rows": len(cpu), "same_rows": same_rows, "agreement_with_cpu": agree, "bf16_min_agreement": BF16_MIN_AGREEMENT,
        "ok": same_rows and agree["gpu_fp32"] == 1.0 and agree["gpu_bf16"] >= BF16_MIN_AGREEMENT,
    })
    return result
