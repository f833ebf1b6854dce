"""The evaluation step: the project's evaluation entry point (:func:`coin_lightning.evaluate.run`,
what ``python -m coin_lightning.evaluate`` runs) on the device and on the CPU in fp32, with the
trained adapter, on the same embedded-task rows; the parsed labels are compared row by row."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from experiments.gpu_check.modes import Mode

CPU = ("trainer=cpu",)


def parsed_labels(run_dir: Path) -> dict[tuple, int]:
    """``{(task, perturbation, instruction index, uid): parsed label id}`` of a run's ``predictions.jsonl``."""
    from coin_lightning.eval.scoring.metrics import FILES

    rows = [json.loads(line) for line in (run_dir / FILES["predictions"]).read_text().splitlines() if line.strip()]
    return {(r["task"], r["perturbation"], r["instruction_index"], r["uid"]): r["pred"] for r in rows}


def evaluate_on(mode: Mode, out: Path, trainer: tuple[str, ...], adapter: str | None) -> tuple[dict[tuple, int], float]:
    """One evaluation run (clean instructions, the rows of ``mode.evaluation``) into ``out``:
    its parsed labels and wall time in seconds."""
    from coin_lightning.download import compose_config
    from coin_lightning.evaluate import run as evaluate

    overrides = [f"model={mode.model}", *trainer, f"output_dir={out}", "logger=csv", "eval.levels=[clean]",
                 *mode.evaluation]
    if adapter:
        overrides.append(f"adapter={adapter}")
    t0 = time.perf_counter()
    evaluate(compose_config("eval", overrides))
    return parsed_labels(out), time.perf_counter() - t0


def device_vs_cpu(mode: Mode, out: Path, adapter: str | None) -> dict[str, Any]:
    """Evaluate on the CPU in fp32 and on every run of ``mode.eval_runs``.

    Returns:
        Rows evaluated, the share of rows whose parsed label equals the CPU's per run, the minimum
        shares, wall times; ``ok`` when every run covers the CPU's rows and reaches its minimum.
    """
    cpu, seconds = evaluate_on(mode, out / "cpu", CPU, adapter)
    result: dict[str, Any] = {"rows": len(cpu), "wall_s": {"cpu": seconds}, "agreement": {}, "min_agreement": {}}
    ok = bool(cpu)
    for name, run in mode.eval_runs.items():
        labels, seconds = evaluate_on(mode, out / name, run.overrides, adapter)
        share = sum(labels.get(key) == label for key, label in cpu.items()) / max(len(cpu), 1)
        result["wall_s"][name] = seconds
        result["agreement"][name] = share
        result["min_agreement"][name] = run.min_agreement
        ok = ok and set(labels) == set(cpu) and share >= run.min_agreement
    result["ok"] = ok
    return result
