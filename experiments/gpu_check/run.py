"""``make gpu-check`` / ``python -m experiments.gpu_check.run [--steps 100] [--samples 2] [--out DIR]``.

For a machine with a CUDA GPU (CI never runs it). Checks, with the tolerances stated in
``experiments/gpu_check/checks.py`` and docs/SCALING.md:

1. ``--steps`` (100) training steps of the embedded SmolLM2-135M with ``trainer=gpu`` (bf16-mixed):
   the steps complete with a finite loss; throughput (real tokens/s) and peak GPU memory are printed;
2. the loss of one fixed batch on the CPU in fp32 and on the GPU in bf16-mixed agree;
3. FSDP with the project's mixed-precision policy matches the unwrapped module (DDP's per-rank
   numerics) on that batch, loss and LoRA gradients;
4. ``python -m coin_lightning.evaluate`` with the trained adapter on a few embedded-task rows gives
   the CPU's predictions on the GPU (fp32: identical; bf16: nearly all);
5. with liger-kernel installed, ``model.liger_kernels=true`` gives the loss of transformers' own
   modules on that batch (GPU fp32); skipped without the package.

Writes ``<out>/gpu_check.json`` and prints a summary; exits 0 when every check passes, 1 otherwise,
and 2 with one line when there is no CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    """Run the checks (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m experiments.gpu_check.run")
    ap.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    ap.add_argument("--samples", type=int, default=2, help="evaluation rows per embedded task (default 2)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default experiments/gpu_check/results/<time>)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was checked")
        return 2

    from coin_lightning.io import write_json
    from experiments.gpu_check import checks

    out = args.out or Path(__file__).parent / "results" / time.strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    steps = [
        ("training", lambda: checks.check_training(out, args.steps)),  # first: its peak memory is clean
        ("loss_cpu_vs_gpu", lambda: checks.check_loss_cpu_vs_gpu(out / "loss")),
        ("fsdp_vs_ddp", lambda: checks.check_fsdp_matches_ddp(out / "fsdp")),
        ("evaluation", lambda: checks.check_evaluation(out, report["training"].get("adapter"), args.samples)),
        ("liger", lambda: checks.check_liger(out / "liger")),  # last: Liger patches transformers' LLaMA modules
    ]
    for name, check in steps:
        print(f"gpu-check: {name} ...", flush=True)
        try:
            report[name] = check()
        except Exception as exc:  # noqa: BLE001 - one check failing must not hide the others' results
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        torch.cuda.empty_cache()
        print(f"gpu-check: {name}: {json.dumps(report[name], default=str)}", flush=True)
    write_json(out / "gpu_check.json", report)
    t = report["training"]
    if t.get("ok") and t.get("tokens_per_s") is not None:
        print(f"gpu-check: throughput {t['tokens_per_s']:.0f} tokens/s, peak memory {t['peak_memory_gib']:.2f} GiB")
    failed = [name for name, _ in steps if not report[name].get("ok")]
    print(f"gpu-check: {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'} ({out / 'gpu_check.json'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
