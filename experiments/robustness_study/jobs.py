"""Resumable jobs of the robustness study: each one a command of the package run as a subprocess.

A job runs in its own directory and, when its command succeeds, gets ``done.json`` there (the git
commit it ran on, its command and wall time). A rerun skips every job with that marker; a job
directory without it (a stopped run) is started again. After each finished job its small outputs
(``metrics.json``, ``predictions.jsonl.gz``, ``overrides.yaml``, ``job.json`` with the commit) are
copied into ``<results>/jobs/<group>/<job>/`` and, with ``commit=True``, committed with git (only those
paths). From a clean checkout (no job directory), :meth:`Jobs.restore` rebuilds a job directory from
those small outputs, laid out as the job's evaluation output, so the job is skipped and never re-run.

Records name no path of the machine that ran them (:func:`portable`): the interpreter is ``python``, a
path in the work directory is ``<work>/...`` and any other path is relative to the repository root
(the shared data: ``../shared/...``). Reuse and restore compare these forms, so they work from any
checkout and work directory.
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

WORK = "<work>"
"""How a record names the study's work directory (``--work``), wherever it was on the machine that ran it."""
REPO = Path(__file__).resolve().parents[2]
"""This checkout's root."""

_ABSOLUTE = re.compile(r"(?<![^=\s'\"`,\[])/[^\s',\]\"`]+")  # at the start, or after = space quote , [
_RELATIVE = re.compile(r"(?<![^=\s'\"`,\[])(?:<work>|[\w.-]+)/[^\s',\]\"`]*")
_INTERPRETER = re.compile(r"/(?:[^/]+/)*bin/python[\d.]*")


def _dirs(x) -> list[str]:
    """One directory or several, as normalised absolute strings, longest first (the most specific wins)."""
    many = [] if x is None else [x] if isinstance(x, (str, os.PathLike)) else list(x)
    return sorted((os.path.normpath(str(d)) for d in many), key=len, reverse=True)


def portable(text: str, work=None, repo=None) -> str:
    """``text`` (a command, a path, or a whole JSON, YAML or markdown record) as the records hold it, naming
    no path of the machine it ran on: an absolute path of a Python interpreter (``.../bin/python3``) becomes
    ``python``, a path in the study's work directory ``work`` ``<work>/...`` and any other absolute path
    relative to the repository root ``repo`` (this checkout's by default), e.g. ``data.root=../shared/data/glue``.

    ``work`` and ``repo`` may each be several directories (records written on several machines): a path in
    any of them is mapped as above, one outside every ``repo`` is written relative to the first. Applied to
    its own output, it changes nothing.
    """
    given = [REPO] if repo is None else [repo] if isinstance(repo, (str, os.PathLike)) else list(repo)
    works, repos, first = _dirs(work), _dirs(given), os.path.normpath(str(given[0]))

    def one(m: re.Match) -> str:
        path = m.group(0)
        if _INTERPRETER.fullmatch(path):
            return "python"
        for w in works:
            if path == w or path.startswith(w + "/"):
                return WORK + path[len(w):]
        for r in repos:
            if path == r or path.startswith(r + "/"):
                return os.path.relpath(path, r)
        return os.path.relpath(path, first)

    return _ABSOLUTE.sub(one, str(text))


def portable_record(obj, work=None, repo=None):
    """``obj`` (a JSON record: dicts, lists, strings, numbers) with :func:`portable` applied to every string."""
    if isinstance(obj, str):
        return portable(obj, work, repo)
    if isinstance(obj, dict):
        return {k: portable_record(v, work, repo) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_record(v, work, repo) for v in obj]
    return obj


def local(text: str, work: Path | None, repo: Path | None = None) -> str:
    """The inverse of :func:`portable` for a restored job's overrides: ``<work>`` becomes the work directory
    ``work`` and a path relative to the repository root ``repo`` (``../shared/data/glue``, or one whose
    first part is in the repository) absolute, as a job run here names them (``compare --sweep`` groups the
    jobs into arms by their overrides, restored and newly run alike)."""
    repo = Path(repo if repo is not None else REPO)

    def one(m: re.Match) -> str:
        path = m.group(0)
        if path.startswith(WORK):
            return path if work is None else str(work) + path[len(WORK):]
        if path.startswith("../") or (repo / path.split("/")[0]).exists():
            return os.path.normpath(repo / path)
        return path

    return _RELATIVE.sub(one, text)


