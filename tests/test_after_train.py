"""``eval_after_train``: a training run (and a Hydra sweep of them) evaluates its adapter when fit ends;
``compare --sweep`` reads the sweep; bad evaluation settings stop the run before training."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from coin_lightning.compare import main as compare_main
from coin_lightning.conf import CONFIG_DIR
from coin_lightning.evaluate import run as evaluate

TRAIN = ["model=tiny_llama", "data.n_per_task=8", "data.val_size=8", "data.batch_size=4", "logger=csv",
         "~callbacks.progress", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1"]
EVAL = {"tasks": "[sst2]", "samples_per_task": "6", "levels": "[clean,character]", "method": "rank"}


def _eval_overrides(prefix: str) -> list[str]:
    return [f"{prefix}.{k}={v}" for k, v in EVAL.items()]


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "coin_lightning.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _predictions(run: Path) -> list[tuple]:
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return [(r["task"], r["perturbation"], r["instruction_index"], r["uid"], r["pred"], r["scores"]) for r in rows]


def _standalone_eval(tmp_path: Path, shared_data: Path, adapter: Path) -> Path:
    """``coin_lightning.evaluate`` of the same adapter with the same settings, in-process."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["model=tiny_llama", "logger=csv", f"adapter={adapter}",
                                                      f"data.root={shared_data / 'glue'}",
                                                      *_eval_overrides("eval")])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    evaluate(cfg)
    return tmp_path


def test_multirun_evaluates_every_job_and_compare_sweep_reads_it(tmp_path, shared_data):
    sweep = tmp_path / "sweep"
    out = _train(["-m", "loss.lambda=0,1000", "seed=1,2", "eval_after_train=true", "data=glue",
                  f"data.root={shared_data / 'glue'}", "data.tasks=[sst2]", "data.max_per_task=16",
                  *TRAIN, *_eval_overrides("evaluation.eval"), f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = [sweep / str(n) for n in range(4)]
    for job in jobs:
        metrics = json.loads((job / "eval" / "metrics.json").read_text())
        assert metrics["run"]["adapter"] == str(job / "adapter") and metrics["run"]["method"] == "rank"
        summary = json.loads((job / "summary.json").read_text())
        assert summary["eval"]["overall"] == metrics["overall"] and summary["global_step"] == 2
        # the run's own CSV logger got the evaluation's scalars at the last training step
        with open(job / "csv" / "metrics.csv") as fh:
            logged = [r for r in csv.DictReader(fh) if r.get("eval/overall/perturbed")]
        assert len(logged) == 1 and int(logged[0]["step"]) == 2
        assert float(logged[0]["eval/overall/perturbed"]) == pytest.approx(metrics["overall"]["perturbed"])
    # the same outputs as coin_lightning.evaluate of that adapter
    alone = _standalone_eval(tmp_path / "alone", shared_data, jobs[3] / "adapter")
    # the same labels; scores equal up to float32 rounding (this process and the job's run different thread counts)
    assert [p[:-1] for p in _predictions(alone)] == [p[:-1] for p in _predictions(jobs[3] / "eval")]
    for a, b in zip(_predictions(alone), _predictions(jobs[3] / "eval")):
        assert a[-1] == pytest.approx(b[-1], abs=1e-4)
    assert _predictions(jobs[0] / "eval") != _predictions(jobs[3] / "eval")  # the adapters differ
    cmp_out = tmp_path / "cmp"
    assert compare_main(["--sweep", str(sweep), "--out", str(cmp_out), "--bootstrap", "20"]) == 0
    cmp = json.loads((cmp_out / "comparison.json").read_text())
    assert cmp["arm_names"] == ["loss.lambda=0", "loss.lambda=1000"]
    assert all(a["seeds"] == [1, 2] for a in cmp["arms"].values())
    coin = [j for j in jobs if "loss.lambda=1000" in (j / ".hydra" / "overrides.yaml").read_text()]
    assert len(coin) == 2
    perturbed = [json.loads((j / "eval" / "metrics.json").read_text())["overall"]["perturbed"] for j in coin]
    assert cmp["arms"]["loss.lambda=1000"]["accuracy"]["perturbed"]["mean"] == pytest.approx(sum(perturbed) / 2)


def test_bad_evaluation_setting_stops_before_training(tmp_path):
    run_dir = tmp_path / "run"
    out = _train([*TRAIN, "eval_after_train=true", "evaluation.eval.method=beam", f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: evaluation.eval.method='beam'"), out.stderr[-2000:]
    assert "Epoch" not in out.stdout + out.stderr and not run_dir.exists()


def test_ddp_cpu_run_evaluates_on_both_ranks_like_one_process(tmp_path, shared_data):
    """trainer=ddp_cpu: both training processes share the evaluation rows; rank 0 writes the same
    predictions a one-process evaluation of the adapter makes."""
    run_dir = tmp_path / "run"
    out = _train([*TRAIN, "trainer=ddp_cpu", "eval_after_train=true", f"evaluation.data_root={shared_data / 'glue'}",
                  *_eval_overrides("evaluation.eval"), f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["run"]["devices"] == 2
    alone = _standalone_eval(tmp_path / "alone", shared_data, run_dir / "adapter")
    got, want = _predictions(run_dir / "eval"), _predictions(alone)
    assert [g[:5] for g in got] == [w[:5] for w in want]
    for g, w in zip(got, want):
        assert g[5] == pytest.approx(w[5], abs=1e-4)


def test_eval_after_train_needs_the_adapter_callback(tmp_path):
    from coin_lightning.conf import training_eval_job
    from coin_lightning.errors import ConfigError

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*TRAIN, "eval_after_train=true", "~callbacks.adapter"])
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    with pytest.raises(ConfigError, match="keep callbacks.adapter"):
        training_eval_job(cfg)
