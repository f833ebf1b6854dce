"""Two CPU ranks (gloo) train the tiny LoRA LLaMA for two steps; used by ``test_distributed.py``.

Run as ``python -m tests.training._two_rank_worker --strategy ddp|fsdp --out DIR --clip C`` from the
repository root; Lightning's subprocess launcher re-runs the same command for rank 1 (as in production).
Step 1 runs with ``loss.gather_across_ranks=true``, step 2 with ``false``. Rank 0 writes to ``DIR``:
``loss_<step>_<rank>.json`` (every rank), ``weights_<step>.pt`` (trainable tensors after each step,
consolidated), ``last.ckpt`` (Lightning checkpoint after step 2) and ``adapter/`` (peft export).

The strategies are the project's own configs: ``conf/trainer/ddp_cpu.yaml``'s DDPStrategy, and
``conf/trainer/fsdp.yaml``'s FSDPStrategy settings (LoRA wrap policy, mixed-precision policy,
``use_orig_params``, full state dict) under ``precision=32-true`` on its CPU form
(``tests/training/_fsdp_cpu.py``; bf16 numerics are checked on a GPU: ``experiments/gpu_check``).
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from coin_lightning.model.loading import load_model, load_tokenizer
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from coin_lightning.training.callbacks import AdapterCheckpoint
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, toy_rows

LR = 0.5
MOMENTUM = 0.9


def build_module(seed: int = 0) -> CoinModule:
    """The tiny LoRA LLaMA (non-zero LoRA B from ``seed``) in a CoinModule with SGD + momentum."""
    base, _ = load_model(TINY_CFG)
    torch.manual_seed(seed)
    model = apply_lora(base, TINY_CFG)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return CoinModule(
        model,
        {"lambda": 10.0, "temperature": 0.1},
        optimizer=functools.partial(torch.optim.SGD, lr=LR, momentum=MOMENTUM),
    )


def global_batches(tokenizer) -> list[tuple[list[dict], dict]]:
    """Three global batches of 4 pairs: ``(per-rank halves [2 pairs each], combined batch)``."""
    out = []
    for seed in (7, 8, 9):
        prompts, targets = toy_rows(4, seed=seed)
        o, p, t = prompts[:4], prompts[4:], targets[:4]
        rows = [slice(2 * r, 2 * r + 2) for r in (0, 1)]
        halves = [make_batch(tokenizer, o[h] + p[h], t[h] * 2, 2) for h in rows]
        out.append((halves, make_batch(tokenizer, o + p, t + t, 4)))
    return out


def strategy_from_config(name: str):
    """The strategy of ``conf/trainer/ddp_cpu.yaml`` (``ddp``) or ``conf/trainer/fsdp.yaml`` on CPU (``fsdp``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from coin_lightning.conf import CONFIG_DIR
    from tests.training._fsdp_train import FSDP_CPU

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        # no bf16 on CPU: 32-true, with the LoRA units' own (fp32) mixed-precision override of bf16-mixed
        fsdp = [*FSDP_CPU, "trainer.precision=32-true", "trainer.strategy.auto_wrap_policy.precision=bf16-mixed"]
        cfg = compose("train", overrides=[*(["trainer=ddp_cpu"] if name == "ddp" else fsdp), "output_dir=unused"])
    return instantiate(cfg.trainer.strategy)  # under 32-true the mixed-precision policy is None: Lightning's fp32 one


class _PerRank(L.LightningDataModule):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return DataLoader([halves[self.trainer.global_rank] for halves, _ in self.batches], batch_size=None)


class _GatherFirstStepOnly(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module.loss_args.gather_across_ranks = trainer.global_step == 0


class _Record(L.Callback):
    def __init__(self, out: Path):
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step, rank = trainer.global_step, trainer.global_rank
        (self.out / f"loss_{step}_{rank}.json").write_text(json.dumps(float(outputs["loss"])))
        state = trainer.strategy.lightning_module_state_dict()  # collective under FSDP; full on rank 0
        if rank == 0:
            keep = pl_module.trainable_names()
            torch.save({k: v.detach().clone() for k, v in state.items() if k in keep}, self.out / f"weights_{step}.pt")


def main() -> None:
    """Parse the arguments and run the two steps (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--strategy", choices=("ddp", "fsdp"), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clip", type=float, required=True)
    args = ap.parse_args()
    batches = global_batches(load_tokenizer(TINY_CFG))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy_from_config(args.strategy),
        precision="32-true",
        max_steps=2,
        gradient_clip_val=args.clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(args.out),
        callbacks=[_GatherFirstStepOnly(), _Record(args.out), AdapterCheckpoint(str(args.out / "adapter"))],
    )
    trainer.fit(build_module(seed=0), datamodule=_PerRank(batches[:2]))
    trainer.save_checkpoint(args.out / "last.ckpt")


if __name__ == "__main__":
    main()
