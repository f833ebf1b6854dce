"""2-process CPU DDP (gloo): gather_across_ranks=true equals one process on the combined batch;
gather_across_ranks=false equals two independent halves (the paper's per-device InfoNCE)."""
from __future__ import annotations

import functools
import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, toy_rows


def _module(gather: bool) -> CoinModule:
    base, _ = load_model(TINY_CFG)
    torch.manual_seed(0)
    model = apply_lora(base, TINY_CFG)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return CoinModule(
        model,
        {"lambda": 10.0, "temperature": 0.1, "gather_across_ranks": gather},
        optimizer=functools.partial(torch.optim.SGD, lr=1.0),
        scheduler="constant",
    )


def _halves(tok):
    prompts, targets = toy_rows(4, seed=7)
    o, p = prompts[:4], prompts[4:]
    t = targets[:4]
    per_rank = [make_batch(tok, o[r * 2 : r * 2 + 2] + p[r * 2 : r * 2 + 2], t[r * 2 : r * 2 + 2] * 2, 2) for r in (0, 1)]
    combined = make_batch(tok, o + p, t + t, 4)
    return per_rank, combined


class _PerRank(L.LightningDataModule):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return DataLoader([self.batches[self.trainer.global_rank]], batch_size=None)


class _Record(L.Callback):
    def __init__(self, out):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(f"{self.out}/loss_{trainer.global_rank}.json", "w") as fh:
            json.dump(float(outputs["loss"]), fh)

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            state = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
            torch.save(state, f"{self.out}/weights.pt")


def _trainable(module):
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("gather", [True, False])
def test_two_process_ddp_matches_single_process(tmp_path, tokenizer, gather):
    per_rank, combined = _halves(tokenizer)
    module = _module(gather)
    before = _trainable(module)

    # independent single-process references
    if gather:
        ref = _module(gather)
        loss = ref.compute(combined).loss
        loss.backward()
        want_loss = loss.item()
        grads = {n: p.grad.clone() for n, p in ref.named_parameters() if p.requires_grad}
    else:
        losses, grads = [], None
        for b in per_rank:
            ref = _module(gather)
            loss = ref.compute(b).loss
            loss.backward()
            losses.append(loss.item())
            g = {n: p.grad.clone() / 2 for n, p in ref.named_parameters() if p.requires_grad}
            grads = g if grads is None else {k: grads[k] + g[k] for k in g}
        want_loss = sum(losses) / 2

    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[_Record(tmp_path)],
    )
    trainer.fit(module, datamodule=_PerRank(per_rank))

    rank_losses = [json.loads((tmp_path / f"loss_{r}.json").read_text()) for r in (0, 1)]
    assert sum(rank_losses) / 2 == pytest.approx(want_loss, rel=1e-5)
    if not gather:  # each rank's loss is its own half's loss
        assert rank_losses == pytest.approx(losses, rel=1e-5)
    after = torch.load(tmp_path / "weights.pt")
    for name, g in grads.items():  # SGD(lr=1): the update is minus the DDP-averaged gradient
        torch.testing.assert_close(before[name] - after[name], g, atol=1e-6, rtol=1e-4)
