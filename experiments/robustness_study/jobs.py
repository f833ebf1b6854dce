"""Resumable jobs of the robustness study: each one a command of the package run as a subprocess.

A job runs in its own directory and, when its command succeeds, gets ``done.json`` there (the git
commit it ran on, its command and wall time). A rerun skips every job with that marker; a job
directory without it (a stopped run) is started again. After each finished job its small outputs
(``metrics.json``, ``predictions.jsonl.gz``, ``job.json`` with the commit) are copied into
``<results>/jobs/<group>/<job>/`` and, with ``commit=True``, committed with git (only those paths).
"""
from __future__ import annotations

import gzip
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from coin_lightning.io import write_json, write_text

PYTHON = shlex.quote(sys.executable)
"""The interpreter the jobs run with (written as ``python`` in ``commands.sh``)."""
DONE = "done.json"
"""The marker of a finished job, in its directory."""


def git_commit(repo: Path) -> str:
    """``HEAD`` of ``repo``, with ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


class Jobs:
    """Runs and records the study's commands.

    Args:
        repo: the repository root (every command runs there; its commit is recorded).
        results: the results directory (small outputs, ``commands.sh``, ``stages.json``).
        commit: commit each job's small outputs with git.
    """

    def __init__(self, repo: Path, results: Path, commit: bool = False):
        self.repo, self.results, self.commit = repo, results, commit
        self.commands: list[str] = []
        self.walls: dict[str, dict] = {}
        self.code_commit = git_commit(repo)

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
        rec = self.walls.setdefault(stage, {"wall_s": 0.0, "jobs_run": 0, "jobs_skipped": 0})
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
        markers = [json.loads((d / DONE).read_text(encoding="utf-8")) for d in job_dirs]
        rec["wall_s"] = round(rec["wall_s"] + sum(m["wall_s"] for m in markers), 1)
        self.commands.extend(m["command"] for m in markers)
        return markers

    def collect(self, group: str, name: str, eval_dir: Path, done: dict, extra: dict | None = None) -> list[Path]:
        """Copy a finished job's small outputs into ``<results>/jobs/<group>/<name>/`` (and commit them)."""
        dest = self.results / "jobs" / group / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(eval_dir / "metrics.json", dest / "metrics.json")
        gz = dest / "predictions.jsonl.gz"
        if not gz.is_file():
            with open(eval_dir / "predictions.jsonl", "rb") as src, gzip.GzipFile(gz, "wb", mtime=0) as out:
                shutil.copyfileobj(src, out)
        write_json(dest / "job.json", {**done, **(extra or {})})
        paths = [dest / "metrics.json", gz, dest / "job.json"]
        if self.commit:
            self.git_commit_paths(paths, f"robustness study: {group}/{name} (ran on {done['commit']})")
        return paths

    def git_commit_paths(self, paths: Sequence[Path], message: str) -> None:
        """``git add`` and commit exactly ``paths`` in the repository holding them (nothing else staged
        is committed); no commit when they are unchanged."""
        root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=paths[0].parent,
                                   capture_output=True, text=True, check=True).stdout.strip())
        rel = [str(p.resolve().relative_to(root.resolve())) for p in paths]
        subprocess.run(["git", "add", "--", *rel], cwd=root, check=True)
        staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *rel], cwd=root)
        if staged.returncode != 0:
            subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=root, check=True)

    def write_log(self) -> None:
        """``commands.sh`` (every command, in stage order) and ``stages.json`` (wall time per stage)."""
        write_text(self.results / "commands.sh", "#!/bin/sh\n# the commands of python -m experiments.robustness_study.run, "
                   "in order (run from the repository root)\n"
                   + "".join(c.replace(PYTHON, "python", 1) + "\n" for c in dict.fromkeys(self.commands)))
        write_json(self.results / "stages.json", self.walls)
