"""``make gpu-check`` / ``python -m experiments.gpu_check.run [--dry] [--steps N] [--out DIR]``.

Runs in the current environment and installs nothing; offline (:data:`experiments.gpu_check.needs.OFFLINE`).
It first prints what it needs beyond torch and stops with one ``error: ...`` line (status 2, nothing
written) when something is missing. Then, each through the project's own entry points, on one CUDA
GPU in ``bf16-mixed`` with the embedded SmolLM2-135M (``--dry``: the CPU in fp32 with the tiny
random LLaMA, gloo; GPU-only steps are reported as skipped with the reason):

1. ``train_packed`` / ``train_padded``: training with packed and with padded rows, the same seed;
   the validation CE before training agrees between the two;
2. ``fsdp_validate_first``: ``trainer=fsdp`` on one device, Lightning's FSDP strategy: validation
   before fit, fit, checkpoint and adapter export;
3. ``base_lowp_lora_fp32``: a bf16 frozen base (``model.dtype``, loaded from a model directory as
   ``model=alpaca`` loads) with an fp32 LoRA;
4. ``liger``: ``model.liger_kernels=true`` against transformers' modules on one batch, the reference
   computed before Liger patches anything (:mod:`experiments.gpu_check.liger`);
5. ``eval_vs_cpu``: ``evaluate`` with the trained adapter on the device and on the CPU, parsed labels
   compared row by row.

Training steps report tokens/s, MFU and peak memory (:mod:`experiments.gpu_check.measure`). Prints
a table, writes ``<out>/gpu_check.json`` and each step's full output to ``<out>/<step>.log``; exits
0 when every step passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.gpu_check import needs
from experiments.gpu_check.processes import REPO, output_to


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[-1] if text else "") or type(exc).__name__


def plan(mode, out: Path, results: dict[str, dict]) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """The steps in order, as ``(name, function returning the step's result with an "ok" flag)``."""
    from experiments.gpu_check import evaluation, liger, training

    return [
        ("train_packed", lambda: training.packed(mode, out / "train_packed")),
        ("train_padded", lambda: training.padded(mode, out / "train_padded", results.get("train_packed"))),
        ("fsdp_validate_first", lambda: training.fsdp_validation_first(mode, out / "fsdp", results.get("train_packed"))),
        ("base_lowp_lora_fp32", lambda: training.low_precision_base(mode, out / "base_lowp")),
        ("liger", lambda: liger.compare(mode.model, out / "liger")),
        ("eval_vs_cpu", lambda: evaluation.device_vs_cpu(
            mode, out / "eval", results.get("train_packed", {}).get("adapter"))),
    ]


def run_step(name: str, fn: Callable[[], dict[str, Any]], log: Path) -> dict[str, Any]:
    """Run one step with its output in ``log``; a failure (exception or the entry points' one-line
    ``SystemExit``) becomes the result ``{"status": "FAILED", "error": <last line>}``."""
    t0 = time.perf_counter()
    try:
        with output_to(log):
            result = fn()
        result["status"] = "ok" if result.pop("ok") else "FAILED"
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one step failing must not hide the others' results
        result = {"status": "FAILED", "error": _one_line(exc)}
    result.update(wall_s=time.perf_counter() - t0, log=str(log))
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the check (see the module docstring); returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m experiments.gpu_check.run", description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="the same steps on the CPU (gloo, fp32, tiny LLaMA)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per training step (default 100; dry 4)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default outputs/gpu_check/<mode>-<time>)")
    args = ap.parse_args(argv)
    gpu = not args.dry
    print("gpu-check needs, beyond torch: " + ", ".join(dist for _, dist, _ in needs.packages(gpu))
          + (", a CUDA GPU" if gpu else ""), flush=True)
    problem = needs.missing(gpu)
    if problem:
        print(problem)
        return 2
    needs.go_offline()

    import dataclasses

    import torch

    from coin_lightning.io import write_json
    from experiments.gpu_check.modes import DRY, GPU, GPU_ONLY_REASON
    from experiments.gpu_check.report import table

    mode = DRY if args.dry else GPU
    if args.steps is not None:
        mode = dataclasses.replace(mode, steps=args.steps)
    out = (args.out or REPO / "outputs" / "gpu_check" / f"{mode.name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    print(f"gpu-check ({mode.name}): {device}, torch {torch.__version__}; output in {out}", flush=True)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name, fn in plan(mode, out, results):
        if name in mode.gpu_only:
            results[name] = {"status": "skipped", "reason": GPU_ONLY_REASON}
        else:
            results[name] = run_step(name, fn, out / f"{name}.log")
            if gpu:
                torch.cuda.empty_cache()
        print(f"gpu-check: {name}: {results[name]['status']}", flush=True)
    wall = time.perf_counter() - t0
    write_json(out / "gpu_check.json", {"mode": mode.name, "device": device, "torch": torch.__version__,
                                        "wall_s": wall, "steps": results})
    print(table(results))
    failed = [name for name, r in results.items() if r["status"] == "FAILED"]
    verdict = f"FAILED: {', '.join(failed)} (logs in {out})" if failed else "all steps passed"
    print(f"gpu-check ({mode.name}): {verdict}; {wall:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
