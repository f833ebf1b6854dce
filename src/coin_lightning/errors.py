"""Bad input reported in one line: the user-error base class and the wrapper every entry point uses.

Every error caused by the configuration or the input (a config key, a file, a row) derives from
:class:`UserError`, whatever layer raises it (``DataError``, ``ConfigError``, ``ModelLoadError``,
``EvalConfigError``, ...). Every command (``train``, ``evaluate``, ``analyze``, ``compare``, ``data
show``, ``download``, and the evaluation a training run makes with ``eval_after_train``) runs its
work inside :func:`reported`, which turns a user error, and a library error that names its key or
file (Hydra's composition and ``InstantiationException``, the config library's errors, a missing file), into
``error: <one line>`` on stderr and a non-zero exit, without a traceback, and removes what the failed
job wrote (:class:`coin_lightning.outputs.JobDir`). The Hydra commands start through
:func:`run_hydra`, so that errors Hydra meets while composing the config (an unknown key, a value of
the wrong type) are reported the same way. ``--verbose`` (removed from the command line by
:func:`take_verbose_flag`) or ``HYDRA_FULL_ERROR=1`` keeps the full trace.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hydra.errors import HydraException, InstantiationException, MissingConfigException

from coin_lightning.outputs import JobDir

VERBOSE_ENV = "COIN_LIGHTNING_VERBOSE"
"""Environment variable set by ``--verbose``: user errors keep their full traceback."""


class UserError(Exception):
    """Bad configuration or input. The message is one line naming the key, file or row at fault."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the key."""


class EvalConfigError(UserError, ValueError):
    """A bad ``eval.*`` (or evaluation ``trainer.*``) setting; the message names the key."""


def is_verbose() -> bool:
    """Whether full tracebacks were asked for (``--verbose``, or ``HYDRA_FULL_ERROR=1`` set by the user)."""
    return os.environ.get(VERBOSE_ENV, os.environ.get("HYDRA_FULL_ERROR")) == "1"


def take_verbose_flag(argv: list[str] | None = None) -> list[str]:
    """Remove ``--verbose`` from ``argv`` (default ``sys.argv``, in place) and remember it in the
    environment, so that Hydra's parser never sees it and processes started later (DDP ranks) inherit it.

    Returns:
        The same list, without ``--verbose``.
    """
    argv = sys.argv if argv is None else argv
    if "--verbose" in argv:
        argv[:] = [arg for arg in argv if arg != "--verbose"]
        os.environ.update({VERBOSE_ENV: "1", "HYDRA_FULL_ERROR": "1"})
    return argv


def _flat(text: str) -> str:
    """One line: the lines of ``text`` joined by ``; ``, blank lines dropped."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


MESSAGE_HOOKS: list[Callable[[BaseException], str | None]] = []
"""Functions that give the one-line message of a library's error (or ``None``); :func:`one_line` asks
each before its own rules. :mod:`coin_lightning.config_types` adds the config library's."""


def one_line(exc: BaseException) -> str | None:
    """The one-line message of an error caused by the input, or ``None`` for anything else (a bug).

    Recognised: :class:`UserError`; what a :data:`MESSAGE_HOOKS` function names (the config library's
    errors, by their key); Hydra's ``InstantiationException`` (named by the config key of the object it
    was building) and composition errors; Lightning's ``MisconfigurationException``; a missing or
    unreadable file (``OSError`` with a file name).
    """
    if isinstance(exc, UserError):
        return _flat(exc)
    for hook in MESSAGE_HOOKS:
        if (msg := hook(exc)) is not None:
            return msg
    if isinstance(exc, MissingConfigException) and "/" in (exc.missing_cfg_file or "") and exc.options is not None:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(o for o in exc.options if o != "schema")
        return f"{group}={name}: no such option in conf/{group}/; options: {options}"
    if isinstance(exc, InstantiationException):
        cause = exc.__cause__
        inner = one_line(cause) if cause is not None else None
        if inner is not None and isinstance(cause, UserError):
            return inner
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
        detail = inner or (f"{type(cause).__name__}: {_flat(cause)}" if cause is not None else _flat(lines[0] if lines else exc))
        return f"{key}: {detail}" if key and not detail.startswith(f"{key}") else detail
    if isinstance(exc, HydraException):  # composition (a config-library cause was named by a hook above)
        return _flat(exc)
    if type(exc).__name__ == "MisconfigurationException":  # lightning's (imported lazily: it is slow)
        return f"trainer: {_flat(exc)}"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return None


@contextlib.contextmanager
def reported(job_dir: str | os.PathLike | None = None, status: int = 1) -> Iterator[JobDir | None]:
    """Run a command's work; an error caused by the input becomes ``error: <one line>`` and an exit.

    Args:
        job_dir: the job's output directory: on any error, what the job wrote there goes
            (:meth:`coin_lightning.outputs.JobDir.discard`) unless the job called ``keep()`` on the
            yielded :class:`~coin_lightning.outputs.JobDir` once it held results.
        status: the exit status of a user error (1; the argparse commands use 2).

    Yields:
        The :class:`~coin_lightning.outputs.JobDir` (``None`` without ``job_dir``).

    Raises:
        SystemExit: ``error: <one line>`` on stderr and exit status ``status``, for an error
            :func:`one_line` recognises, unless :func:`is_verbose`.
        Exception: errors that are not the input's fault (bugs), and every error when verbose,
            unchanged with their traceback. ``SystemExit`` and interrupts pass through untouched.
    """
    job = JobDir(job_dir) if job_dir is not None else None
    try:
        yield job
    except Exception as exc:
        if job is not None:
            job.discard()
        msg = one_line(exc)
        if msg is None or is_verbose():
            raise
        if status == 1:  # Python prints the message to stderr and exits with 1; callers in-process can read it
            raise SystemExit(f"error: {msg}") from None
        print(f"error: {msg}", file=sys.stderr, flush=True)
        raise SystemExit(status) from None


def run_hydra(main: Callable[[], Any]) -> None:
    """Start a ``@hydra.main`` command: take ``--verbose``, and report Hydra's own errors in one line.

    Hydra prints errors met while composing the config (an override of an unknown key, a value of
    the wrong type for a typed config) over several lines and exits; with ``HYDRA_FULL_ERROR=1`` it
    raises them instead, and :func:`reported` restates them. Whether the user asked for full
    tracebacks is kept in :data:`VERBOSE_ENV` first, so processes started later (DDP ranks) agree.
    """
    take_verbose_flag()
    os.environ.setdefault(VERBOSE_ENV, "1" if is_verbose() else "0")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with reported():
        main()
