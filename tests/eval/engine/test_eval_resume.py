"""Interrupting and resuming an evaluation, and what the loggers receive: finished (task, level) parts
survive Ctrl-C, a rerun in the same directory predicts only the rest and gives the uninterrupted
run's results, other settings are refused in one line; every logger gets the resolved config, W&B
also the result tables."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from coin_lightning.eval.engine.distributed import sigterm_as_interrupt
from coin_lightning.eval.engine.predict import Predictor
from coin_lightning.eval.scoring.metrics import FILES
from coin_lightning.evaluate import run as evaluate
from tests.eval.eval_helpers import write_instruction_file
from tests.eval.test_evaluate import PUBLISHED, _cfg

REPO = Path(__file__).resolve().parents[3]


def _args(tmp_path: Path, shared_data: Path) -> list[str]:
    path = write_instruction_file(tmp_path / "published.json", PUBLISHED)
    return ["model=tiny_llama", f"data.root={shared_data / 'glue'}", "eval.tasks=[rte,sst2]", "eval.samples_per_task=3",
            f"eval.instructions_file={path}", "eval.method=rank", "eval.batch_size=2"]


def _count_calls(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Count ``Predictor.predict`` calls (one per task and instruction); raise Ctrl-C at call ``fail_at``."""
    calls = [0]
    original = Predictor.predict

    def counted(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == fail_at:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict", counted)
    return calls


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / FILES["predictions"]).read_text().splitlines()]


def test_interrupted_evaluation_resumes_from_its_parts(tmp_path, shared_data, monkeypatch):
    args = _args(tmp_path, shared_data)
    full = evaluate(_cfg(tmp_path / "full", args))
    # 2 tasks x 2 levels (clean, character), 2 instructions each: rte's two parts finish, then Ctrl-C
    run = tmp_path / "run"
    _count_calls(monkeypatch, fail_at=5)
    with pytest.raises(SystemExit, match=r"^interrupted: 2 finished \(task, level\) part\(s\) kept") as err:
        evaluate(_cfg(run, args))
    text = str(err.value)
    assert text.startswith("interrupted: 2 finished (task, level) part(s) kept") and "\n" not in text
    assert sorted(p.name for p in (run / "parts").glob("*.jsonl")) == ["rte.character.jsonl", "rte.clean.jsonl"]
    assert not (run / FILES["metrics"]).exists()

    calls = _count_calls(monkeypatch)
    resumed = evaluate(_cfg(run, args))
    assert calls[0] == 4  # sst2's four instructions only
    assert resumed["run"]["resumed_parts"] == 2
    for key in ("per_instruction", "per_task_level", "per_level", "overall", "fingerprint"):
        assert resumed[key] == full[key]
    assert _rows(run) == _rows(tmp_path / "full")

    # a finished run in the same directory: nothing is predicted again
    calls = _count_calls(monkeypatch)
    again = evaluate(_cfg(run, args))
    assert calls[0] == 0 and again["overall"] == full["overall"]


def test_parts_of_other_settings_are_refused_before_the_model_loads(tmp_path, shared_data, monkeypatch):
    import coin_lightning.eval.cli as cli

    args = _args(tmp_path, shared_data)
    run = tmp_path / "run"
    evaluate(_cfg(run, args))
    before = sorted(p.name for p in run.rglob("*"))

    def no_load(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(cli, "load_for_inference", no_load)
    for override, key in (("eval.method=generate", "method"), ("eval.samples_per_task=4", "rows"),
                          ("eval.levels=[clean]", "instructions")):
        with pytest.raises(SystemExit, match=f"holds predictions made with another {key}") as err:
            evaluate(_cfg(run, args + [override]))
        text = str(err.value)
        assert f"holds predictions made with another {key}" in text and str(run / "parts") in text and "\n" not in text
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing of the earlier run is lost


def test_sigterm_raises_keyboard_interrupt_inside_the_block():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match=r"^$"), sigterm_as_interrupt():  # the handler's bare KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == previous


def _sigint_as_in_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default. A test run started in the background of a
    non-interactive shell ignores SIGINT, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_on_the_command_line_exits_in_one_line_and_keeps_the_parts(tmp_path, shared_data, sig):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coin_lightning.evaluate", "model=tiny_llama", "eval.tasks=[sst2]",
                             f"data.root={shared_data / 'glue'}", "eval.samples_per_task=400", "eval.max_new_tokens=7",
                             f"hydra.run.dir={run}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_in_a_terminal)
    deadline = time.time() + 300
    while not list((run / "parts").glob("*.jsonl")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the evaluation finished before it could be interrupted"
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("interrupted: ") and "Traceback" not in err
    kept = list((run / "parts").glob("*.jsonl"))
    assert kept and all(json.loads(x)["task"] == "sst2" for p in kept for x in p.read_text().splitlines())


def test_loggers_receive_the_config_tables_and_figures(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["model=tiny_llama", f"data.root={shared_data / 'glue'}", "eval.tasks=[rte]", "eval.samples_per_task=2",
            "eval.levels=[clean,sentence]", "eval.perturb.perturbations=[checklist]"]
    run = tmp_path / "run"
    metrics = evaluate(_cfg(run, args + ["logger=[csv,wandb]"]))
    hparams = yaml.safe_load((run / "csv" / "hparams.yaml").read_text())
    assert hparams["eval"]["tasks"] == ["rte"] and hparams["data"]["root"] == str(shared_data / "glue")
    assert hparams["trainer"] == {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    offline = next((run / "wandb").glob("offline-run-*"))
    table = json.loads(next((offline / "files" / "media" / "table" / "eval").glob("per_task_level_*.table.json")).read_text())
    assert table["columns"][:5] == ["task", "category", "level", "mean", "std"]
    assert [(r[0], r[2], r[3]) for r in table["data"]] == [(c["task"], c["level"], c["mean"]) for c in metrics["per_task_level"]]
    assert len(list((offline / "files" / "media" / "images").glob("accuracy_by_level_*.png"))) == 1
    assert str(shared_data / "glue").encode() in next(offline.glob("run-*.wandb")).read_bytes()  # the config


def test_when_rank_0_stops_the_other_rank_exits_in_one_line_too(tmp_path, shared_data):
    """``trainer=ddp_cpu``, SIGTERM to rank 0 only (a crash or ``kill`` of one process): rank 0 keeps its
    parts and says so, rank 1's failed gather is one line, not a traceback, and no process is left."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "coin_lightning.evaluate", "model=tiny_llama", "trainer=ddp_cpu",
                             "eval.tasks=[sst2]", f"data.root={shared_data / 'glue'}", "eval.samples_per_task=64",
                             "eval.batch_size=4", f"hydra.run.dir={run}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not list((run / "parts").glob("*.jsonl")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the evaluation finished before it could be interrupted"
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith(("interrupted:", "error:"))]
    assert any(x.startswith("interrupted: ") for x in lines)
    assert any(x.startswith("error: rank 1 lost another process of the evaluation") for x in lines)
    time.sleep(2)
    with pytest.raises(ProcessLookupError, match="No such process"):
        os.killpg(proc.pid, 0)  # the whole process group has exited