def shell_line(command: str) -> str:
    """A recorded command as a line of ``commands.sh``: ``<work>`` as ``"$WORK"`` (quoted for ``sh``)."""
    if command.startswith("#") or WORK not in command:
        return command

    def quote(arg: str) -> str:  # each piece around <work> quoted for sh, <work> itself as "$WORK"
        if WORK not in arg:
            return shlex.quote(arg)
        return '"$WORK"'.join(shlex.quote(piece) if piece else "" for piece in arg.split(WORK))

    return " ".join(quote(arg) for arg in shlex.split(command))


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
        work: the study's work directory (``<work>`` in the records, :func:`portable`).
    """

    def __init__(self, repo: Path, results: Path, commit: bool = False, program: str = "experiments.robustness_study.run",
                 work: Path | None = None):
        self.repo, self.results, self.commit, self.program, self.work = repo, results, commit, program, work
        self.commands: list[str] = []
        self.walls: dict[str, dict] = {}
        self.code_commit = git_commit(repo)
        self.restored: set[Path] = set()
        """Job directories rebuilt from the results in this run (:meth:`restore`)."""

    def portable(self, text: str) -> str:
        """:func:`portable` for this checkout and work directory: how a record names ``text``."""
        return portable(text, self.work, self.repo)

    def portable_record(self, obj):
        """:func:`portable_record` for this checkout and work directory."""
        return portable_record(obj, self.work, self.repo)

    def recorded(self, group: str, name: str) -> Path | None:
        """``<results>/jobs/<group>/<name>`` when it holds a finished job's small outputs, else ``None``."""
        src = self.results / "jobs" / group / name
        return src if all((src / f).is_file() for f in (RECORD, "metrics.json", "predictions.jsonl.gz")) else None

    def restore(self, group: str, name: str, job_dir: Path, eval_dir: Path, also: dict | None = None) -> bool:
        """Rebuild a finished job's directory from its small outputs in the results, when it has no
        ``done.json`` but ``<results>/jobs/<group>/<name>`` is complete: ``metrics.json`` and the
        decompressed ``predictions.jsonl`` in ``eval_dir`` (inside ``job_dir``), ``.hydra/overrides.yaml``
        (its paths as a job run here names them, :func:`local`), ``also`` (``{path inside job_dir: source
        file}``) and ``done.json`` (the recorded one: its commit, command and wall time in their portable
        form, with ``restored_from``). Adapters are not in the results and are not restored.

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
            write_text(tmp / ".hydra" / "overrides.yaml",
                       local((src / "overrides.yaml").read_text(encoding="utf-8"), self.work, self.repo))
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
                write_json(d / DONE, {"commit": self.code_commit, "command": self.portable(line),
                                      "wall_s": round(wall / len(pending), 1),
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
        as it marks them complete; the text ones with their paths :func:`portable`) and, with ``commit`` and the
        study's ``--commit``, commit them; a job restored from there (in this run or an earlier one) is left as it
        is (returns ``[]``)."""
        if done.get("restored_from"):
            return []
        dest = self.results / "jobs" / group / name
        dest.mkdir(parents=True, exist_ok=True)
        write_text(dest / "metrics.json", self.portable((eval_dir / "metrics.json").read_text(encoding="utf-8")))
        paths = [dest / "metrics.json", _gzip_copy(eval_dir / "predictions.jsonl", dest / "predictions.jsonl.gz")]
        curve = job_dir / "csv" / "metrics.csv"  # a training job's logged curves (CE, InfoNCE, similarities)
        if curve.is_file():
            paths.append(_gzip_copy(curve, dest / "train_metrics.csv.gz"))
        if (job_dir / ".hydra" / "overrides.yaml").is_file():
            write_text(dest / "overrides.yaml", self.portable((job_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8")))
            paths.append(dest / "overrides.yaml")
        write_json(dest / RECORD, self.portable_record({**done, **(extra or {})}))
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
        """``commands.sh`` (every command, in stage order, :func:`portable`, with ``$WORK`` for the work
        directory: :func:`shell_line`) and ``stages.json`` (wall time per stage)."""
        lines = dict.fromkeys(shell_line(self.portable(as_python(c))) for c in self.commands)
        write_text(self.results / "commands.sh", f"#!/bin/sh\n# the commands of python -m {self.program}, "
                   "in order (run from the repository root; paths relative to it, WORK: the run's --work)\n"
                   ': "${WORK:?set WORK to the work directory (--work)}"\n' + "".join(c + "\n" for c in lines))
        write_json(self.results / "stages.json", self.walls)
