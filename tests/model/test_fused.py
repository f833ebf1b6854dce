"""Fused CPU kernels: each one against the unfused computation it replaces, alone and in the whole model."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from coin_lightning.model import packing
from coin_lightning.model.dropout import LoraDropout
from coin_lightning.model.fused import installed_kernels, lora_linear, remove_fused_kernels, rms_norm, use_fused_kernels
from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, tiny_lora_models, toy_rows


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("mode", ["plain", "drop", "separate"])
def test_lora_linear_equals_the_lora_layer(mode):
    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(2, 5, 7, generator=g), torch.randn(6, 7, generator=g), torch.randn(6, generator=g)
    a, b, grad = torch.randn(3, 7, generator=g), torch.randn(6, 3, generator=g), torch.randn(2, 5, 6, generator=g)
    x_lora = torch.randn(2, 5, 7, generator=g)
    positions = torch.tensor([0, 4, 9, 33, 69]) if mode == "drop" else None
    scale = 2.0 / (1 - 0.1) if mode == "drop" else 2.0

    xf, af, bf, lf = _leaves(x, a, b, x_lora)
    out = lora_linear(xf, weight, bias, af, bf, positions, scale, x_lora=lf if mode == "separate" else None)
    out.backward(grad)
    xr, ar, br, lr = _leaves(x, a, b, x_lora)
    src = lr if mode == "separate" else xr
    if mode == "drop":  # dropout without 1/(1-p): folded into scale
        keep = torch.ones(x.numel())
        keep[positions] = 0
        src = src * keep.view(x.shape)
    ref = xr @ weight.T + bias + scale * (src @ ar.T) @ br.T
    ref.backward(grad)
    torch.testing.assert_close(out, ref)
    for got, want in ((xf, xr), (af, ar), (bf, br)):
        torch.testing.assert_close(got.grad, want.grad)
    if mode == "separate":
        torch.testing.assert_close(lf.grad, lr.grad)
    else:
        assert lf.grad is None
    if mode == "drop":  # dropped inputs get only the base layer's gradient
        torch.testing.assert_close(xf.grad.view(-1)[positions], (grad @ weight).view(-1)[positions])


def test_rms_norm_equals_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(1)
    norm = LlamaRMSNorm(16, eps=1e-5)
    norm.weight.data = torch.randn(16, generator=g)
    x, grad = torch.randn(3, 4, 16, generator=g) * 3, torch.randn(3, 4, 16, generator=g)
    xa, wa = _leaves(x, norm.weight)
    out = rms_norm(xa, wa, 1e-5)
    out.backward(grad)
    xb = _leaves(x)[0]
    ref = norm(xb)
    ref.backward(grad)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(wa.grad, norm.weight.grad)


def _dense_attention(q, k, v, lens, scale):
    """Per row, real tokens only: transformers-style SDPA on [1, heads, n, D] with repeated kv heads."""
    group = q.shape[1] // k.shape[1]
    outs, start = [], 0
    for n in lens:
        sl = slice(start, start + n)
        kk, vv = (t[:, :, sl].repeat_interleave(group, dim=1) for t in (k, v))
        outs.append(F.scaled_dot_product_attention(q[:, :, sl], kk, vv, is_causal=True, scale=scale))
        start += n
    return torch.cat(outs, dim=2).transpose(1, 2)  # [1, N, heads, D]


@pytest.mark.parametrize("block", [3, 40])
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2), (6, 2)])
def test_packed_attention_equals_attention_per_row(heads, kv_heads, block, monkeypatch):
    monkeypatch.setattr(packing, "ATTENTION_BLOCK", block)  # 3: three query blocks of the 9 positions; 40: one
    lens = [5, 9, 1, 7]
    T = max(lens) + 2
    assert len(packing.attention_blocks(max(lens))) == (1 if block == 40 else 3)
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, T - n:] = 1
    packed = packing.pack_rows(torch.zeros_like(mask), mask)
    N, D = sum(lens), 8
    g = torch.Generator().manual_seed(heads)
    q, k, v = (torch.randn(1, h, N, D, generator=g) for h in (heads, kv_heads, kv_heads))
    grad = torch.randn(1, N, heads, D, generator=g)
    fused_in = _leaves(q, k, v)
    out = packing.packed_attention(*fused_in, packed, scale=0.3)
    out.backward(grad)
    ref_in = _leaves(q, k, v)
    ref = _dense_attention(*ref_in, lens, 0.3)
    ref.backward(grad)
    torch.testing.assert_close(out, ref)
    for got, want in zip(fused_in, ref_in):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (6, 2)])
def test_packed_attention_after_a_shared_prefix(heads, kv_heads, kernel, monkeypatch):
    # every row sees the P prefix keys and its own earlier keys: per row, SDPA over [prefix | row] with
    # a causal mask shifted by P; the kernel (packed_prefix_attention) and the SDPA fallback both
    monkeypatch.setattr(packing, "ATTENTION_BLOCK", 3)
    lens, P, D = [5, 9, 1, 7], 4, 8
    mask = torch.zeros(len(lens), max(lens), dtype=torch.long)
    for i, n in enumerate(lens):
        mask[i, max(lens) - n:] = 1
    packed = packing.pack_rows(torch.zeros_like(mask), mask)
    N = sum(lens)
    g = torch.Generator().manual_seed(heads)
    q = torch.randn(1, heads, N, D, generator=g)
    k, v = (torch.randn(1, kv_heads, P + N, D, generator=g) for _ in range(2))
    module = torch.nn.Module()
    setattr(module, packing.FUSED_ATTENTION, kernel)
    with torch.inference_mode():
        out, _ = packing.packed_sdpa_attention(module, q, k, v, None, scaling=0.3, coin_packed=packed)
    rep = heads // kv_heads
    want, start = [], 0
    for n in lens:
        own = slice(P + start, P + start + n)
        kk = torch.cat([k[:, :, :P], k[:, :, own]], dim=2).repeat_interleave(rep, dim=1)
        vv = torch.cat([v[:, :, :P], v[:, :, own]], dim=2).repeat_interleave(rep, dim=1)
        allowed = torch.ones(n, P + n, dtype=torch.bool).tril(P)
        want.append(F.scaled_dot_product_attention(q[:, :, start:start + n], kk, vv, attn_mask=allowed, scale=0.3))
        start += n
    torch.testing.assert_close(out, torch.cat(want, dim=2).transpose(1, 2))
    with pytest.raises(ValueError, match="no backward"):
        packing.packed_prefix_attention(q.requires_grad_(), k, v, packed, 0.3)


def _pair(dropout: float, seed: int = 0):
    """The same tiny LoRA model with fused kernels on and off."""
    lora = dict(TINY_CFG["lora"], dropout=dropout)
    return tiny_lora_models([dict(TINY_CFG, fused_kernels=fused, lora=lora) for fused in (True, False)], seed)


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_fused_model_trains_like_the_unfused_model():
    # same seed -> the same LoRA dropout positions; the CoIN loss and every LoRA gradient agree
    (fused, tok), (plain, _) = _pair(dropout=0.2)
    assert installed_kernels(fused)["lora"] > 0 and not any(installed_kernels(plain).values())
    assert fused.state_dict().keys() == plain.state_dict().keys()
    batch = make_batch(tok, *toy_rows(2, seed=3), 2, side="left", pad_extra=2)
    losses = []
    for model in (fused, plain):
        torch.manual_seed(11)
        out = CoinModule(model, {"lambda": 1000.0}).compute(batch)
        out.loss.backward()
        losses.append(out.loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    ga, gb = _grads(fused), _grads(plain)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        scale = float(gb[name].abs().max())
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-3, atol=1e-5 * scale, msg=name)
    # a different seed draws other masks: the loss changes (dropout is really applied)
    torch.manual_seed(12)
    assert float(CoinModule(fused, {"lambda": 1000.0}).compute(batch).loss.detach()) != float(losses[0])


def test_fused_lora_in_eval_mode_with_nn_dropout_and_merged():
    (fused, tok), (plain, _) = _pair(dropout=0.2, seed=1)
    batch = make_batch(tok, *toy_rows(2, seed=4), 2, side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        fused.eval(), plain.eval()  # no dropout
        want = plain(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(fused(input_ids=ids, attention_mask=mask).logits, want)
        # merging uses vanilla LoRA's delta: the merged model gives the same logits, unmerging restores weights
        weight = fused.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.clone()
        fused.merge_adapter()
        torch.testing.assert_close(fused(input_ids=ids, attention_mask=mask).logits, want, rtol=1e-4, atol=1e-5)
        fused.unmerge_adapter()
        torch.testing.assert_close(fused.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, weight)
        # another dropout module (peft's nn.Dropout) is applied as is, then fused: same masks under the same seed
        fused.train(), plain.train()
        for model in (fused, plain):
            for m in model.modules():
                if isinstance(m, LoraDropout):
                    m.__class__ = torch.nn.Dropout
        outs = []
        for model in (fused, plain):
            torch.manual_seed(5)
            outs.append(model(input_ids=ids, attention_mask=mask).logits)
        torch.testing.assert_close(outs[0], outs[1])


def test_use_and_remove_fused_kernels_counts():
    cfg = dict(TINY_CFG, fused_kernels=False)
    model = apply_lora(load_model(cfg)[0], cfg)
    layers = model.config.num_hidden_layers
    want = {"lora": 4 * layers, "rms_norm": 2 * layers + 1, "attention": layers}
    assert use_fused_kernels(model) == want
    assert use_fused_kernels(model) == {"lora": 0, "rms_norm": 0, "attention": 0}  # idempotent
    assert installed_kernels(model) == want
    # the model (with its replaced forwards) survives pickling, as for spawned processes or torch.save
    assert installed_kernels(pickle.loads(pickle.dumps(model))) == want
    assert remove_fused_kernels(model) == want
    assert not any(installed_kernels(model).values())
    assert not any("forward" in vars(m) or getattr(m, packing.FUSED_ATTENTION, False) for m in model.modules())


def test_fused_kernels_fall_back_under_autocast():
    (fused, tok), (plain, _) = _pair(dropout=0.0, seed=2)
    batch = make_batch(tok, *toy_rows(1, seed=5), 1, side="left")
    outs = []
    for model in (fused, plain):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits)
    assert torch.equal(outs[0], outs[1])  # the very same unfused operations
