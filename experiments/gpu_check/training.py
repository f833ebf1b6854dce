"""The training steps of the check, each one run of the project's training entry point on a composed
config (:func:`coin_lightning.training.run.train` in this process, or ``python -m coin_lightning.train``
as its own process): packed and padded rows, ``trainer=fsdp`` with validation before fit, and a bf16
frozen base with an fp32 LoRA loaded from a model directory (as ``model=alpaca`` loads)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from experiments.gpu_check.modes import Mode
from experiments.gpu_check.processes import run_module

METER = "experiments.gpu_check.measure.StepMeter"


def run_training(mode: Mode, out: Path, trainer: tuple[str, ...] = (), extra: tuple[str, ...] = (),
                 command: bool = False) -> dict[str, Any]:
    """``mode.steps`` optimizer steps of ``model=<mode.model>`` on the embedded data, validation first
    (``callbacks.validation_curve.at_start``), a checkpoint and the adapter written at the end, into ``out``.

    Args:
        trainer: trainer overrides (default ``mode.trainer``).
        extra: more overrides (model settings).
        command: run ``python -m coin_lightning.train`` as a user does (its own process, e.g. for
            distributed strategies) instead of :func:`~coin_lightning.training.run.train` in this process.

    Returns:
        The training summary (``summary.json``) with ``check`` (what
        :class:`~experiments.gpu_check.measure.StepMeter` wrote) and ``ok``: every step ran, the last
        training loss is finite and the adapter was written (unless ``~callbacks.adapter`` is asked).

    Raises:
        RuntimeError: the training command failed (:func:`run_module`).
    """
    facts = out / "gpu_check_meter.json"
    overrides = [
        f"model={mode.model}", *(trainer or mode.trainer), "logger=csv", "~callbacks.progress",
        f"trainer.max_steps={mode.steps}", f"trainer.val_check_interval={mode.steps}", "trainer.limit_val_batches=2",
        *mode.data, f"+callbacks.gpu_check_meter._target_={METER}", f"+callbacks.gpu_check_meter.path={facts}", *extra,
    ]
    if command:
        run_module("coin_lightning.train", *overrides, f"hydra.run.dir={out}")
        summary = json.loads((out / "summary.json").read_text())
    else:
        from coin_lightning.conf import train_run
        from coin_lightning.download import compose_config
        from coin_lightning.training.run import train

        summary = train(train_run(compose_config("train", [*overrides, f"output_dir={out}"])))
    summary["check"] = json.loads(facts.read_text())
    loss = summary["metrics"].get("train/loss")
    writes_adapter = "~callbacks.adapter" not in overrides
    summary["ok"] = (summary["global_step"] == mode.steps and loss is not None and math.isfinite(loss)
                     and ("adapter" in summary["paths"] or not writes_adapter))
    return summary


def row(summary: dict[str, Any], **notes: Any) -> dict[str, Any]:
    """The table entry of a training step: its numbers and ``notes``."""
    check = summary.get("check", {})
    learning = summary.get("learning") or {}
    ce = learning.get("val/ce")
    return {
        "ok": summary["ok"], "steps": summary["global_step"], "train_loss": summary["metrics"].get("train/loss"),
        "val_ce_before": ce and ce["before"], "val_ce_after": ce and ce["after"],
        "validated_first": learning.get("before_step") == 0,
        **{k: check.get(k) for k in ("tokens_per_s", "mfu", "peak_memory_gib", "packing")},
        **notes,
    }


def packed(mode: Mode, out: Path) -> dict[str, Any]:
    """Training with packed rows (``model.packed_sequences=true``); its adapter is evaluated later."""
    summary = run_training(mode, out, extra=("model.packed_sequences=true",))
    return row(summary, adapter=summary["paths"].get("adapter"))


def _same_start(result: dict[str, Any], packed_row: dict[str, Any] | None, tol: float) -> dict[str, Any]:
    """Compare ``result``'s validation CE before training with the packed run's (same seed, same LoRA
    initialisation, no dropout): relative difference within ``tol``, else ``ok`` becomes False."""
    reference = (packed_row or {}).get("val_ce_before")
    if reference is None or result["val_ce_before"] is None:
        result.update(ok=False, error="no validation CE before training to compare with the packed run's")
        return result
    rel = abs(result["val_ce_before"] - reference) / abs(reference)
    result.update(val_ce_rel_diff_vs_packed=rel, rel_tol=tol, ok=result["ok"] and rel <= tol)
    return result


def padded(mode: Mode, out: Path, packed_row: dict[str, Any] | None) -> dict[str, Any]:
    """Training with padded rows (``model.packed_sequences=false``), same seed as :func:`packed`; the
    validation CE before training agrees with the packed run's within ``mode.packing_rel_tol``."""
    result = row(run_training(mode, out, extra=("model.packed_sequences=false",)))
    return _same_start(result, packed_row, mode.packing_rel_tol)


def fsdp_validation_first(mode: Mode, out: Path, packed_row: dict[str, Any] | None) -> dict[str, Any]:
    """``trainer=fsdp`` with one device, as a user runs it (``python -m coin_lightning.train``):
    Lightning's FSDP strategy wraps the model, validates before fit (Lightning #19015), trains and
    validates after. One device writes no checkpoint (:data:`~experiments.gpu_check.modes.NO_CHECKPOINTS`;
    two-rank checkpoints, export and resume are ``tests/training/test_fsdp_lightning.py``'s). The
    validation CE before training agrees with the one-device packed run's (what each DDP rank
    computes) within ``mode.fsdp_rel_tol``: the project's FSDP mixed-precision policy keeps DDP's
    numerics."""
    summary = run_training(mode, out, trainer=mode.fsdp, command=True)
    result = row(summary)
    result["ok"] = result["ok"] and result["validated_first"]
    return _same_start(result, packed_row, mode.fsdp_rel_tol)


def save_base(mode: Mode, directory: Path) -> Path:
    """Save ``model=<mode.model>``'s base weights and tokenizer as a transformers model directory."""
    from coin_lightning.download import compose_config
    from coin_lightning.model.loading import load_model

    cfg = compose_config("train", [f"model={mode.model}", "output_dir=unused"])
    base, tokenizer = load_model(cfg.model)
    base.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    del base
    return directory


def low_precision_base(mode: Mode, out: Path) -> dict[str, Any]:
    """The base loaded from a model directory in ``mode.base_dtype`` (``model.dtype``, as
    ``model=alpaca`` loads LLaMA-7B in bf16), LoRA trained on it: the base stays in that dtype and
    the LoRA weights in fp32."""
    directory = save_base(mode, out / "base")
    summary = run_training(mode, out / "run", extra=(f"model.name_or_path={directory}", f"model.dtype={mode.base_dtype}"))
    base_dtypes, lora_dtypes = summary["check"]["base_dtypes"], summary["check"]["lora_dtypes"]
    result = row(summary, base_dtypes=base_dtypes, lora_dtypes=lora_dtypes)
    result["ok"] = result["ok"] and base_dtypes == [mode.base_dtype] and lora_dtypes == ["float32"]
    return result
