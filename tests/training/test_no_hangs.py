"""No hangs with several ranks: one rank's failure ends every rank in bounded time, and the SLURM
requeue signal (sent to every task, as SLURM does) stops every rank at the same batch, writes a
resumable checkpoint and requeues the job once (``training/interrupt.py``)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from coin_lightning.training.interrupt import exit_on_interrupt
from coin_lightning.training.resume import resolve_ckpt_path
from tests.training._fsdp_train import FSDP_CPU, SMALL

REPO = Path(__file__).resolve().parents[2]
BOUND_S = 60
"""How long the ranks may take to end after the failure or the signal."""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return env | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])} | extra


def test_one_rank_failing_ends_every_rank_with_one_line_and_no_collective(tmp_path):
    """Rank 1 raises after 2 steps under FSDP (where a checkpoint would gather the full state)."""
    out, failed_at = tmp_path / "job", tmp_path / "failed_at"
    fault = ["+callbacks.fault._target_=tests.training._faults.RaiseAt", "+callbacks.fault.step=2",
             "+callbacks.fault.rank=1", f"+callbacks.fault.path={failed_at}", "trainer.max_steps=8",
             "callbacks.model_checkpoint.every_n_train_steps=100"]
    cmd = [sys.executable, "-m", "tests.training._fsdp_train", str(out), *FSDP_CPU, *fault]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    ended = time.time()
    assert proc.returncode != 0 and failed_at.is_file(), proc.stderr[-3000:]
    assert ended - float(failed_at.read_text()) < BOUND_S
    named = [line for line in proc.stderr.splitlines() if "rank 1" in line]
    assert named == ["error: rank 1 of 2 failed at step 2: RuntimeError: injected failure; the other ranks are "
                     "stopped and no checkpoint is written after a failure on one rank (resume from the last "
                     "periodic one: ckpt_path=auto)"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints" / "interrupted.ckpt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_requeue_signal_stops_every_rank_checkpoints_and_requeues_once(tmp_path):
    """Two SLURM tasks (started by the test, as srun starts them) get SIGUSR1 while training."""
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "scontrol.calls"
    (fake / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake / "scontrol").chmod(0o755)
    run, mark = tmp_path / "run", tmp_path / "step1"
    args = [*SMALL, "trainer=ddp_cpu", "trainer.max_steps=30", "callbacks.model_checkpoint.every_n_train_steps=100",
            "+callbacks.mark._target_=tests.training._faults.MarkAt", "+callbacks.mark.step=1",
            f"+callbacks.mark.path={mark}", f"hydra.run.dir={run}"]
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242",
             "SLURM_NODELIST": "localhost", "SLURM_NODEID": "0", "MASTER_PORT": str(_free_port()),
             "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    procs = []
    for rank in (0, 1):
        extra = [] if rank == 0 else ["hydra.output_subdir=null", "hydra.job.name=train_ddp_process_1"]
        env = _env(**slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))
        procs.append(subprocess.Popen([sys.executable, "-m", "coin_lightning.train", *args, *extra], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.time() + 480
        while not mark.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        assert mark.exists(), procs[0].communicate()[1][-3000:]
        for p in reversed(procs):  # SLURM's --signal=USR1@<s> reaches every task, not at the same instant
            p.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
        sent = time.time()
        results = [p.communicate(timeout=BOUND_S) for p in procs]
        assert time.time() - sent < BOUND_S
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [128 + signal.SIGUSR1] * 2, results[0][1][-3000:] + results[1][1][-3000:]
    assert calls.read_text().splitlines() == ["requeue 4242"]  # once, from global rank 0
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    step = state["global_step"]
    assert 1 <= step < 30 and state["optimizer_states"][0]["state"]
    last = results[0][1].strip().splitlines()[-1]
    assert last == (f"interrupted by SIGUSR1 at step {step}: checkpoint {ckpt}; requeued SLURM job 4242, "
                    "which resumes from its newest checkpoint"), results[0][1][-3000:]
    assert "Traceback" not in results[0][1] + results[1][1]
    assert resolve_ckpt_path(None, run, on_slurm=True) == str(ckpt)  # what the requeued job resumes from


def test_a_rank_failure_exits_in_one_line_and_stops_the_ranks_it_started(capsys):
    killed = []
    launcher = SimpleNamespace(kill=killed.append)
    trainer = SimpleNamespace(world_size=4, global_rank=0, global_step=7, strategy=SimpleNamespace(launcher=launcher))
    with pytest.raises(SystemExit, match=r"^1$") as err, exit_on_interrupt(trainer):  # status 1, message on stderr
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert err.value.code == 1 and killed == [signal.SIGKILL]  # rank 0 started the other local ranks
    assert capsys.readouterr().err.startswith(
        "error: rank 0 of 4 failed at step 7: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB;")
    with pytest.raises(SystemExit, match=r"^1$"), exit_on_interrupt(trainer):
        raise dist.DistBackendError("NCCL communicator was aborted")  # a peer failed first
    assert capsys.readouterr().err.startswith("error: rank 0 of 4 stopped at step 7: a collective with the other ranks failed")
    trainer.world_size = 1  # one process: the exception passes unchanged
    with pytest.raises(ValueError, match="bad batch"), exit_on_interrupt(trainer):
        raise ValueError("bad batch")
