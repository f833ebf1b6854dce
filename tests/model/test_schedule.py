"""The ``scheduler`` group: the learning-rate curve, the step count it spans, and what a run applies."""
from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from coin_lightning.conf import CONFIG_DIR, train_run
from coin_lightning.model.schedule import constant, linear_warmup_decay, training_steps

FAST = ["model=tiny_llama", "data.n_per_task=8", "data.val_size=8", "data.batch_size=4", "logger=csv",
        "~callbacks.progress", "trainer.limit_val_batches=0"]


def _lrs(scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _optimizer(lr: float = 2.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_warmup_then_linear_decay_to_zero():
    # 10 steps, warm-up round(0.2 * 10) = 2 steps: (s+1)/3 while warming up, then (10 - s) / 8
    expected = [2.0 * f for f in (1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8)]
    assert _lrs(linear_warmup_decay(_optimizer(), 10, warmup_ratio=0.2), 10) == pytest.approx(expected, abs=1e-12)
    assert _lrs(linear_warmup_decay(_optimizer(), 4, warmup_ratio=0.0), 4) == pytest.approx([2.0, 1.5, 1.0, 0.5], abs=1e-12)
    assert _lrs(constant(_optimizer(), 5), 5) == [2.0] * 5


def test_a_restored_scheduler_continues_the_curve():
    straight = _lrs(linear_warmup_decay(_optimizer(), 8, 0.25), 8)
    first = linear_warmup_decay(_optimizer(), 8, 0.25)
    _lrs(first, 3)
    resumed = linear_warmup_decay(_optimizer(), 8, 0.25)  # as Lightning resumes: build, then load both states
    resumed.optimizer.load_state_dict(first.optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert _lrs(resumed, 5) == pytest.approx(straight[3:], abs=1e-12)


def test_scheduler_group_options_build_the_factories():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        linear = compose("train", overrides=["warmup_ratio=0.25"])
        const = compose("train", overrides=["scheduler=constant"])
    factory = instantiate(linear.scheduler)
    assert factory.keywords == {"warmup_ratio": 0.25}  # the top-level warmup_ratio
    assert _lrs(factory(_optimizer(), num_training_steps=8), 4) == pytest.approx([2 / 3, 4 / 3, 2.0, 2.0 * 5 / 6], abs=1e-12)
    assert isinstance(instantiate(const.scheduler)(_optimizer(), num_training_steps=8), torch.optim.lr_scheduler.ConstantLR)


class _Record(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.ours, self.lightning = training_steps(trainer), trainer.estimated_stepping_batches


@pytest.mark.parametrize("overrides", [["trainer.max_steps=-1", "trainer.accumulate_grad_batches=3"],
                                       ["trainer.max_steps=4"], ["trainer.max_steps=-1", "trainer.max_epochs=2"]])
def test_training_steps_counts_as_lightning_does(tmp_path, overrides):
    from coin_lightning.training.run import build

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=FAST + ["trainer.max_epochs=1", "data.global_batch_size=null", *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
        cfg.trainer.default_root_dir = str(tmp_path)
    module, datamodule, trainer = build(train_run(cfg))
    record = _Record()
    trainer.callbacks.append(record)
    trainer.fit(module, datamodule=datamodule)
    assert record.ours == record.lightning > 0


def test_a_run_applies_the_configured_curve(tmp_path):
    from coin_lightning.training.run import train

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=FAST + ["trainer.max_steps=6", "warmup_ratio=0.34", "optimizer.lr=0.01"])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    train(train_run(cfg))
    with open(tmp_path / "csv" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("lr-AdamW")]
    logged = [float(r["lr-AdamW"]) for r in sorted(rows, key=lambda r: int(r["step"]))]
    # warm-up round(0.34 * 6) = 2 steps, then (6 - s) / 4
    assert logged == pytest.approx([0.01 * f for f in (1 / 3, 2 / 3, 1.0, 3 / 4, 2 / 4, 1 / 4)], abs=1e-9)
