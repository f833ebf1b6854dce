"""Test helper: one training job of ``coin_lightning.training.run.train`` on two CPU ranks (gloo).

Run as ``python -m tests.training._fsdp_train OUTPUT_DIR [override ...]`` from the repository root;
Lightning's subprocess launcher re-runs the same command for rank 1, as it does for
``python -m coin_lightning.train``. The config is ``train.yaml`` composed with :data:`SMALL` (tiny
LLaMA, few rows, validation every 2 steps: ``test_train_entry.FAST``; checkpoints every step), then the overrides, e.g.
:data:`FSDP_CPU` (``trainer=fsdp`` with its strategy on CPU, :mod:`tests.training._fsdp_cpu`) or
``trainer=ddp_cpu``. The job runs as the entry point runs it (validation first, fit, checkpoints,
adapter export, ``summary.json``), except that :func:`~coin_lightning.training.checks.check_train_config`
is not called: it refuses bf16 on a CPU (a speed guard), which the bf16-base case needs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L

from tests.training.test_train_entry import FAST

SMALL = [*FAST, "callbacks.model_checkpoint.every_n_train_steps=1"]
"""A few seconds per step on two CPU ranks."""

FSDP_CPU = [
    "trainer=fsdp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.strategy._target_=tests.training._fsdp_cpu.CpuFSDPStrategy",
    "+trainer.strategy.process_group_backend=gloo",
]
"""``conf/trainer/fsdp.yaml`` on two CPU ranks; its precision (bf16-mixed) unless overridden."""


class FrozenBaseIn(L.Callback):
    """Store the frozen base in ``dtype`` before the first stage wraps the model, as ``model=alpaca``
    loads it (bf16 weights; peft keeps the LoRA tensors in fp32). ``tiny:llama`` is built in fp32."""

    def __init__(self, dtype: str = "bfloat16") -> None:
        import torch

        self.dtype = getattr(torch, dtype)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        for p in pl_module.parameters():
            if not p.requires_grad and p.dtype != self.dtype:  # wrapped in a later stage: stored as cast
                p.data = p.data.to(self.dtype)


class RecordWrapping(L.Callback):
    """Rank 0 writes ``<path>``: one entry per validation or training start, with the trainer's
    function, the id of ``trainer.strategy.model``, whether it is an FSDP root around the
    LightningModule, its FSDP unit count, and the dtypes of the frozen and the trainable parameters."""

    def __init__(self, path: str) -> None:
        self.path, self.stages = Path(path), []

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        root = trainer.strategy.model
        dtypes = {"frozen": set(), "trainable": set()}
        for p in pl_module.parameters():
            dtypes["trainable" if p.requires_grad else "frozen"].add(str(p.dtype).removeprefix("torch."))
        self.stages.append({
            "fn": str(trainer.state.fn.value),
            "root": id(root),
            "fsdp_root": isinstance(root, FSDP) and root.module is pl_module,
            "units": sum(isinstance(m, FSDP) for m in root.modules()),
            **{k: sorted(v) for k, v in dtypes.items()},
        })
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(self.stages))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._record(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._record(trainer, pl_module)


def main() -> None:
    """Compose the config from the command line and train (see the module docstring)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from coin_lightning.conf import CONFIG_DIR, train_run
    from coin_lightning.training.run import train

    output_dir, overrides = sys.argv[1], sys.argv[2:]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*SMALL, *overrides])
    with open_dict(cfg):
        cfg.output_dir = output_dir
    train(train_run(cfg), checked=True)


if __name__ == "__main__":
    main()
