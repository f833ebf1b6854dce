"""Process plumbing of the check: child processes that import this checkout's code, and each step's
output sent to its own log file."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (file descriptors 1 and 2, so subprocesses and
    C extensions too) to ``path`` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def child_env() -> dict[str, str]:
    """This process's environment, with ``PYTHONPATH`` such that a child process imports the same
    ``coin_lightning`` and ``experiments`` (and ``tests``) packages as this one."""
    import coin_lightning

    paths = [str(Path(coin_lightning.__file__).parents[1]), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def run_module(module: str, *args: str) -> None:
    """``python -m <module> <args>`` from the repository root with :func:`child_env`; its output is
    printed (into the step's log).

    Raises:
        RuntimeError: it failed; the message is its last output line.
    """
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=child_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stdout.splitlines() if line.strip()] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"python -m {module}: {lines[-1].strip()}")
