"""Resuming from a job's own newest checkpoint, and the SLURM cluster plugin (training/resume.py)."""
from __future__ import annotations

import os
import time

import pytest
import torch

from coin_lightning.model.module import ConfigError
from coin_lightning.training.resume import cluster_plugins, newest_checkpoint, resolve_ckpt_path


def _ckpt(path, step, age_s=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(3)}}, path)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_newest_is_the_highest_global_step_not_the_latest_file(tmp_path):
    ck = tmp_path / "checkpoints"
    _ckpt(ck / "step000020.ckpt", 20, age_s=100)
    best = _ckpt(ck / "interrupted.ckpt", 27, age_s=50)
    _ckpt(ck / "other.ckpt", 5, age_s=0)  # written last, but an earlier step
    assert newest_checkpoint(tmp_path) == best


def test_ties_go_to_the_later_file_and_unreadable_files_are_skipped(tmp_path):
    ck = tmp_path / "checkpoints"
    _ckpt(ck / "step000020.ckpt", 20, age_s=10)
    last = _ckpt(ck / "last.ckpt", 20, age_s=0)
    good = ck / "step000030.ckpt"
    _ckpt(good, 30)
    (ck / "step000040.ckpt").write_bytes(good.read_bytes()[:100])  # cut short by a kill during the write
    assert newest_checkpoint(tmp_path) == good
    good.unlink()
    assert newest_checkpoint(tmp_path) == last


def test_lightning_hpc_checkpoints_in_the_job_directory_count(tmp_path):
    _ckpt(tmp_path / "checkpoints" / "last.ckpt", 10)
    hpc = _ckpt(tmp_path / "hpc_ckpt_1.ckpt", 12)
    assert newest_checkpoint(tmp_path) == hpc
    assert newest_checkpoint(tmp_path / "empty") is None


def test_ckpt_path_rules(tmp_path):
    ck = _ckpt(tmp_path / "checkpoints" / "step000003.ckpt", 3)
    assert resolve_ckpt_path(str(ck), tmp_path / "elsewhere") == str(ck)  # a file: as given
    assert resolve_ckpt_path("auto", tmp_path, on_slurm=False) == str(ck)
    assert resolve_ckpt_path("auto", tmp_path / "fresh", on_slurm=False) is None
    assert resolve_ckpt_path(None, tmp_path, on_slurm=False) is None  # a local run starts fresh
    assert resolve_ckpt_path(None, tmp_path, on_slurm=True) == str(ck)  # a requeued SLURM job resumes
    with pytest.raises(ConfigError, match="ckpt_path=/no/such.ckpt"):
        resolve_ckpt_path("/no/such.ckpt", tmp_path)


def test_slurm_plugin_only_under_slurm_and_without_lightnings_requeue(monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    assert cluster_plugins() == []
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    (env,) = cluster_plugins()
    assert isinstance(env, SLURMEnvironment) and not env.auto_requeue  # the requeue: callbacks.interrupt
