"""Resumable jobs of the robustness study: each one a command of the package run as a subprocess.

A job runs in its own directory and, when its command succeeds, gets ``done.json`` there (the git
commit it ran on, its command and wall time). A rerun skips every job with that marker; a job
directory without it (a stopped run) is started again. After each finished job its small outputs
(``metrics.json``, ``predictions.jsonl.gz``, ``overrides.yaml``, ``job.json`` with the commit) are
copied into ``<results>/jobs/<group>/<job>/`` and, with ``commit=True``, committed with git (only those
paths). From a clean checkout (no job directory), :meth:`Jobs.restore` rebuilds a job directory from
those small outputs, laid out as the job's evaluation output, so the job is skipped and never re-run.
"""
from __future__ import annotations

import fcntl
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from coin_lightning.io import write_json, write_text

PYTHON = shlex.quote(sys.executable)
"""The interpreter the jobs run with (written as ``python`` in ``commands.sh``)."""
DONE = "done.json"
"""The marker of a finished job, in its directory."""
RECORD = "job.json"
"""A finished job's record in the results (its ``done.json`` and the study's labels)."""

_ABSOLUTE = re.compile(r"(?<=[=\s'\"`,\[])/[^\s',\]\"`]+")


def repo_relative(command: str, root: Path | None = None) -> str:
    """``command`` (or any text: a JSON or markdown record) with every absolute path written relative to the
    repository root ``root`` (this checkout's by default), e.g. ``data.root=../shared/data/glue``, so that
    committed files hold no path of the machine they ran on."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    return _ABSOLUTE.sub(lambda m: os.path.relpath(m.group(0), root), command)


def as_python(command: str) -> str:
    """``command`` with its interpreter (this one, or the one an earlier run recorded) written as ``python``."""
    return re.sub(r"^\S*python[\d.]*(?=\s)", "python", command.replace(PYTHON, "python", 1))


def git_commit(repo: Path) -> str:
    """``HEAD`` of ``repo``, with ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def _gzip_copy(src: Path, dest: Path) -> Path:
    """Write ``src`` compressed to ``dest`` (no timestamp in the header, so equal inputs give equal bytes); return ``dest``."""
    with open(src, "rb") as fin, gzip.GzipFile(dest, "wb", mtime=0) as out:
        shutil.copyfileobj(fin, out)
    return dest


