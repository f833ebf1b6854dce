"""``make gpu-check``: one line when something is missing; ``make gpu-check-dry`` runs every step's code on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.gpu_check import needs
from experiments.gpu_check.run import main

REPO = Path(__file__).resolve().parents[2]
TRAINING = ("train_packed", "train_padded", "fsdp_validate_first", "base_lowp_lora_fp32")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: run `make gpu-check` itself")
def test_without_cuda_it_says_so_in_one_line(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "gpu-check needs, beyond torch: " + ", ".join(dist for _, dist, _ in needs.PACKAGES + needs.GPU_PACKAGES)
        + ", a CUDA GPU",
        f"error: gpu-check needs a CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False); "
        "make gpu-check-dry runs the same steps on the CPU",
    ]
    assert "liger-kernel" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_missing_package_stops_the_dry_check_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(needs, "PACKAGES", (*needs.PACKAGES, ("no_such_module_x1", "no-such-dist", "pip install it")))
    assert main(["--dry", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().out.splitlines()[1:] == ["error: gpu-check needs no-such-dist (pip install it)"]
    assert not (tmp_path / "out").exists()


def test_dry_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "dry"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "experiments.gpu_check.run", "--dry", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert list(steps) == [*TRAINING, "liger", "eval_vs_cpu"]
    assert steps["liger"] == {"status": "skipped", "reason": "GPU-only: Liger-Kernel's Triton kernels need CUDA"}
    for name in TRAINING:
        s = steps[name]
        assert s["status"] == "ok", (name, s)
        assert s["steps"] == 4 and s["validated_first"]
        assert s["tokens_per_s"] > 0 and 0 < s["mfu"] < 1 and s["peak_memory_gib"] > 0
        assert (out / f"{name}.log").stat().st_size > 0  # the step's own output went to its log, not the console
    assert steps["train_packed"]["packing"] == "kernel" and steps["train_padded"]["packing"] == "padded"
    assert steps["train_padded"]["val_ce_rel_diff_vs_packed"] <= 1e-4
    assert steps["fsdp_validate_first"]["val_ce_rel_diff_vs_packed"] <= 1e-4  # FSDP wrapping, validation first
    assert not (out / "fsdp" / "checkpoints").exists()  # one device writes none (training/checks.py)
    assert steps["base_lowp_lora_fp32"]["lora_dtypes"] == ["float32"]
    evaluation = steps["eval_vs_cpu"]
    assert evaluation["status"] == "ok" and evaluation["rows"] > 0 and evaluation["agreement"] == {"cpu_fp32": 1.0}
    table = proc.stdout.splitlines()
    assert table[-1].startswith("gpu-check (dry): all steps passed")
    assert [line.split()[:2] for line in table[-8:-1]] == [
        ["step", "status"], *([name, "ok"] for name in TRAINING), ["liger", "skipped"], ["eval_vs_cpu", "ok"]]
