"""LoraDropout: the same i.i.d. Bernoulli masks as nn.Dropout, drawn through geometric gaps."""
from __future__ import annotations

import math

import pytest
import torch

from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.speedups import dropout as dropout_mod
from coin_lightning.speedups.dropout import LoraDropout, drop_positions, use_fast_lora_dropout
from tests.conftest import TINY_CFG


def _sigmas(observed: float, n: int, p: float) -> float:
    return abs(observed - n * p) / math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_drop_positions_are_bernoulli_trials(p):
    torch.manual_seed(0)
    n, draws = 40, 4000
    hits = torch.zeros(n)
    both = 0  # adjacent pair (7, 8) dropped together: independence
    for _ in range(draws):
        pos = drop_positions(n, p)
        assert pos.dtype == torch.int64 and bool((pos.diff() > 0).all())
        assert pos.numel() == 0 or (0 <= int(pos.min()) and int(pos.max()) < n)
        hit = torch.zeros(n)
        hit[pos] = 1
        hits += hit
        both += int(hit[7] * hit[8])
    # every position is dropped with probability p (max over 40 positions: 4.5 sigma is ~1e-4 by chance)
    assert max(_sigmas(float(h), draws, p) for h in hits) < 4.5
    assert _sigmas(both, draws, p * p) < 4.5
    # the total count is Binomial(n * draws, p)
    assert _sigmas(float(hits.sum()), n * draws, p) < 4.5


def test_drop_positions_draws_more_when_a_chunk_falls_short(monkeypatch):
    # force the rare path: chunks far too short for n trials
    monkeypatch.setattr(dropout_mod, "_chunk_size", lambda n, p: 3)
    torch.manual_seed(1)
    n, p = 2000, 0.2
    counts = [drop_positions(n, p).numel() for _ in range(200)]
    assert _sigmas(sum(counts), n * 200, p) < 4.5
    assert all(int(drop_positions(n, p).max()) < n for _ in range(20))


def test_drop_positions_rejects_bad_probability():
    with pytest.raises(ValueError, match="0 < p < 1"):
        drop_positions(10, 0.0)
    with pytest.raises(ValueError, match="0 < p < 1"):
        drop_positions(10, 1.0)
    with pytest.raises(ValueError, match="must be in"):
        LoraDropout(1.0)


def test_lora_dropout_zeroes_and_rescales_like_nn_dropout():
    torch.manual_seed(2)
    x = torch.randn(64, 33, 48, requires_grad=True)  # odd sizes: no alignment assumptions
    drop = LoraDropout(0.25).train()
    y = drop(x)
    zero = y == 0
    assert _sigmas(float(zero.sum()), x.numel(), 0.25) < 4.5
    torch.testing.assert_close(y[~zero], x.detach()[~zero] / 0.75)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    # the gradient goes through the same mask and scale: d y / d x = keep / (1 - p)
    torch.testing.assert_close(x.grad, torch.where(zero, 0.0, upstream / 0.75))
    # expectation equals the input (inverted dropout): average of many draws
    z = torch.ones(1000)
    mean = torch.stack([drop(z) for _ in range(400)]).mean()
    assert abs(float(mean) - 1.0) < 4.5 * math.sqrt(0.25 / 0.75 / 400_000)


def test_lora_dropout_is_identity_in_eval_and_reproducible_under_a_seed():
    x = torch.randn(8, 16)
    drop = LoraDropout(0.5)
    assert drop.eval()(x) is x
    assert LoraDropout(0.0).train()(x) is x
    drop.train()
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    torch.testing.assert_close(a, b)
    assert not torch.equal(drop(x), drop(x))  # fresh masks on every call


def test_apply_lora_swaps_peft_dropouts_unless_disabled():
    cfg = dict(TINY_CFG, lora=dict(TINY_CFG["lora"], dropout=0.1))
    model = apply_lora(load_model(cfg)[0], cfg)
    drops = [m for n, m in model.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(type(m) is LoraDropout and m.p == 0.1 for m in drops)
    assert use_fast_lora_dropout(model) == 0  # nothing left to replace

    plain_cfg = dict(cfg, cpu_speedups=False)
    plain = apply_lora(load_model(plain_cfg)[0], plain_cfg)
    drops = [m for n, m in plain.named_modules() if n.endswith("lora_dropout.default")]
    assert drops and all(type(m) is torch.nn.Dropout for m in drops)
    assert use_fast_lora_dropout(plain) == len(drops)


def test_lora_model_trains_through_lora_dropout():
    cfg = dict(TINY_CFG, lora=dict(TINY_CFG["lora"], dropout=0.2))
    model = apply_lora(load_model(cfg)[0], cfg).train()
    ids = torch.randint(3, 100, (2, 12))
    torch.manual_seed(4)
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
