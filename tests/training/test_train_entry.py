"""The Hydra entry point: compose + fast_dev_run, exact resume, multirun, --help/--cfg, bad input."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from coin_lightning.conf import CONFIG_DIR, train_run
from coin_lightning.training.run import train

REPO = Path(__file__).resolve().parents[2]
FAST = [
    "model=tiny_llama",
    "data.n_per_task=8",
    "data.val_size=8",
    "data.batch_size=4",
    "logger=csv",
    "~callbacks.progress",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
]


def _cfg(tmp_path: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=FAST + overrides)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    return cfg


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_compose_and_fast_dev_run(tmp_path):
    cfg = _cfg(tmp_path, ["+trainer.fast_dev_run=true"])
    summary = train(train_run(cfg))
    assert summary["global_step"] == 1
    assert "train/loss" in summary["metrics"] and "train/contrastive" in summary["metrics"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["paths"]["adapter"] == str(tmp_path / "adapter")


def test_exact_resume_equals_straight_run(tmp_path):
    common = ["trainer.max_steps=4", "callbacks.model_checkpoint.every_n_train_steps=1", "model.lora.dropout=0.0"]
    train(train_run(_cfg(tmp_path / "straight", common)))
    # an interrupted run: the same config, stopped after 2 optimizer steps ...
    cfg = _cfg(tmp_path / "interrupted", common)
    with open_dict(cfg):
        cfg.callbacks["stop"] = {"_target_": "tests.training.test_train_entry.StopAt", "step": 2}
    train(train_run(cfg))
    ckpt = tmp_path / "interrupted" / "checkpoints" / "step000002.ckpt"
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state)  # adapter tensors only, never the frozen base
    # ... then resumed from its checkpoint to the end
    summary = train(train_run(_cfg(tmp_path / "resumed", common + [f"ckpt_path={ckpt}"])))
    assert summary["global_step"] == 4
    # the resumed run trains only steps 2 and 3 (a run that ignored ckpt_path would log 0..3), and
    # each of its steps has the straight run's loss at that step (the same batch on the same weights)
    straight, resumed = _train_losses(tmp_path / "straight"), _train_losses(tmp_path / "resumed")
    assert list(straight) == [0, 1, 2, 3]
    assert list(resumed) == [2, 3]
    assert resumed == {step: straight[step] for step in (2, 3)}
    a, b = _adapter(tmp_path / "straight" / "adapter"), _adapter(tmp_path / "resumed" / "adapter")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def _train_losses(run: Path) -> dict[int, float]:
    """``{step: train/loss}`` of a run's CSV log (one row per trained optimizer step, log_every_n_steps=1)."""
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    steps = [int(r["step"]) for r in rows]
    assert len(steps) == len(set(steps)), steps  # one logged training loss per step
    return {int(r["step"]): float(r["train/loss"]) for r in rows}


class StopAt:
    """A callback that stops training after ``step`` optimizer steps (simulates an interruption)."""

    def __new__(cls, step: int):
        import lightning as L

        class _Stop(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step >= step:
                    trainer.should_stop = True

        return _Stop()


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "coin_lightning.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw
    )


def test_help_and_cfg_job(tmp_path):
    out = _run(["--help"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("Usage: coin-train") and "schema" not in out.stdout
    out = _run(["--cfg", "job", "loss.lambda=0"], tmp_path)
    assert out.returncode == 0
    assert "lambda: 0" in out.stdout and "temperature: 0.05" in out.stdout


def test_multirun_two_jobs_separate_dirs(tmp_path):
    sweep = tmp_path / "sweep"
    out = _run(
        ["-m", "loss.lambda=0,1000", "trainer.max_steps=2", f"hydra.sweep.dir={sweep}", *FAST],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lambdas = []
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        lambdas.append(summary["config"]["loss"]["lambda"])
        assert (job / "adapter" / "adapter_model.safetensors").is_file()
        assert ("train/contrastive" in summary["metrics"]) == (summary["config"]["loss"]["lambda"] > 0)
    assert lambdas == [0.0, 1000.0]


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["loss.lambda=-1"], "loss.lambda"),
        (["loss.temperature=0"], "loss.temperature"),
        (["loss.pooling=cls"], "loss.pooling"),
        (["model.name_or_path=/no/such/model"], "model.name_or_path"),
        (["data.batch_size=3"], "batch_size"),
        (["data=glue", "data.root=/no/such/glue"], "/no/such/glue"),
    ],
)
def test_bad_input_is_one_line_error_and_no_run_dir(tmp_path, overrides, needle):
    run_dir = tmp_path / "run"
    out = _run([*FAST, *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last, out.stderr[-2000:]
    assert not run_dir.exists()
