"""Packed rows: the training forward on real tokens only gives the padded forward's states, losses and gradients."""
from __future__ import annotations

import pytest
import torch

from coin_lightning.model import packing
from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, tiny_lora_models, toy_rows


def test_pack_rows_lays_real_tokens_end_to_end():
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 9], [0, 0, 0, 0, 8]])
    mask = (torch.arange(5) >= torch.tensor([[2], [0], [4]])).long()
    p = packing.pack_rows(ids, mask)
    assert p.input_ids.tolist() == [[5, 6, 7, 1, 2, 3, 4, 9, 8]]
    assert p.position_ids.tolist() == [[0, 1, 2, 0, 1, 2, 3, 4, 0]]
    assert p.max_len == 5 and p.rows == 3
    assert p.attn_index.tolist() == [0, 1, 2, 5, 6, 7, 8, 9, 10]  # row * max_len + position
    # right padding packs the same way
    right = packing.pack_rows(torch.tensor([[5, 6, 0], [7, 0, 0]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert right.input_ids.tolist() == [[5, 6, 7]] and right.position_ids.tolist() == [[0, 1, 0]]


def test_pack_rows_names_the_bad_row():
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="row 1"):
        packing.pack_rows(ids, torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1]]))
    with pytest.raises(ValueError, match="row 0"):
        packing.pack_rows(ids, torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="same"):
        packing.pack_rows(ids, torch.ones(2, 3))


def test_unpack_scatters_back_with_gradients():
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    p = packing.pack_rows(torch.ones(2, 3, dtype=torch.long), mask)
    flat = torch.arange(5 * 2, dtype=torch.float32).view(1, 5, 2).requires_grad_()
    out = packing.unpack(flat, p)
    assert out.shape == (2, 3, 2)
    assert out[0, 0].tolist() == [0.0, 0.0]
    torch.testing.assert_close(out[mask.bool()], flat[0])
    out.sum().backward()
    torch.testing.assert_close(flat.grad, torch.ones_like(flat))


def _models(seed=0, padded_cfg=None):
    """The same tiny LoRA model with packing on (the project's attention) and off (``padded_cfg``)."""
    padded_cfg = padded_cfg if padded_cfg is not None else dict(TINY_CFG, packed_sequences=False)
    return tiny_lora_models([dict(TINY_CFG, packed_sequences=True), padded_cfg], seed)


@pytest.mark.parametrize("mode", [packing.KERNEL, packing.TRANSFORMERS])
@pytest.mark.parametrize("side", ["left", "right"])
def test_packed_forward_equals_padded_forward(side, mode):
    # TRANSFORMERS: the packed rows go through transformers' own sdpa path (it splits them at the
    # restarting position ids, as flash-attention's varlen kernels do on a GPU); the padded model has
    # no CPU speed-ups at all (peft's dropout, transformers' sdpa)
    (packed_model, tok), (padded_model, _) = _models(padded_cfg=dict(TINY_CFG, cpu_speedups=False))
    assert packing.is_enabled(packed_model.get_base_model()) and not packing.is_enabled(padded_model.get_base_model())
    assert packing.packing_mode(padded_model.get_base_model()) is None  # sdpa without cpu_speedups: padded rows
    if mode == packing.TRANSFORMERS:
        packed_model.get_base_model().set_attn_implementation("sdpa")
        packing.set_packing_mode(packed_model.get_base_model(), packing.TRANSFORMERS)
    assert packed_model.config.num_key_value_heads < packed_model.config.num_attention_heads  # GQA path
    batch = make_batch(tok, *toy_rows(3, seed=7), 3, side=side, pad_extra=3)
    loss_args = {"lambda": 1000.0, "hidden_layer": 1}
    a, b = CoinModule(packed_model, loss_args), CoinModule(padded_model, loss_args)
    keep = batch["attention_mask"].bool()
    out_a = a.encode(batch["input_ids"], batch["attention_mask"], output_hidden_states=True)
    out_b = b.encode(batch["input_ids"], batch["attention_mask"], output_hidden_states=True)
    torch.testing.assert_close(out_a.last_hidden_state[keep], out_b.last_hidden_state[keep], rtol=1e-4, atol=1e-5)
    assert len(out_a.hidden_states) == len(out_b.hidden_states)
    for ha, hb in zip(out_a.hidden_states, out_b.hidden_states):
        torch.testing.assert_close(ha[keep], hb[keep], rtol=1e-4, atol=1e-5)
    assert float(out_a.last_hidden_state[~keep].detach().abs().sum()) == 0.0

    # the whole CoIN objective and the LoRA gradients agree
    la, lb = a.compute(batch), b.compute(batch)
    torch.testing.assert_close(la.loss, lb.loss, rtol=1e-4, atol=1e-5)
    la.loss.backward()
    lb.loss.backward()
    grads_a = {n: p.grad for n, p in packed_model.named_parameters() if p.requires_grad}
    grads_b = {n: p.grad for n, p in padded_model.named_parameters() if p.requires_grad}
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:  # float32 sums in another order: errors relative to the gradient's scale
        scale = float(grads_b[name].abs().max())
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_packed_model_attends_like_sdpa_without_packing_arguments():
    # evaluation calls the model on padded batches (and with KV caches): the delegate path is plain SDPA
    (packed_model, tok), (padded_model, _) = _models(seed=1)
    batch = make_batch(tok, *toy_rows(2, seed=8), 2, side="left", pad_extra=2)
    with torch.no_grad():
        la = packed_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lb = padded_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        keep = batch["attention_mask"].bool()
        torch.testing.assert_close(la[keep], lb[keep], rtol=1e-5, atol=1e-5)
        ga = packed_model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        gb = padded_model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("attn,speedups,want", [
    ("sdpa", True, packing.KERNEL), ("sdpa", False, None), ("eager", True, None),
    ("flash_attention_2", False, packing.TRANSFORMERS), ("flex_attention", True, packing.TRANSFORMERS),
])
def test_packing_mode_follows_the_attention_implementation(attn, speedups, want):
    assert packing.choose_packing_mode(True, attn, speedups) == want
    assert packing.choose_packing_mode(False, attn, speedups) is None


def test_eager_attention_keeps_padded_rows():
    cfg = dict(TINY_CFG, attn_implementation="eager")
    model = apply_lora(load_model(cfg)[0], cfg)
    assert packing.packing_mode(model.get_base_model()) is None and not packing.is_enabled(model)


def test_packed_rows_with_gradient_checkpointing():
    # the packing arguments pass through non-reentrant checkpointed layers; same loss and gradients
    (packed_model, tok), _ = _models(seed=2)
    cfg = dict(TINY_CFG, gradient_checkpointing=True)
    base, _ = load_model(cfg)
    torch.manual_seed(2)
    ckpt_model = apply_lora(base, cfg)
    ckpt_model.load_state_dict(packed_model.state_dict())
    batch = make_batch(tok, *toy_rows(2, seed=9), 2, side="left", pad_extra=1)
    losses = []
    for model in (packed_model, ckpt_model):
        out = CoinModule(model, {"lambda": 1000.0}).compute(batch)
        out.loss.backward()
        losses.append(out.loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), (_, b) in zip(packed_model.named_parameters(), ckpt_model.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7, msg=name)
