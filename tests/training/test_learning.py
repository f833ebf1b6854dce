"""Validation before and after training in the run summary (training/learning.py)."""
from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from coin_lightning.conf import CONFIG_DIR, train_run
from coin_lightning.training.learning import learning_rows, learning_summary
from coin_lightning.training.run import build, train


def test_summary_reports_before_after_and_drop_of_each_metric():
    points = {30: {"val/ce": 1.5, "val/loss": 3.0}, 0: {"val/ce": 11.9, "val/info_nce": 0.57, "val/loss": 23.8},
              60: {"val/ce": 1.25, "val/info_nce": 0.2, "val/loss": 2.5}}
    s = learning_summary(points)
    assert (s["before_step"], s["after_step"]) == (0, 60)
    assert s["val/ce"] == {"before": 11.9, "after": 1.25, "drop": pytest.approx(10.65, abs=1e-12)}
    assert s["val/info_nce"]["drop"] == pytest.approx(0.37, abs=1e-12)
    assert list(s["curve"]) == ["0", "30", "60"]
    rows = dict(learning_rows(s))
    assert rows["val/ce step 0 -> 60"] == "11.9 -> 1.25 (drop +10.65)"
    assert learning_summary({0: {"val/ce": 1.0}}) is None and learning_rows(None) == []


def _cfg(tmp_path, overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny_llama", "data.n_per_task=8", "data.val_size=8", "data.batch_size=4",
                                          "logger=csv", "~callbacks.progress", "model.lora.dropout=0.0", *overrides])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    return train_run(cfg)


def _val_ce(cfg, adapter=None) -> float:
    """Validation CE of the first validation batch, computed directly with the module (no Trainer)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    module, datamodule, _ = build(cfg)
    if adapter is not None:
        set_peft_model_state_dict(module.model, load_file(str(adapter / "adapter_model.safetensors")))
    module.model.eval()
    batch = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        return float(module.compute(batch).ce)


def test_run_validates_at_step_0_and_at_the_last_step(tmp_path):
    overrides = ["trainer.max_steps=3", "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "optimizer.lr=1e-2"]
    summary = train(_cfg(tmp_path / "run", overrides))
    learning = json.loads((tmp_path / "run" / "summary.json").read_text())["learning"]
    assert learning["before_step"] == 0 and summary["learning"]["after_step"] == 3
    assert list(learning["curve"]) == ["0", "2", "3"]  # before, during (step 2), and once more after the last step
    before = _val_ce(_cfg(tmp_path / "b", overrides))
    after = _val_ce(_cfg(tmp_path / "a", overrides), adapter=tmp_path / "run" / "adapter")
    assert learning["val/ce"]["before"] == pytest.approx(before, rel=1e-5, abs=1e-6)
    assert learning["val/ce"]["after"] == pytest.approx(after, rel=1e-5, abs=1e-6)
    assert learning["val/ce"]["drop"] == pytest.approx(before - after, rel=1e-4, abs=1e-5)
    assert abs(before - after) > 1e-3  # training changed the adapter: before and after are different models


def test_an_interval_longer_than_the_dataset_still_validates_before_and_after(tmp_path):
    # ~20 micro-batches in the epoch, validation every 1000: Lightning would refuse it with epoch counting
    overrides = ["trainer.max_steps=-1", "trainer.max_epochs=1", "data.val_every_n_steps=1000", "trainer.limit_val_batches=1",
                 "data.n_per_task=4"]
    summary = train(_cfg(tmp_path, overrides))
    assert summary["global_step"] > 0
    assert list(summary["learning"]["curve"]) == ["0", str(summary["global_step"])]
