"""Smoke test of `make bench` on the tiny LLaMA (1 round), and checks of its building blocks."""
from __future__ import annotations

import json

import pytest
import torch

from coin_lightning.losses import info_nce
from coin_lightning.model import packing
from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from coin_lightning.speedups.dropout import LoraDropout
from experiments.benchmarks import run as bench
from experiments.benchmarks.batches import padding_stats, pick_batches, train_data
from experiments.benchmarks.report import TARGETS
from experiments.benchmarks.steps import (
    padded_rows,
    reference_loss,
    swapped_lora_dropout,
    torch_lora_dropout,
)
from experiments.benchmarks.timing import paired_ratio, time_interleaved
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, toy_rows

SMOKE = [
    "--model", "tiny_llama", "--data", "embedded", "--repeats", "3", "--warmup", "0", "--batches", "1",
    "--threads", "1", "--matmul-size", "128", "--eval-rows", "6", "--eval-batch-size", "3", "--eval-repeats", "1",
    "--lora-dropout", "0.1",
]


def test_bench_writes_json_and_markdown(tmp_path, capsys):
    assert bench.main([*SMOKE, "--output", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    md = (tmp_path / "bench.md").read_text()
    assert set(data["targets"]) == set(TARGETS)
    for name in ("coin", "cit", "reference", "coin_padded", "coin_torch_dropout"):
        v = data["training"]["variants"][name]
        assert len(v["round_wall_s"]) == len(v["round_cpu_s"]) == 3 and v["step_s"] > 0
        assert v["useful_gflop_per_step"] <= v["computed_gflop_per_step"]
    # the reference-style step computes the LM head on every position: more FLOPs than the project's
    variants = data["training"]["variants"]
    assert variants["reference"]["computed_gflop_per_step"] > variants["coin"]["computed_gflop_per_step"]
    # packed rows compute no padding: fewer FLOPs than the same step on the padded batch, >= the useful ones
    assert variants["coin_padded"]["computed_gflop_per_step"] > variants["coin"]["computed_gflop_per_step"]
    for key in ("packing_speedup", "fast_dropout_speedup", "speedup_vs_reference_same_dropout"):
        assert data["training"][key] > 0
    # the fraction, recomputed from the raw round times: each round's step against the same round's matmuls
    t, clock = data["training"], data["settings"]["clock"]
    steps, mms = t["variants"]["coin"][f"round_{clock}_s"], t[f"matmul_round_{clock}_s"]
    useful = t["variants"]["coin"]["useful_gflop_per_step"] * 1e9
    per_round = sorted(useful / s / (t["matmul_flops_per_round"] / m) for s, m in zip(steps, mms))
    assert t["useful_flop_fraction"] == pytest.approx(per_round[len(per_round) // 2])
    assert t["useful_flop_fraction_best_peak"] <= t["useful_flop_fraction"] * (1 + 1e-9)
    assert data["machine"]["versions"]["torch"] == torch.__version__
    ev = data["evaluation"]
    assert ev["rows"] == 6 and ev["shared_prefix_tokens"] > 0
    # predictions with and without the prefix cache agree (same rows, same model)
    assert ev["rank"]["identical_predictions"] and ev["generate"]["identical_predictions"]
    assert ev["rank"]["max_score_diff"] < 1e-3
    assert "| figure | value | target | met |" in md and "| rank |" in md
    assert md in capsys.readouterr().out


def test_reference_loss_is_hf_loss_of_each_half_plus_capped_infonce():
    base, tok = load_model(TINY_CFG)
    torch.manual_seed(0)
    model = apply_lora(base, TINY_CFG)
    prompts, answers = toy_rows(3, seed=4)
    batch = make_batch(tok, prompts, answers, 3, side="left", pad_extra=1)
    halves = (slice(0, 3), slice(3, 6))
    outs = [
        model(input_ids=batch["input_ids"][h], attention_mask=batch["attention_mask"][h], labels=batch["labels"][h],
              output_hidden_states=True)
        for h in halves
    ]
    generation = outs[0].loss + outs[1].loss  # transformers' own shifted CE over full logits
    assert reference_loss(model, batch, 0.0).item() == pytest.approx(generation.item(), rel=1e-5, abs=1e-6)
    last = [o.hidden_states[-1][:, -1] for o in outs]
    nce = info_nce(last[0], last[1], 0.05).loss
    weighted = 1000.0 * nce
    expected = generation + (generation if weighted > generation else weighted)
    assert reference_loss(model, batch, 1000.0).item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


def test_dropout_swaps_restore_the_projects_lora_dropout():
    cfg = dict(TINY_CFG, lora=dict(TINY_CFG["lora"], dropout=0.3))
    base, _ = load_model(cfg)
    model = apply_lora(base, cfg)

    def kinds():
        return [type(m) for n, m in model.named_modules() if n.endswith("lora_dropout.default")]

    before = kinds()
    assert before and set(before) == {LoraDropout}
    with swapped_lora_dropout(model, lambda d: torch.nn.Identity()) as n:
        assert n == len(before) and set(kinds()) == {torch.nn.Identity}
    with torch_lora_dropout(model) as n:
        assert n == len(before) and set(kinds()) == {torch.nn.Dropout}
        assert all(m.p == 0.3 and m.training for m in model.modules() if type(m) is torch.nn.Dropout)
    assert kinds() == before


def test_padded_rows_switches_packing_off_and_back(tokenizer):
    base, _ = load_model(TINY_CFG)
    model = apply_lora(base, TINY_CFG)
    batch = make_batch(tokenizer, *toy_rows(2, seed=3), 2, side="left", pad_extra=2)
    module = CoinModule(model, {"lambda": 1000.0}).eval()
    assert packing.is_enabled(base)
    with torch.no_grad():
        packed = module.compute(batch).loss
        with padded_rows(model) as was:
            assert was and not packing.is_enabled(base)
            padded = module.compute(batch).loss
    assert packing.is_enabled(base)
    assert packed.item() == pytest.approx(padded.item(), rel=1e-5, abs=1e-6)


def test_interleaving_alternates_order_and_ratios_pair_rounds():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = time_interleaved(fns, repeats=3, warmup=1, device=torch.device("cpu"))
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert all(len(v) == 3 for v in times.values())
    assert paired_ratio([2.0, 9.0, 4.0], [1.0, 3.0, 4.0]) == 2.0
    with pytest.raises(ValueError, match=r"repeats=0 must be >= 1"):
        time_interleaved(fns, repeats=0, warmup=0, device=torch.device("cpu"))


def test_padding_stats_counts_real_and_padded_tokens(tokenizer):
    prompts, answers = toy_rows(2, seed=5)
    a = make_batch(tokenizer, prompts, answers, 2, pad_extra=3)
    b = make_batch(tokenizer, prompts, answers, 2)
    stats = padding_stats([a, b])
    real = int(a["attention_mask"].sum() + b["attention_mask"].sum())
    assert stats["real_tokens"] == real
    assert stats["computed_tokens"] == a["input_ids"].numel() + b["input_ids"].numel()
    assert stats["efficiency"] == pytest.approx(real / stats["computed_tokens"]) and stats["whole_items"]


def test_length_grouping_on_glue_keeps_groups_whole_and_pads_less(shared_data, tokenizer):
    data = train_data(tokenizer, "glue", shared_data, batch_pairs=4, seq_len=96, count=2, tasks=["rte"])
    grouped, shuffled = data.padding["length_grouped"], data.padding["random_batches"]
    assert grouped["whole_items"] and grouped["batches"] == shuffled["batches"]
    assert grouped["efficiency"] > shuffled["efficiency"]
    widths = [b["input_ids"].shape[1] for b in data.batches]
    assert len(widths) == 2 and all(b["input_ids"].shape[0] == 8 for b in data.batches)


def test_pick_batches_prefers_near_width_with_typical_padding():
    def batch(width, real):
        mask = torch.zeros(2, width, dtype=torch.long)
        mask[:, width - real:] = 1
        return {"input_ids": torch.zeros(2, width, dtype=torch.long), "attention_mask": mask}

    cands = [batch(128, 64), batch(300, 270), batch(126, 120), batch(130, 115), batch(60, 60)]
    # typical efficiency 0.9: among widths 112..144, 115/130 = 0.885 is closest, then 120/126 = 0.952
    picked = pick_batches(cands, 128, 2, 0.9)
    assert [p["input_ids"].shape[1] for p in picked] == [130, 126]
    # not enough batches near the width: the closest widths are taken
    assert [p["input_ids"].shape[1] for p in pick_batches(cands, 290, 2, 0.9)] == [300, 130]
    with pytest.raises(ValueError, match="no training batches to choose from"):
        pick_batches([], 128, 1, 0.9)
