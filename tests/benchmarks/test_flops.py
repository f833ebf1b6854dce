"""The FLOP formula of the benchmark against torch's own FlopCounterMode on the tiny LLaMA."""
from __future__ import annotations

import pytest
import torch

from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from coin_lightning.speedups import kernels
from experiments.benchmarks.flops import DecoderShape, LoraShape, batch_flops, count_with_torch, step_flops
from experiments.benchmarks.steps import reference_loss
from tests.helpers import make_batch, toy_rows


def _model(targets, r=4):
    # eager attention: its matmuls are visible to FlopCounterMode (the fused CPU SDPA kernel's are not)
    cfg = {
        "name_or_path": "tiny:llama",
        "attn_implementation": "eager",
        "packed_sequences": False,
        "lora": {"r": r, "alpha": 8, "dropout": 0.0, "target_modules": targets},
    }
    base, tok = load_model(cfg)
    torch.manual_seed(0)
    return apply_lora(base, cfg), tok


@pytest.mark.parametrize(
    "targets",
    [["q_proj", "k_proj", "v_proj", "o_proj"], ["v_proj", "down_proj"], ["o_proj"], ["gate_proj", "up_proj"]],
)
def test_computed_flops_match_flop_counter(targets):
    model, tok = _model(targets)
    prompts, answers = toy_rows(3, seed=1)
    batch = make_batch(tok, prompts, answers, 3, side="left", pad_extra=2)  # padded rows of different lengths
    shape, lora = DecoderShape.from_config(model.config), LoraShape.from_peft(model)
    assert lora.targets == frozenset(targets)

    for lam in (1000.0, 0.0):
        module = CoinModule(model, {"lambda": lam})
        seen = count_with_torch(lambda module=module: module.compute(batch).loss.backward())
        assert batch_flops(batch, shape, lora, "computed", contrastive=lam > 0).total == seen

    seen = count_with_torch(lambda: reference_loss(model, batch, 1000.0).backward())
    assert batch_flops(batch, shape, lora, "computed", contrastive=False, full_logits=True).total == seen


def test_packed_rows_compute_real_tokens_only(monkeypatch):
    # packing (model.packed_sequences, sdpa): the projections, MLPs and LoRA run on the real tokens, and
    # attention (the CPU kernel of model.cpu_speedups: batched matmuls FlopCounterMode sees) block by block
    # on R rows of L
    monkeypatch.setattr(kernels, "ATTENTION_BLOCK", 7)  # several query blocks on these short rows
    cfg = {"name_or_path": "tiny:llama", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    base, tok = load_model(cfg)
    model = apply_lora(base, cfg)
    batch = make_batch(tok, *toy_rows(3, seed=2), 3, side="left", pad_extra=3)
    shape, lora = DecoderShape.from_config(model.config), LoraShape.from_peft(model)
    module = CoinModule(model, {"lambda": 1000.0})
    seen = count_with_torch(lambda: module.compute(batch).loss.backward())
    packed = batch_flops(batch, shape, lora, "computed", packed=True)
    assert packed.total == seen
    L = int(batch["attention_mask"].sum(1).max())
    assert L > kernels.ATTENTION_BLOCK  # several blocks: fewer score pairs than dense L x L rows
    dense = batch_flops(batch, shape, lora, "computed", packed=True, kernel=False)
    assert packed.forward["attention"] < dense.forward["attention"]
    assert packed.forward["linear"] == dense.forward["linear"]
    padded = batch_flops(batch, shape, lora, "computed")
    assert seen < padded.total


def test_useful_flops_count_real_tokens_and_causal_pairs():
    model, tok = _model(["q_proj", "v_proj"])
    shape, lora = DecoderShape.from_config(model.config), LoraShape.from_peft(model)
    prompts, answers = toy_rows(2, seed=3)
    batch = make_batch(tok, prompts, answers, 2, side="left", pad_extra=5)
    lens = batch["attention_mask"].sum(1).tolist()
    # each row alone, unpadded, with a dense (non-causal) count: FlopCounterMode on the bare decoder forward
    decoder = model.get_base_model().get_decoder()
    dense = sum(
        count_with_torch(lambda i=i, n=n: decoder(input_ids=batch["input_ids"][i : i + 1, -n:]))
        for i, n in enumerate(lens)
    )
    # the same from the formula: forward only, no LM head, no contrastive matmul
    formula = step_flops(shape, lora, lens, 0, 0, causal=False, backward=False)
    assert formula.total == dense
    useful = batch_flops(batch, shape, lora, "useful", contrastive=False)
    fwd = useful.forward
    # causal counting halves the score pairs (n(n+1)/2 instead of n^2); nothing else changes
    pairs_dense = sum(n * n for n in lens)
    pairs_causal = sum(n * (n + 1) / 2 for n in lens)
    assert fwd["attention"] == pytest.approx(formula.forward["attention"] * pairs_causal / pairs_dense)
    assert fwd["linear"] == formula.forward["linear"] and fwd["lora"] == formula.forward["lora"]
    # the LM head runs on the labelled positions of the LM rows only
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert fwd["lm_head"] == 2 * labelled * shape.hidden * shape.vocab
    assert useful.total < batch_flops(batch, shape, lora, "computed", contrastive=False).total


def test_no_adapters_means_no_backward():
    model, _ = _model(["q_proj"])
    shape = DecoderShape.from_config(model.config)
    counts = step_flops(shape, LoraShape(0, frozenset()), [5, 7], 3, 2)
    assert sum(counts.backward.values()) == 0 and sum(counts.forward.values()) > 0
    with pytest.raises(ValueError, match="unknown LoRA target"):
        step_flops(shape, LoraShape(4, frozenset({"lm_head"})), [5], 1)
