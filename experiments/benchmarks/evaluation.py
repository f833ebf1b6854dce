"""Evaluation throughput: examples per second of ``rank`` and ``generate``, with and without the
prefix key/value cache, and whether both paths predict the same labels.

The predictor (:class:`coin_lightning.eval.engine.predict.Predictor`) batches the rows of one instruction;
with ``prefix_cache`` the tokens all its prompts share (the instruction and the prompt wrapper up to
the content) are encoded once and their key/value cache is reused by every batch.
"""
from __future__ import annotations

from typing import Any

import torch

from experiments.benchmarks.batches import EvalRows
from experiments.benchmarks.steps import autocast
from experiments.benchmarks.timing import median, paired_ratio, time_interleaved


def prompt_stats(predictor, rows: EvalRows) -> dict[str, float]:
    """Token counts of the prompts: ``shared_prefix`` (cached part) and ``mean_prompt``."""
    from coin_lightning.eval.engine.decode import shared_prefix_length

    seqs = predictor.encode([predictor.prompt(rows.instruction, c) for c in rows.contents])
    shared = shared_prefix_length(seqs) if len(seqs) > 1 else 0
    return {"shared_prefix_tokens": shared, "mean_prompt_tokens": sum(map(len, seqs)) / len(seqs)}


def eval_throughput(
    model,
    tokenizer,
    rows: EvalRows,
    batch_size: int,
    repeats: int,
    warmup: int,
    device: torch.device,
    precision: str = "fp32",
    max_new_tokens: int = 7,
    clock: str = "wall",
    decode_batch_size: int | None = 64,
) -> dict[str, Any]:
    """Time ``predict`` for rank/generate x cached/uncached on the same rows, interleaved.

    Warm-up rounds run each variant on the first ``batch_size`` rows only.

    Returns:
        ``rows``, ``task``, prompt token counts, and per method: ``examples_per_s`` (cached and
        uncached, from median times of ``clock``), ``cache_speedup`` (median of per-round time ratios),
        ``identical_predictions`` (same label ids, and for ``generate`` the same decoded text),
        ``max_score_diff`` (``rank``: largest log-likelihood difference, nats) and the raw times.
    """
    from coin_lightning.eval.engine.predict import Predictor

    predictors = {
        f"{method}/{'cached' if cache else 'uncached'}": Predictor(
            model, tokenizer, method=method, batch_size=batch_size, max_new_tokens=max_new_tokens, prefix_cache=cache,
            decode_batch_size=decode_batch_size,
        )
        for method in ("rank", "generate")
        for cache in (True, False)
    }
    last: dict[str, list] = {}

    def runner(name: str, contents: list[str]):
        def fn():
            with autocast(device, precision):
                last[name] = predictors[name].predict(rows.instruction, contents, rows.label_words)

        return fn

    fns = {name: runner(name, rows.contents) for name in predictors}
    warm = {name: runner(name, rows.contents[:batch_size]) for name in predictors}
    clocks = time_interleaved(fns, repeats, warmup, device, warmup_fns=warm)
    times = clocks[clock]
    n = len(rows.contents)
    out: dict[str, Any] = {"task": rows.task, "rows": n, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                           "decode_batch_size": predictors["generate/cached"].decode_batch_size}
    out.update(prompt_stats(predictors["rank/cached"], rows))
    for method in ("rank", "generate"):
        cached, uncached = last[f"{method}/cached"], last[f"{method}/uncached"]
        same = [a.pred for a in cached] == [b.pred for b in uncached]
        if method == "generate":
            same = same and [a.answer for a in cached] == [b.answer for b in uncached]
        entry: dict[str, Any] = {
            "examples_per_s_cached": n / median(times[f"{method}/cached"]),
            "examples_per_s_uncached": n / median(times[f"{method}/uncached"]),
            "cache_speedup": paired_ratio(times[f"{method}/uncached"], times[f"{method}/cached"]),
            "identical_predictions": same,
            "round_wall_s": {k.split("/")[1]: v for k, v in clocks["wall"].items() if k.startswith(method)},
            "round_cpu_s": {k.split("/")[1]: v for k, v in clocks["cpu"].items() if k.startswith(method)},
        }
        if method == "rank":
            entry["max_score_diff"] = max(
                max(abs(x - y) for x, y in zip(a.scores, b.scores)) for a, b in zip(cached, uncached)
            )
        out[method] = entry
    return out