class Jobs:
    """Runs and records the study's commands.

    Args:
        repo: the repository root (every command runs there; its commit is recorded).
        results: the results directory (small outputs, ``commands.sh``, ``stages.json``).
        commit: commit each job's small outputs with git.
        program: the module whose commands these are (named in ``commands.sh``).
    """

    def __init__(self, repo: Path, results: Path, commit: bool = False, program: str = "experiments.robustness_study.run"):
        self.repo, self.results, self.commit, self.program = repo, results, commit, program
        self.commands: list[str] = []
        self.walls: dict[str, dict] = {}
        self.code_commit = git_commit(repo)
        self.restored: set[Path] = set()
        """Job directories rebuilt from the results in this run (:meth:`restore`)."""

    def recorded(self, group: str, name: str) -> Path | None:
        """``<results>/jobs/<group>/<name>`` when it holds a finished job's small outputs, else ``None``."""
        src = self.results / "jobs" / group / name
        return src if all((src / f).is_file() for f in (RECORD, "metrics.json", "predictions.jsonl.gz")) else None

    def restore(self, group: str, name: str, job_dir: Path, eval_dir: Path, also: dict | None = None) -> bool:
        """Rebuild a finished job's directory from its small outputs in the results, when it has no
        ``done.json`` but ``<results>/jobs/<group>/<name>`` is complete: ``metrics.json`` and the
        decompressed ``predictions.jsonl`` in ``eval_dir`` (inside ``job_dir``), ``.hydra/overrides.yaml``,
        ``also`` (``{path inside job_dir: source file}``) and ``done.json`` (the recorded one: its commit,
        command and wall time, with ``restored_from``). Adapters are not in the results and are not restored.

        Returns:
            Whether the job was restored (``False``: it has its marker, or the results do not hold it).
        """
        src = self.recorded(group, name)
        if (job_dir / DONE).is_file() or src is None or not all(Path(f).is_file() for f in (also or {}).values()):
            return False
        tmp = job_dir.with_name(job_dir.name + ".restoring")  # built aside, then moved: nothing half-written
        shutil.rmtree(tmp, ignore_errors=True)
        out = tmp / eval_dir.relative_to(job_dir)
        out.mkdir(parents=True)
        shutil.copy2(src / "metrics.json", out / "metrics.json")
        with gzip.open(src / "predictions.jsonl.gz", "rb") as fh, open(out / "predictions.jsonl", "wb") as dst:
            shutil.copyfileobj(fh, dst)
        if (src / "overrides.yaml").is_file():
            (tmp / ".hydra").mkdir(exist_ok=True)
            shutil.copy2(src / "overrides.yaml", tmp / ".hydra" / "overrides.yaml")
        for rel, path in (also or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, tmp / rel)
        record = json.loads((src / RECORD).read_text(encoding="utf-8"))
        write_json(tmp / DONE, {**record, "restored_from": str(src)})
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(job_dir)
        self.restored.add(job_dir)
        print(f"[robustness_study] {group}/{name}: restored from {src} (finished on {record.get('commit')}; not re-run)",
              flush=True)
        return True

    def run(self, stage: str, job_dir: Path, cmd: Sequence, done_when: Path | None = None, fresh: bool = False) -> dict:
        """Run ``cmd`` for ``job_dir`` unless its ``done.json`` exists; return that marker.

        Args:
            stage: the stage the wall time is counted in.
            done_when: a file the command must have written (checked before the marker is set).
            fresh: delete an unfinished ``job_dir`` before running (training restarts from scratch).

        Raises:
            SystemExit: the command failed or did not write ``done_when`` (its stderr tail is shown).
        """
        rel = done_when.relative_to(job_dir) if done_when is not None else None
        return self.run_many(stage, [job_dir], lambda pending: cmd, rel, fresh)[0]

    def run_many(self, stage: str, job_dirs: Sequence[Path], make_cmd: Callable[[list[Path]], Sequence],
                 done_file: Path | str | None = None, fresh: bool = False) -> list[dict]:
        """One command for every job of ``job_dirs`` without ``done.json`` (``make_cmd(pending)``, e.g. a
        Hydra multirun); each job's marker gets the command and an equal share of its wall time.

        Returns:
            The marker of every job, in order.

        Raises:
            SystemExit: the command failed, or a pending job lacks ``<job>/<done_file>`` afterwards.
        """
        rec = self.walls.setdefault(stage, {"wall_s": 0.0, "jobs_run": 0, "jobs_skipped": 0, "jobs_restored": 0})
        pending = [d for d in job_dirs if not (d / DONE).is_file()]
        if pending:
            if fresh:
                for d in pending:
                    shutil.rmtree(d, ignore_errors=True)
            cmd = [str(c) for c in make_cmd(pending)]
            line = " ".join(shlex.quote(c) for c in cmd)
            print(f"[robustness_study] {stage}: {line}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=self.repo, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            missing = [d.name for d in pending if done_file is not None and not (d / done_file).is_file()]
            if proc.returncode != 0 or missing:
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
                raise SystemExit(f"error: {stage} failed (exit status {proc.returncode}"
                                 + (f"; no {done_file} in {', '.join(missing)}" if missing else "") + f"): {line}\n{tail}")
            for d in pending:
                write_json(d / DONE, {"commit": self.code_commit, "command": line, "wall_s": round(wall / len(pending), 1),
                                      "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
            rec["jobs_run"] += len(pending)
        rec["jobs_skipped"] += len(job_dirs) - len(pending)
        rec["jobs_restored"] += sum(d in self.restored for d in job_dirs)
        markers = [json.loads((d / DONE).read_text(encoding="utf-8")) for d in job_dirs]
        rec["wall_s"] = round(rec["wall_s"] + sum(m["wall_s"] for m in markers), 1)
        self.commands.extend(m["command"] for m in markers)
        return markers

    def collect(self, group: str, name: str, job_dir: Path, eval_dir: Path, done: dict, extra: dict | None = None,
                commit: bool = True) -> list[Path]:
        """Copy a finished job's small outputs (evaluation metrics, compressed predictions and, for a training
        job, its logged curves as ``train_metrics.csv.gz``) into ``<results>/jobs/<group>/<name>/`` (``job.json`` last,
        as it marks them complete) and, with ``commit`` and the study's ``--commit``, commit them; a job
        restored from there (in this run or an earlier one) is left as it is (returns ``[]``)."""
        if done.get("restored_from"):
            return []
        dest = self.results / "jobs" / group / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(eval_dir / "metrics.json", dest / "metrics.json")
        paths = [dest / "metrics.json", _gzip_copy(eval_dir / "predictions.jsonl", dest / "predictions.jsonl.gz")]
        curve = job_dir / "csv" / "metrics.csv"  # a training job's logged curves (CE, InfoNCE, similarities)
        if curve.is_file():
            paths.append(_gzip_copy(curve, dest / "train_metrics.csv.gz"))
        if (job_dir / ".hydra" / "overrides.yaml").is_file():
            shutil.copy2(job_dir / ".hydra" / "overrides.yaml", dest / "overrides.yaml")
            paths.append(dest / "overrides.yaml")
        write_json(dest / RECORD, {**done, **(extra or {})})
        paths.append(dest / RECORD)
        if commit:
            self.commit_paths(paths, f"robustness study: {group}/{name} (ran on {done['commit']})")
        return paths

    def commit_paths(self, paths: Sequence[Path], message: str) -> None:
        """With the study's ``--commit``: :meth:`git_commit_paths`; otherwise nothing."""
        if self.commit and paths:
            self.git_commit_paths(paths, message)

    def git_commit_paths(self, paths: Sequence[Path], message: str) -> None:
        """``git add`` and commit exactly ``paths`` in the repository holding them (nothing else staged
        is committed); no commit when they are unchanged."""
        root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=paths[0].parent,
                                   capture_output=True, text=True, check=True).stdout.strip())
        rel = [str(p.resolve().relative_to(root.resolve())) for p in paths]
        common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        with open((root / common) / "robustness-study.lock", "w") as lock:  # runners side by side commit in turn
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run(["git", "add", "--", *rel], cwd=root, check=True)
            staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *rel], cwd=root)
            if staged.returncode != 0:
                subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=root, check=True)

    def write_log(self) -> None:
        """``commands.sh`` (every command, in stage order) and ``stages.json`` (wall time per stage)."""
        write_text(self.results / "commands.sh", f"#!/bin/sh\n# the commands of python -m {self.program}, "
                   "in order (run from the repository root; paths relative to it)\n"
                   + "".join(repo_relative(as_python(c)) + "\n" for c in dict.fromkeys(self.commands)))
        write_json(self.results / "stages.json", self.walls)
