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


def _by_hand(model, batch):
    """The CoIN inputs computed without CoinModule: each row alone, unpadded, through the peft model's
    plain forward (``output_hidden_states=True``).

    Returns ``(pooled, ce)``: ``pooled[i]`` the final (normed) hidden state of row ``i``'s last real
    token (``last`` pooling, the mask gives the real tokens); ``ce`` the token-mean next-token NLL of
    the labelled tokens of the originals plus that of the paraphrases (hard-negative rows: no CE).
    """
    P = int(batch["num_pairs"])
    pooled, nll, count = [], [], []
    for i in range(batch["input_ids"].shape[0]):
        keep = batch["attention_mask"][i].bool()
        ids, labels = batch["input_ids"][i][keep], batch["labels"][i][keep]
        out = model(input_ids=ids[None], output_hidden_states=True)
        pooled.append(out.hidden_states[-1][0, -1])
        logp = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)  # position t predicts token t + 1
        y = labels[1:]
        at = (y != -100).nonzero().flatten()
        nll.append(-logp[at, y[at]].sum())
        count.append(len(at))
    ce = sum(nll[:P]) / sum(count[:P]) + sum(nll[P : 2 * P]) / sum(count[P : 2 * P])
    return torch.stack(pooled), ce


def _cos(x, y):
    return (x @ y.T) / (x.norm(dim=-1)[:, None] * y.norm(dim=-1)[None, :])


def _info_nce_by_hand(a, p, tau, n=None):
    """Symmetric InfoNCE over cosine / tau; a hard negative ``n[i]`` is one more logit of row ``i`` in both directions."""
    total = 0.0
    for x, y in ((a, p), (p, a)):
        logits = _cos(x, y) / tau
        if n is not None:
            logits = torch.cat([logits, (_cos(x, n).diagonal() / tau)[:, None]], dim=1)
        total = total + (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()
    return total / 2


def test_total_loss_follows_the_cap_rule():
    module, tok = _module(lam=1000.0)
    prompts, targets = toy_rows(2, seed=4)
    batch = make_batch(tok, prompts, targets, 2)
    with torch.no_grad():
        pooled, ce = _by_hand(module.model, batch)
        nce = _info_nce_by_hand(pooled[:2], pooled[2:4], 0.05)
        cos = _cos(pooled[:2], pooled[2:4])
        ce, nce = ce.item(), nce.item()
        assert 1000 * nce > ce > nce  # lambda=1000: the cap binds; lambda=1: it does not
        out = module.compute(batch)
        assert out.ce.item() == pytest.approx(ce, rel=1e-4)
        assert out.info_nce.item() == pytest.approx(nce, rel=1e-4)
        assert out.pos_sim.item() == pytest.approx(cos.diagonal().mean().item(), rel=1e-4, abs=1e-5)
        assert out.neg_sim.item() == pytest.approx(((cos.sum() - cos.trace()) / 2).item(), rel=1e-4, abs=1e-5)
        # capped: lambda * InfoNCE (= 1000 * nce) is larger than the generation loss, so it counts as ce
        assert out.contrastive.item() == pytest.approx(ce, rel=1e-4)
        assert out.loss.item() == pytest.approx(2 * ce, rel=1e-4)
        module.loss_args.lambda_ = 1.0  # below the generation loss: lambda * InfoNCE unchanged
        small = module.compute(batch)
        assert small.contrastive.item() == pytest.approx(nce, rel=1e-4)
        assert small.loss.item() == pytest.approx(ce + nce, rel=1e-4)
        module.loss_args.lambda_ = 1000.0
        module.loss_args.cap_to_generation = False
        uncapped = module.compute(batch)
        assert uncapped.contrastive.item() == pytest.approx(1000 * nce, rel=1e-4)
        assert uncapped.loss.item() == pytest.approx(ce + 1000 * nce, rel=1e-4)


def test_lambda_zero_skips_the_contrastive_computation(monkeypatch):
    module, tok = _module(lam=0.0)

    def boom(*a, **k):
        raise AssertionError("contrastive path must not run when lambda=0")

    monkeypatch.setattr(module_mod, "pool_hidden", boom)
    monkeypatch.setattr(module_mod, "info_nce", boom)
    prompts, targets = toy_rows(2)
    out = module.compute(make_batch(tok, prompts, targets, 2))
    assert out.contrastive is None and torch.equal(out.loss, out.ce)


@pytest.mark.parametrize("lam", [1.0, 1000.0])
def test_gradient_is_ce_gradient_plus_weighted_info_nce_gradient(lam):
    """d(loss) = d(CE) + lambda d(InfoNCE) when the cap does not bind (lambda=1); when it binds
    (lambda=1000) the value is rescaled by the detached ratio CE / (lambda InfoNCE), so
    d(loss) = d(CE) + (CE / InfoNCE) d(InfoNCE). Each term's gradient comes from autograd on the
    hand computation (:func:`_by_hand`), not from the module."""
    module, tok = _module(lam=lam)
    prompts, targets = toy_rows(2)
    batch = make_batch(tok, prompts, targets, 2)
    params = [p for p in module.model.parameters() if p.requires_grad]
    pooled, ce = _by_hand(module.model, batch)
    nce = _info_nce_by_hand(pooled[:2], pooled[2:4], 0.05)
    g_ce = torch.cat([g.flatten() for g in torch.autograd.grad(ce, params, retain_graph=True)])
    g_nce = torch.cat([g.flatten() for g in torch.autograd.grad(nce, params)])
    capped = lam * nce.item() > ce.item()
    assert capped == (lam == 1000.0)
    weight = ce.item() / nce.item() if capped else lam
    want = g_ce + weight * g_nce
    got = torch.cat([g.flatten() for g in torch.autograd.grad(module.compute(batch).loss, params)])
    assert (got - want).norm() <= 1e-3 * want.norm()
    assert (weight * g_nce).norm() > 0.05 * want.norm()  # the contrastive term matters: CE alone would fail


def test_hard_negative_column_rows():
    module, tok = _module()
    prompts, targets = toy_rows(2, seed=5)
    negs = [p.replace("Is ", "Is 1") for p in prompts[:2]]
    batch = make_batch(tok, prompts + negs, targets + targets[:2], 2)
    batch["labels"][4:] = -100  # negatives carry no CE (docs/CONTRACTS.md)
    with torch.no_grad():
        out = module.compute(batch)
        pooled, ce = _by_hand(module.model, batch)
    a, p, n = pooled[:2], pooled[2:4], pooled[4:]
    want = _info_nce_by_hand(a, p, 0.05, n).item()
    assert out.info_nce.item() == pytest.approx(want, rel=1e-4)
    assert out.info_nce.item() != pytest.approx(_info_nce_by_hand(a, p, 0.05).item(), rel=1e-2)  # the column counts
    assert out.ce.item() == pytest.approx(ce.item(), rel=1e-4)  # negatives' rows add no CE
    cos = _cos(a, p)
    negs = torch.cat([cos[~torch.eye(2, dtype=torch.bool)], _cos(a, n).diagonal(), _cos(p, n).diagonal()])
    assert out.neg_sim.item() == pytest.approx(negs.mean().item(), rel=1e-4, abs=1e-5)


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
