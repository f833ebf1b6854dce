"""CoinModule on the tiny random LLaMA: loss masking, padding invariance, lambda=0, adapter round trip."""
from __future__ import annotations

import pytest
import torch

from coin_lightning.model import module as module_mod
from coin_lightning.model.loading import load_adapter, load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule, ConfigError, LossArgs
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, toy_rows


def _module(lam=1000.0, pooling="last", seed=0, **loss):
    base, tok = load_model(TINY_CFG)
    torch.manual_seed(seed)
    model = apply_lora(base, TINY_CFG)
    with torch.no_grad():  # non-zero LoRA B so the adapter changes the model
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return CoinModule(model, {"lambda": lam, "pooling": pooling, **loss}), tok


def test_ce_uses_response_tokens_only():
    module, tok = _module(lam=0.0)
    prompts, targets = toy_rows(3)
    batch = make_batch(tok, prompts, targets, 3, side="right")
    out = module.compute(batch)
    # independent: HF's own causal-LM loss on each half (full logits, its own shift and masking)
    model = module.model
    halves = [slice(0, 3), slice(3, 6)]
    ref = sum(
        model(input_ids=batch["input_ids"][h], attention_mask=batch["attention_mask"][h], labels=batch["labels"][h]).loss
        for h in halves
    )
    assert out.ce.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    # changing prompt tokens' labels to -100 vs. anything else is irrelevant only if they are masked:
    n_resp = int((batch["labels"] != -100).sum())
    n_target_tokens = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for t in targets)
    assert n_resp == n_target_tokens


def test_left_and_right_padding_give_same_pooled_states_and_losses():
    module, tok = _module()
    prompts, targets = toy_rows(3, seed=2)
    left = make_batch(tok, prompts, targets, 3, side="left", pad_extra=3)
    right = make_batch(tok, prompts, targets, 3, side="right")
    for pooling in ("last", "mean", "last_prompt"):
        module.loss_args.pooling = pooling
        torch.testing.assert_close(module.pool(left), module.pool(right), atol=2e-5, rtol=1e-4)
    module.loss_args.pooling = "last"
    a, b = module.compute(left), module.compute(right)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-4, abs=1e-5)
    assert a.pos_sim.item() == pytest.approx(b.pos_sim.item(), rel=1e-4, abs=1e-5)


def test_last_pooling_is_last_real_token_hidden_state():
    module, tok = _module()
    prompts, targets = toy_rows(2, seed=3)
    batch = make_batch(tok, prompts, targets, 2, side="left", pad_extra=2)
    pooled = module.pool(batch)
    for i in range(4):  # unpadded single-row forward, last position
        n = int(batch["attention_mask"][i].sum())
        ids = batch["input_ids"][i, -n:].unsqueeze(0)
        h = module.model.get_base_model().get_decoder()(input_ids=ids).last_hidden_state[0, -1]
        torch.testing.assert_close(pooled[i], h, atol=2e-5, rtol=1e-4)


def test_total_loss_follows_the_cap_rule():
    module, tok = _module(lam=1000.0)
    prompts, targets = toy_rows(2, seed=4)
    out = module.compute(make_batch(tok, prompts, targets, 2))
    raw = out.info_nce.item()
    expected_cl = min(1000 * raw, out.ce.item())
    assert out.contrastive.item() == pytest.approx(expected_cl, rel=1e-5, abs=1e-6)
    assert out.loss.item() == pytest.approx(out.ce.item() + expected_cl, rel=1e-5, abs=1e-6)
    module.loss_args.cap_to_generation = False
    uncapped = module.compute(make_batch(tok, prompts, targets, 2))
    assert uncapped.contrastive.item() == pytest.approx(1000 * raw, rel=1e-4, abs=1e-4)


def test_lambda_zero_skips_the_contrastive_computation(monkeypatch):
    module, tok = _module(lam=0.0)

    def boom(*a, **k):
        raise AssertionError("contrastive path must not run when lambda=0")

    monkeypatch.setattr(module_mod, "pool_hidden", boom)
    monkeypatch.setattr(module_mod, "info_nce", boom)
    prompts, targets = toy_rows(2)
    out = module.compute(make_batch(tok, prompts, targets, 2))
    assert out.contrastive is None and torch.equal(out.loss, out.ce)


def test_contrastive_gradient_reaches_lora_weights():
    grads = {}
    for lam in (0.0, 1.0):
        module, tok = _module(lam=lam, cap_to_generation=False)
        prompts, targets = toy_rows(2)
        module.compute(make_batch(tok, prompts, targets, 2)).loss.backward()
        grads[lam] = torch.cat([p.grad.flatten() for n, p in module.model.named_parameters() if p.requires_grad])
    assert not torch.allclose(grads[0.0], grads[1.0])


def test_hard_negative_column_rows():
    module, tok = _module()
    prompts, targets = toy_rows(2, seed=5)
    negs = [p.replace("Is ", "Is 1") for p in prompts[:2]]
    batch = make_batch(tok, prompts + negs, targets + targets[:2], 2)
    batch["labels"][4:] = -100  # negatives carry no CE (docs/CONTRACTS.md)
    out = module.compute(batch)
    pooled = module.pool(batch)
    from coin_lightning.losses import info_nce

    ref = info_nce(pooled[:2], pooled[2:4], 0.05, pooled[4:])
    assert out.info_nce.item() == pytest.approx(ref.loss.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "loss,match",
    [({"lambda": -1}, "loss.lambda"), ({"temperature": 0}, "loss.temperature"), ({"pooling": "cls"}, "loss.pooling")],
)
def test_bad_loss_config_is_one_clear_error(loss, match):
    with pytest.raises(ConfigError, match=match):
        LossArgs.from_config(loss)


def test_saved_adapter_reloads_through_peft_with_same_logits(tmp_path):
    module, tok = _module()
    module.model.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    prompts, targets = toy_rows(2)
    batch = make_batch(tok, prompts, targets, 2)
    module.model.eval()
    with torch.no_grad():
        want = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        fresh, _ = load_model(TINY_CFG)
        plain = fresh(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        reloaded = load_adapter(fresh, tmp_path / "adapter").eval()
        got = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, want)
    assert not torch.allclose(plain, want)  # the adapter really changes the model
