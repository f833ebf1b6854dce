"""The check's compact table: one line per step with its status, time and key numbers."""
from __future__ import annotations

from typing import Any

COLUMNS = ("step", "status", "s", "tokens/s", "MFU", "peak GiB", "notes")
ROWS = {"kernel": "packed (project kernel)", "transformers": "packed (transformers varlen)", "padded": "padded"}
"""How the training forward laid out its rows, by packing mode (``coin_lightning.model.packing``)."""
NOTES_WIDTH = 160
"""Notes longer than this are cut (the whole error is in ``gpu_check.json`` and the step's log)."""


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def notes(result: dict[str, Any]) -> str:
    """The step's key facts in a few words (error or skip reason first)."""
    if "error" in result:
        return result["error"]
    if "reason" in result:
        return result["reason"]
    parts = []
    if "packing" in result:
        parts.append(f"rows {ROWS.get(result['packing'], result['packing'])}, loss {_num(result['train_loss'], '.3g')}, "
                     f"val CE {_num(result['val_ce_before'], '.4g')}->{_num(result['val_ce_after'], '.4g')}")
    if "val_ce_rel_diff_vs_packed" in result:
        parts.append(f"step-0 val CE vs train_packed {result['val_ce_rel_diff_vs_packed']:.1e} (tol {result['rel_tol']:g})")
    if "checkpoint" in result:
        parts.append(f"validated first: {result['validated_first']}, checkpoint: {result['checkpoint'] is not None}")
    if "base_dtypes" in result and result.get("lora_dtypes"):
        parts.append(f"base {'/'.join(result['base_dtypes'])}, LoRA {'/'.join(result['lora_dtypes'])}")
    if "ce_rel_diff" in result:
        parts.append(f"CE rel {result['ce_rel_diff']:.1e} (tol {result['ce_rel_tol']:g}), InfoNCE abs "
                     f"{result['info_nce_abs_diff']:.1e} (tol {result['info_nce_abs_tol']:g}), "
                     f"{result['liger_modules']} Liger modules")
    if "agreement" in result:
        shares = ", ".join(f"{k} {v:.0%} (min {result['min_agreement'][k]:.0%})" for k, v in result["agreement"].items())
        parts.append(f"{result['rows']} rows, parsed labels = CPU fp32: {shares}")
    return "; ".join(parts)


def _cut(text: str) -> str:
    return text if len(text) <= NOTES_WIDTH else text[: NOTES_WIDTH - 3] + "..."


def table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table of ``{step: result}`` (results carry ``status`` and ``wall_s``)."""
    rows = [COLUMNS]
    for name, r in results.items():
        rows.append((
            name, r["status"], _num(r.get("wall_s"), ".0f"), _num(r.get("tokens_per_s"), ".0f"),
            _num(r.get("mfu"), ".1%"), _num(r.get("peak_memory_gib"), ".2f"), _cut(notes(r)),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows)
