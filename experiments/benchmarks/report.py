"""The benchmark's targets and its markdown report (``bench.md``)."""
from __future__ import annotations

TARGETS: dict[str, tuple[str, float | bool]] = {
    "contrastive_overhead": ("<=", 0.05),
    "speedup_vs_reference": (">=", 1.25),
    "useful_flop_fraction": (">=", 0.70),
    "padding_efficiency": (">=", 0.90),
    "prefix_cache_speedup_rank": (">=", 1.30),
    "prefix_cache_speedup_generate": (">=", 1.30),
    "prefix_cache_identical": ("==", True),
}
"""Figure -> (comparison, target), from the project's performance issue (docs/PERFORMANCE.md)."""

LABELS = {
    "contrastive_overhead": "CoIN step (lambda=1000) vs CIT step (lambda=0): extra time",
    "speedup_vs_reference": "Speed-up over the reference-style step",
    "useful_flop_fraction": "Useful FLOP/s / matmul peak, same round (CoIN step)",
    "padding_efficiency": "Padding efficiency (real / computed tokens), length-grouped training epoch",
    "prefix_cache_speedup_rank": "Prefix-cache speed-up, rank",
    "prefix_cache_speedup_generate": "Prefix-cache speed-up, generate",
    "prefix_cache_identical": "Identical predictions with and without the prefix cache",
}

VARIANT_LABELS = {
    "coin": "CoIN step (lambda=1000)",
    "cit": "CIT step (lambda=0)",
    "reference": "reference-style step",
    "coin_padded": "CoIN step, padded rows (no packing)",
    "coin_torch_dropout": "CoIN step, peft's nn.Dropout",
}


def _fmt(value, name: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "contrastive_overhead":
        return f"{100 * value:+.1f}%"
    if name in ("useful_flop_fraction", "padding_efficiency"):
        return f"{value:.3f}"
    if isinstance(value, (int, float)):
        return f"{value:.2f}x" if "speedup" in name else f"{value:.3g}"
    return str(value)


def _mib(v) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def render_markdown(results: dict) -> str:
    """The report: settings, the targets table, training variants and evaluation throughput."""
    m, s, t, e = results["machine"], results["settings"], results["training"], results.get("evaluation")
    v = m["versions"]
    widths = ", ".join(f"{b['rows']}x{b['width']}" for b in results["shapes"]["batches"])
    resp = sum(b["response_tokens"] for b in results["shapes"]["batches"]) / max(
        1, sum(b["rows"] for b in results["shapes"]["batches"]))
    d = results["shapes"]["decoder"]
    lines = [
        "# coin-lightning benchmark",
        "",
        f"`{results['command']}` on {results['date']}",
        "",
        f"- machine: {m['cpu']}, {m['usable_cpus']} usable CPU(s), load average {m['load_average_1min']:.2f} at the end"
        + (f"; GPU {m['gpu']}" if m.get("gpu") else ""),
        f"- versions: torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}, "
        f"lightning {v['lightning']}, Python {m['python']}",
        f"- settings: {s['model']} ({d['layers']} layers, hidden {d['hidden']}, vocab {d['vocab']}), {s['precision']}, "
        f"{s['threads']} thread(s), {s['attn']} attention, LoRA r={s['lora']['r']} on "
        f"{','.join(s['lora']['targets'])}, dropout {s['lora']['dropout']}"
        f"{' (LoraDropout)' if s.get('cpu_speedups') else ''}, lambda {s['lambda']}, "
        f"gradient checkpointing {s['gradient_checkpointing']}, compile {s['compile']}",
        f"- timed batches (rows x width): {widths}; {resp:.1f} response tokens per row; data: "
        f"{results['data']['source']}",
        f"- median of {s['repeats']} (training) / {s['eval_repeats']} (evaluation) interleaved rounds after "
        f"{s['warmup']} warm-up round(s), "
        f"{'process CPU time' if s['clock'] == 'cpu' else 'wall-clock time'}; ratios are medians of per-round ratios",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, row in results["targets"].items():
        met = "n/a" if row["met"] is None else ("yes" if row["met"] else "**no**")
        op, goal = TARGETS[name]
        lines.append(f"| {LABELS[name]} | {_fmt(row['value'], name)} | {op} {_fmt(goal, name)} | {met} |")
    lines += [
        "",
        f"Matmul peak (torch.mm {s['matmul_size']}^2, same threads and dtype, timed next to the CoIN step in every "
        f"round): {t['matmul_median_gflop_per_s']:.1f} GFLOP/s median round, {t['matmul_peak_gflop_per_s']:.1f} best. "
        f"The useful-FLOP fraction is the median over rounds of the step's useful FLOP/s over the matmul rate of the "
        f"same round; against the best round's peak it is "
        f"{_fmt(t.get('useful_flop_fraction_best_peak'), 'useful_flop_fraction')}.",
    ]
    if "packing_speedup" in t:
        lines.append(
            f"Packed rows (model.packed_sequences) instead of the padded batch: CoIN step {t['packing_speedup']:.2f}x "
            f"faster (useful FLOP fraction {t['useful_flop_fraction_padded']:.3f} padded).")
    if "useful_flop_fraction_torch_dropout" in t:
        lines.append(
            f"LoRA dropout masks from geometric gaps (LoraDropout) instead of peft's nn.Dropout: CoIN step "
            f"{t['fast_dropout_speedup']:.2f}x faster (useful FLOP fraction {t['useful_flop_fraction_torch_dropout']:.3f} "
            f"with nn.Dropout); speed-up over the reference-style step with the same nn.Dropout in both: "
            f"{t['speedup_vs_reference_same_dropout']:.2f}x.")
    lines += [
        "",
        "| training step | s/step | tokens/s | useful GFLOP/step | computed GFLOP/step | useful GFLOP/s "
        "| peak memory MiB | saved for backward MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in t["variants"].items():
        lines.append(
            f"| {VARIANT_LABELS.get(name, name)} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{r['useful_gflop_per_step']:.1f} | {r['computed_gflop_per_step']:.1f} | {r['useful_gflop_per_s']:.1f} | "
            f"{_mib(r.get('peak_mib'))} | {_mib(r.get('saved_for_backward_mib'))} |"
        )
    pad = results["data"]["padding"]
    lines += [
        "",
        f"Padding (real / computed tokens, one epoch of {pad['length_grouped']['batches']} micro-batches of "
        f"{pad['pairs_per_batch']} pairs, groups kept whole: {_fmt(pad['length_grouped']['whole_items'])}): "
        f"length-grouped {pad['length_grouped']['efficiency']:.3f}, random order "
        f"{pad['random_batches']['efficiency']:.3f}.",
    ]
    if e:
        lines += [
            "",
            f"Evaluation: {e['task']}, {e['rows']} rows, batch {e['batch_size']} (generate decodes "
            f"{e.get('decode_batch_size', e['batch_size'])} rows together), prompts of "
            f"{e['mean_prompt_tokens']:.0f} tokens on average of which {e['shared_prefix_tokens']} shared.",
            "",
            "| method | examples/s, prefix cache | examples/s, no cache | speed-up | identical predictions |",
            "|---|---|---|---|---|",
        ]
        for method in ("rank", "generate"):
            r = e[method]
            lines.append(
                f"| {method} | {r['examples_per_s_cached']:.2f} | {r['examples_per_s_uncached']:.2f} | "
                f"{r['cache_speedup']:.2f}x | {_fmt(r['identical_predictions'])} |"
            )
    lines.append("")
    return "\n".join(lines)
