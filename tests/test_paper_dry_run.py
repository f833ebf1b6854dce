"""The paper's path, dry: ``experiment=coin_alpaca`` with only the model and the data swapped.

The model becomes the tiny random LLaMA, the data a small file in the CoIN CSV's format written here
from ../shared GLUE rows (data row 2k+1 is the hard negative of row 2k: the same original template,
another sst2 sentence with the other label). Everything else is the experiment's own setting: global
batch 64 from micro-batches of 2, 2000 validation rows, lambda=1000, tau=0.05, one epoch. The run then
goes train -> evaluate -> compare with ``trainer=ddp_cpu`` (two gloo processes, so the accumulation
halves to keep the global batch at 64). The same experiment on one process is ``tests/test_reproduction.py``'s
dry run (its order, validation rows, pooled token and learning rates).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"
SST2 = GLUE / "sst2" / "train.jsonl"
HEADER = ["original_instruction", "paraphrased_instruction", "targets", "task_name", "keyword_data"]
TRAIN_ROWS, VAL_ROWS = 128, 2000  # 2 optimizer steps of 64 rows; the experiment's 2000 validation rows
ORIGINAL = "Review: {sentence}\nDoes this review sound positive or negative?\nOPTIONS:\n- negative\n- positive"
PARAPHRASE = "Here is what a viewer wrote about a film: {sentence}\nIs the opinion negative or positive?\nOPTIONS:\n- negative\n- positive"

pytestmark = pytest.mark.skipif(not SST2.is_file(), reason="needs ../shared/data/glue (sst2)")


def write_coin_csv(path: Path, n_rows: int) -> Path:
    """``n_rows`` CSV rows as the paper's file lays them out: pairs (row 2k, row 2k+1) of sst2
    sentences with different labels, both under the same original template (its hard negative)."""
    rows = [json.loads(line) for line in SST2.read_text(encoding="utf-8").splitlines()]
    by_label = {0: [r for r in rows if r["label"] == 0], 1: [r for r in rows if r["label"] == 1]}
    out = []
    for k in range(n_rows // 2):
        first = k % 2  # alternate which label comes first
        for r in (by_label[first][k], by_label[1 - first][k]):
            answer = ["negative", "positive"][r["label"]]
            s = r["sentence"].strip()
            out.append([ORIGINAL.format(sentence=s), PARAPHRASE.format(sentence=s), answer, "sst2_dry_run",
                        json.dumps({"sentence": s, "answer": answer})])
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(out)
    return path


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{module} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


EVAL = ["model=tiny_llama", f"data.root={GLUE}", "eval.tasks=[sst2]", "eval.samples_per_task=8",
        "eval.levels=[clean,character]", "eval.method=rank", "logger=csv"]


@pytest.mark.parametrize("trainer, devices", [("ddp_cpu", 2)])
def test_paper_experiment_trains_evaluates_and_compares(tmp_path, trainer, devices):
    data = write_coin_csv(tmp_path / "coin.csv", TRAIN_ROWS + VAL_ROWS)
    train_dir = tmp_path / "train"
    run("coin_lightning.train", "experiment=coin_alpaca", "model=tiny_llama", f"data.path={data}",
        f"trainer={trainer}", "~callbacks.progress", f"hydra.run.dir={train_dir}", cwd=tmp_path)

    summary = json.loads((train_dir / "summary.json").read_text())
    cfg = summary["config"]
    # the experiment's own settings survived the swap; the global batch stays 64 on any device count
    assert cfg["loss"]["lambda"] == 1000.0 and cfg["loss"]["temperature"] == 0.05
    assert cfg["data"]["global_batch_size"] == 64 and cfg["data"]["batch_size"] == 2
    assert cfg["trainer"]["accumulate_grad_batches"] == 64 // (2 * devices)
    assert summary["global_step"] == TRAIN_ROWS // 64
    assert summary["data"]["val_records"] == VAL_ROWS and summary["data"]["same_target_negatives"] == 0
    adapter = train_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    learning = summary["learning"]  # the 2000 validation rows scored before and after training
    assert (learning["before_step"], learning["after_step"]) == (0, TRAIN_ROWS // 64)

    eval_trainer = [f"trainer={trainer}"]
    base_dir, tuned_dir = tmp_path / "eval_base", tmp_path / "eval_tuned"
    run("coin_lightning.evaluate", *EVAL, *eval_trainer, f"hydra.run.dir={base_dir}", cwd=tmp_path)
    run("coin_lightning.evaluate", *EVAL, *eval_trainer, f"adapter={adapter}", f"hydra.run.dir={tuned_dir}",
        cwd=tmp_path)
    for d in (base_dir, tuned_dir):
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["run"]["devices"] == devices
        preds = [json.loads(line) for line in (d / "predictions.jsonl").read_text().splitlines()]
        # every (instruction, row) pair predicted exactly once, whatever the number of processes
        keys = [(p["task"], p["perturbation"], p["instruction_index"], p["uid"]) for p in preds]
        assert len(keys) == len(set(keys)) == metrics["run"]["n_predictions"]
        assert len({k[3] for k in keys}) == 8

    out = tmp_path / "compare"
    run("coin_lightning.compare", str(base_dir), str(tuned_dir), "--names", "base", "coin", "--bootstrap", "50",
        "--out", str(out), cwd=tmp_path)
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["names"] == ["base", "coin"]
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()
