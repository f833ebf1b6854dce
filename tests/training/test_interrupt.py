"""Ctrl-C and SIGTERM during training: a resumable checkpoint, a one-line exit, and an exact resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SMALL = [  # 4 optimizer steps of the tiny model; no periodic checkpoint, so only an interruption writes one
    "model=tiny_llama",
    "model.lora.dropout=0.0",
    "data.n_per_task=8",
    "data.val_size=8",
    "data.batch_size=4",
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    "callbacks.model_checkpoint.every_n_train_steps=100",
    "logger=csv",
    "~callbacks.progress",
]


SLURM_TASK = {  # what SLURM sets for a one-task job: Lightning's SLURMEnvironment detects it
    "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost",
}


def _train(args: list[str], slurm: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": os.pathsep.join(sys.path)}
    env |= SLURM_TASK if slurm else {}
    return subprocess.run([sys.executable, "-m", "coin_lightning.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("signame,reason,status", [("SIGINT", "Ctrl-C", 130), ("SIGTERM", "SIGTERM", 143)])
def test_signal_saves_a_checkpoint_exits_in_one_line_and_resumes_exactly(tmp_path, signame, reason, status):
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.training._signal_at.SignalAt", "+callbacks.kill.step=2",
            f"+callbacks.kill.signum={signame}"]
    out = _train([*SMALL, *kill, f"hydra.run.dir={run}"])
    assert out.returncode == status, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {reason} at step 2: checkpoint {ckpt}"), out.stderr[-2000:]
    assert f"ckpt_path={ckpt}" in last
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2 and state["optimizer_states"]
    assert not (run / "summary.json").exists() and not (run / "adapter").exists()

    # resume in the same directory: after Ctrl-C with ckpt_path=auto; after SIGTERM as a requeued SLURM
    # job does (same command, ckpt_path=null). It continues at step 2 and ends as a straight run does.
    slurm = signame == "SIGTERM"
    out = _train([*SMALL, f"hydra.run.dir={run}", *([] if slurm else ["ckpt_path=auto"])], slurm=slurm)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 4
    assert summary["learning"]["before_step"] == 2 and summary["learning"]["after_step"] == 4
    assert f"resuming from {ckpt}" in out.stdout + out.stderr
    straight = tmp_path / "straight"
    assert _train([*SMALL, f"hydra.run.dir={straight}"]).returncode == 0
    a, b = load_file(str(straight / "adapter" / "adapter_model.safetensors")), load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_interrupt_before_the_first_step_says_nothing_to_resume(tmp_path):
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=tests.training._signal_at.SignalAt", "+callbacks.kill.step=0",
            "+callbacks.kill.signum=SIGINT", "data.global_batch_size=16"]  # 4 micro-batches per optimizer step
    out = _train([*SMALL, *kill, f"hydra.run.dir={run}"])
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "interrupted by Ctrl-C before the first optimizer step: nothing to resume from")
    assert not (run / "checkpoints" / "interrupted.ckpt").exists()


def test_only_interruptions_are_restated(capsys):
    from types import SimpleNamespace

    from lightning.pytorch.trainer.states import TrainerStatus
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from coin_lightning.training.interrupt import exit_on_interrupt

    trainer = SimpleNamespace(state=SimpleNamespace(status=TrainerStatus.INTERRUPTED), callbacks=[], is_global_zero=True,
                              global_step=5)
    with pytest.raises(SystemExit, match=r"^error: data\.path=/x\.csv: no such file$") as err, exit_on_interrupt(trainer):
        raise SystemExit("error: data.path=/x.csv: no such file")  # a one-line error during training: unchanged
    assert err.value.code == "error: data.path=/x.csv: no such file" and capsys.readouterr().err == ""
    for exc, code, reason in ((SIGTERMException(), 143, "SIGTERM"), (SystemExit(1), 130, "Ctrl-C"), (KeyboardInterrupt(), 130, "Ctrl-C")):
        with pytest.raises(SystemExit, match=rf"^{code}$") as err, exit_on_interrupt(trainer):  # the status; message on stderr
            raise exc
        assert err.value.code == code
        assert capsys.readouterr().err == (f"interrupted by {reason} at step 5: no interruption checkpoint "
                                           "(add callbacks.interrupt)\n")
