"""Two CPU ranks (gloo) under DDP and FSDP against one process computing the same steps by hand.

Step 1 (``gather_across_ranks=true``) must equal one process on the combined batch; step 2 (``false``)
must equal two independent halves with averaged gradients (the paper's per-device InfoNCE). The
rank-0 checkpoint must hold only the adapter and the optimizer state, and resume on one process with
identical weights and momentum buffers, continuing as the single-process reference does.

The distributed side is ``tests/training/_two_rank_worker.py`` (Lightning re-runs it for rank 1).
Under FSDP it uses ``conf/trainer/fsdp.yaml``'s settings on a CPU shim of ``FSDPStrategy`` (see
``CpuFSDPStrategy``): Lightning only allows FSDP on CUDA, the sharded computation itself is real.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from coin_lightning.model.loading import load_adapter, load_model
from tests.conftest import TINY_CFG
from tests.training._two_rank_worker import LR, MOMENTUM, build_module, global_batches

REPO = Path(__file__).resolve().parents[2]
TOL = dict(atol=1e-6, rtol=1e-4)


def _named_trainable(module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def _reference(tokenizer):
    """One process, plain torch: the three steps the distributed run (steps 1-2) and the resume (3) take."""
    batches = global_batches(tokenizer)
    ref = build_module(seed=0)
    params = _named_trainable(ref)
    opt = torch.optim.SGD(params.values(), lr=LR, momentum=MOMENTUM)
    snap = lambda: {n: p.detach().clone() for n, p in params.items()}  # noqa: E731
    out = {}

    opt.zero_grad()  # step 1: gather=true == one process on the combined batch
    loss = ref.compute(batches[0][1]).loss
    loss.backward()
    grads = [p.grad for p in params.values()]
    out["norm1"] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    out["clip"] = 0.5 * out["norm1"]  # makes clipping active in step 1
    torch.nn.utils.clip_grad_norm_(params.values(), out["clip"])
    opt.step()
    out["loss1"], out["w1"] = loss.item(), snap()

    opt.zero_grad()  # step 2: gather=false == independent halves, gradients averaged
    halves = [ref.compute(h).loss for h in batches[1][0]]
    (sum(halves) / 2).backward()
    torch.nn.utils.clip_grad_norm_(params.values(), out["clip"])
    opt.step()
    out["loss2"], out["w2"] = [h.item() for h in halves], snap()
    out["momentum2"] = {n: opt.state[p]["momentum_buffer"].clone() for n, p in params.items()}

    opt.zero_grad()  # step 3, as the resumed single process takes it
    ref.compute(batches[2][1]).loss.backward()
    torch.nn.utils.clip_grad_norm_(params.values(), out["clip"])
    opt.step()
    out["w3"] = snap()
    return out, batches


class _Snapshot(L.Callback):
    """Record trainable weights and momentum buffers right after a resume, and the batches seen."""

    def __init__(self):
        self.batches = 0

    def on_train_start(self, trainer, pl_module):
        self.step0 = trainer.global_step
        opt = trainer.optimizers[0]
        self.weights = {n: p.detach().clone() for n, p in _named_trainable(pl_module).items()}
        self.momentum = {n: opt.state[p]["momentum_buffer"].clone() for n, p in _named_trainable(pl_module).items()}

    def on_train_batch_end(self, *args):
        self.batches += 1


def _assert_close_dicts(got: dict, want: dict, what: str):
    assert set(got) == set(want), f"{what}: different tensor names"
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOL, msg=lambda m, name=name: f"{what} {name}: {m}")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_and_resume_on_one(tmp_path, tokenizer, strategy):
    ref, batches = _reference(tokenizer)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "tests.training._two_rank_worker", "--strategy", strategy]
    cmd += ["--out", str(tmp_path), "--clip", repr(ref["clip"])]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    loss = lambda step, rank: json.loads((tmp_path / f"loss_{step}_{rank}.json").read_text())  # noqa: E731
    # step 1, gathered: the ranks' mean loss is the combined batch's loss; update identical
    assert (loss(1, 0) + loss(1, 1)) / 2 == pytest.approx(ref["loss1"], rel=1e-5, abs=1e-6)
    _assert_close_dicts(torch.load(tmp_path / "weights_1.pt"), ref["w1"], "after step 1")
    # step 2, not gathered: each rank's loss is its own half's loss
    assert [loss(2, 0), loss(2, 1)] == pytest.approx(ref["loss2"], rel=1e-5, abs=1e-6)
    _assert_close_dicts(torch.load(tmp_path / "weights_2.pt"), ref["w2"], "after step 2")

    # the peft export (gathered to rank 0 under FSDP) holds the final adapter
    exported = load_adapter(load_model(TINY_CFG)[0], tmp_path / "adapter")
    got = {f"model.{n}": p for n, p in exported.named_parameters() if "lora_" in n}
    _assert_close_dicts(got, ref["w2"], "exported adapter")

    # the checkpoint: adapter tensors only (no frozen base), consolidated optimizer state
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    _assert_close_dicts(ckpt["state_dict"], ref["w2"], "checkpoint state_dict")
    saved = ckpt["optimizer_states"][0]
    order = list(ref["w2"])  # optimizer order = trainable parameters in model order
    assert len(saved["param_groups"][0]["params"]) == len(order)
    _assert_close_dicts(
        {order[i]: saved["state"][pid]["momentum_buffer"] for i, pid in enumerate(saved["param_groups"][0]["params"])},
        ref["momentum2"],
        "checkpoint momentum",
    )

    # resume on one process from a different initialisation: state restored, then step 3 as the reference
    module, snap = build_module(seed=1), _Snapshot()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=3,
        gradient_clip_val=ref["clip"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[snap],
    )
    trainer.fit(module, train_dataloaders=DataLoader([batches[2][1]], batch_size=None), ckpt_path=tmp_path / "last.ckpt")
    assert snap.step0 == 2 and trainer.global_step == 3 and snap.batches == 1
    _assert_close_dicts(snap.weights, ref["w2"], "restored weights")
    _assert_close_dicts(snap.momentum, ref["momentum2"], "restored momentum")
    _assert_close_dicts({n: p.detach() for n, p in _named_trainable(module).items()}, ref["w3"], "after resumed step 3")
