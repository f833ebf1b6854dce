"""Figures, output comparison and verdict of ``python -m experiments.benchmarks.commits``, and its markdown.

Speed ratios are medians over rounds of ``base time / head time`` of the same round (>1: head faster;
for throughput that is head/base examples per second, for the step base/head seconds). A
measurement fails when head takes more than ``1 + tolerance`` times base's time (ratio below
``1 / (1 + tolerance)``).
"""
from __future__ import annotations

import math
from typing import Any

from experiments.benchmarks.timing import median, paired_ratio

LABELS = {
    "coin": "CoIN training step, s/step",
    "rank": "evaluation rank, examples/s",
    "generate": "evaluation generate, examples/s",
}
"""Measurement -> table label (the CoIN step's lambda comes from the trees' ``conf/loss``)."""


def figures(rounds: dict[str, list[dict]], clock: str, n_batches: int, n_rows: int) -> dict[str, dict]:
    """Per measurement: ``base``, ``head`` (s/step or examples/s from median round times), ``ratio``
    (median of per-round base/head time ratios) and the raw ``base_s``/``head_s`` times of ``clock``.

    Args:
        rounds: ``"<side>/<what>"`` -> timed replies of the probe, in round order.
    """
    out = {}
    for what in LABELS:
        base = [r[f"{clock}_s"] for r in rounds[f"base/{what}"]]
        head = [r[f"{clock}_s"] for r in rounds[f"head/{what}"]]

        def value(times: list[float], coin: bool = what == "coin") -> float:
            return median(times) / n_batches if coin else n_rows / median(times)

        out[what] = {"base": value(base), "head": value(head), "ratio": paired_ratio(base, head),
                     "round_ratios": [b / h for b, h in zip(base, head)], "base_s": base, "head_s": head}
    return out


def _max_rel_diff(a: list[float | None], b: list[float | None]) -> float:
    diffs = [0.0 if x is None and y is None else math.inf if x is None or y is None
             else abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)]
    return max(diffs, default=0.0) if len(a) == len(b) else math.inf


def compare_outputs(outputs: dict[str, list[dict]], loss_rtol: float) -> dict[str, dict]:
    """Whether base and head computed the same things on the same inputs.

    Args:
        outputs: ``"<side>/<what>"`` -> the ``output`` of every run of that measurement (warm-up first).
        loss_rtol: largest relative difference of a loss value (CE, InfoNCE, total) still called equal.

    Returns:
        ``coin``: ``identical`` (every loss of every step of both sides within ``loss_rtol`` of base's
        warm-up step) and ``max_rel_diff``; ``rank``/``generate``: ``identical`` (the same label ids,
        and for ``generate`` the same decoded text, in every run of both sides), ``differing_rows``
        (head's warm-up against base's) and for ``rank`` ``max_score_diff`` (nats). A ``generate``
        answer matches when one side's text is a prefix of the other's: a row stopped once its label is
        decided (``AnswerDecided``) ends early, with the same label id.
    """
    out: dict[str, dict] = {}
    ref = outputs["base/coin"][0]["losses"]
    worst = 0.0
    for run in outputs["base/coin"] + outputs["head/coin"]:
        for step, step_ref in zip(run["losses"], ref, strict=True):
            for key in ("loss", "ce", "info_nce"):
                worst = max(worst, _max_rel_diff([step.get(key)], [step_ref.get(key)]))
    out["coin"] = {"identical": worst <= loss_rtol, "max_rel_diff": worst,
                   "losses_base": ref, "losses_head": outputs["head/coin"][0]["losses"]}
    def agree(run: dict, ref: dict, i: int) -> bool:
        if run["pred"][i] != ref["pred"][i]:
            return False
        a, b = run.get("answer"), ref.get("answer")
        return a is None or a[i].startswith(b[i]) or b[i].startswith(a[i])

    for what in ("rank", "generate"):
        first = outputs[f"base/{what}"][0]
        rows = range(len(first["pred"]))
        same = all(agree(run, first, i) for run in outputs[f"base/{what}"] + outputs[f"head/{what}"] for i in rows)
        head = outputs[f"head/{what}"][0]
        differing = [i for i in rows if not agree(head, first, i)]
        entry: dict[str, Any] = {"identical": same, "differing_rows": differing}
        if what == "rank":
            entry["max_score_diff"] = max((abs(x - y) for a, b in zip(first["scores"], head["scores"])
                                           for x, y in zip(a, b)), default=0.0)
        out[what] = entry
    return out


def verdict(figs: dict[str, dict], same: dict[str, dict], tolerance: float) -> dict[str, Any]:
    """``passed`` unless head is more than ``tolerance`` slower on a measurement or an output differs;
    ``reasons`` lists each failure in one line."""
    reasons = []
    for what, f in figs.items():
        if f["ratio"] < 1.0 / (1.0 + tolerance):
            reasons.append(f"{what}: head takes {1 / f['ratio']:.3f}x base's time (limit {1 + tolerance:.2f}x)")
        if not same[what]["identical"]:
            reasons.append(f"{what}: outputs differ between base and head")
    return {"passed": not reasons, "reasons": reasons, "tolerance": tolerance}


def render_markdown(results: dict[str, Any]) -> str:
    """The side-by-side table, the host and the verdict."""
    figs, same, s = results["figures"], results["outputs"], results["settings"]
    base, head = results["trees"]["base"], results["trees"]["head"]
    m = results["machine"]
    lines = [
        f"## {base['label']} (base) vs {head['label']} (head)",
        "",
        f"Host CPU: {m['cpu']} ({m['usable_cpus']} usable CPUs); torch {m['versions']['torch']}; "
        f"{s['threads']} torch threads; {s['clock']} clock; {s['rounds']} alternating rounds after 1 warm-up; "
        f"model {s['model']}; {s['batches']} training batch(es) of {s['batch_shape']}; "
        f"{s['eval_rows']} {s['eval_task']} rows, batch {s['eval_batch_size']}.",
        "",
        "| measurement | base | head | speed, head vs base | same output | within tolerance |",
        "|---|---|---|---|---|---|",
    ]
    for what, f in figs.items():
        fmt = "{:.3f}" if what == "coin" else "{:.2f}"
        kind = "base/head time" if what == "coin" else "head/base examples/s"
        o = same[what]
        note = ("yes" if o["identical"] else "no") + (
            f" (losses, max rel. diff {o['max_rel_diff']:.1e})" if what == "coin"
            else f" ({len(o['differing_rows'])} rows differ)" if o["differing_rows"] else "")
        ok = "yes" if f["ratio"] >= 1.0 / (1.0 + results["verdict"]["tolerance"]) else "no"
        lines.append(f"| {LABELS[what]} | {fmt.format(f['base'])} | {fmt.format(f['head'])} | "
                     f"{f['ratio']:.3f}x ({kind}) | {note} | {ok} |")
    lines.append("")
    for what, f in figs.items():
        lines.append(f"- per-round ratios, {what}: " + ", ".join(f"{r:.3f}" for r in f["round_ratios"]))
    v = results["verdict"]
    lines += ["", f"Verdict: {'PASS' if v['passed'] else 'FAIL'} (head at most {1 + v['tolerance']:.2f}x base's time, "
              "identical outputs)" + "".join(f"\n- {r}" for r in v["reasons"]), ""]
    return "\n".join(lines)
