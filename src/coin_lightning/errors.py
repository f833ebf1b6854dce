"""Bad input reported in one line: the user-error base class and the wrapper every entry point uses.

Every error caused by the configuration or the input (a config key, a file, a row) derives from
:class:`UserError`, whatever layer raises it (``DataError``, ``ConfigError``, ``ModelLoadError``,
``EvalConfigError``, ...). The entry points (``train``, ``evaluate``, ``analyze``, ``compare``,
``data show``) run their work inside :func:`reported`, which turns a user error, and a library error
that names its key or file (Hydra's ``InstantiationException``, OmegaConf's errors, a missing file),
into ``error: <one line>`` on stderr and exit status 1, without a traceback. ``--verbose`` (removed
from the command line by :func:`take_verbose_flag`) or ``HYDRA_FULL_ERROR=1`` keeps the full trace.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

VERBOSE_ENV = "COIN_LIGHTNING_VERBOSE"
"""Environment variable set by ``--verbose``: user errors keep their full traceback."""


class UserError(Exception):
    """Bad configuration or input. The message is one line naming the key, file or row at fault."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the key."""


class EvalConfigError(UserError, ValueError):
    """A bad ``eval.*`` (or evaluation ``trainer.*``) setting; the message names the key."""


def is_verbose() -> bool:
    """Whether full tracebacks were asked for (``--verbose`` or ``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(VERBOSE_ENV) == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def take_verbose_flag(argv: list[str] | None = None) -> list[str]:
    """Remove ``--verbose`` from ``argv`` (default ``sys.argv``, in place) and remember it in the
    environment, so that Hydra's parser never sees it and processes started later (DDP ranks) inherit it.

    Returns:
        The same list, without ``--verbose``.
    """
    argv = sys.argv if argv is None else argv
    if "--verbose" in argv:
        while "--verbose" in argv:
            argv.remove("--verbose")
        os.environ[VERBOSE_ENV] = "1"
        os.environ["HYDRA_FULL_ERROR"] = "1"
    return argv


def _flat(text: str) -> str:
    """One line: the lines of ``text`` joined by ``; ``, blank lines dropped."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _instantiation_message(exc: Exception) -> str | None:
    cause = exc.__cause__
    inner = one_line(cause) if cause is not None else None
    if inner is not None and isinstance(cause, UserError):
        return inner
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    detail = inner or (f"{type(cause).__name__}: {_flat(cause)}" if cause is not None else _flat(lines[0] if lines else exc))
    return f"{key}: {detail}" if key and not detail.startswith(f"{key}") else detail


def one_line(exc: BaseException) -> str | None:
    """The one-line message of an error caused by the input, or ``None`` for anything else (a bug).

    Recognised: :class:`UserError`; Hydra's ``InstantiationException`` (named by the config key of
    the object it was building) and composition errors; OmegaConf errors (named by their key, e.g. a
    required ``???`` value left unset); Lightning's ``MisconfigurationException``; a missing or
    unreadable file (``OSError`` with a file name).
    """
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(exc, UserError):
        return _flat(exc)
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", None) or "a config key"
        return f"{key} is required (its value is ???): set {key}=..."
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        msg = getattr(exc, "msg", None) or str(exc)
        return f"{key}: {_flat(msg)}" if key else _flat(msg)
    try:
        from hydra.errors import HydraException, InstantiationException
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, InstantiationException):
        return _instantiation_message(exc)
    if isinstance(exc, HydraException):
        return _flat(exc)
    if type(exc).__name__ == "MisconfigurationException":  # lightning's (imported lazily: it is slow)
        return f"trainer: {_flat(exc)}"
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return None


def _message_or_raise(exc: BaseException) -> str:
    msg = one_line(exc)
    if msg is None or is_verbose():
        raise exc
    return msg


def exit_if_user_error(exc: BaseException) -> None:
    """Called in an ``except`` clause: exit with ``error: <one line>`` if ``exc`` is the input's fault.

    Raises:
        SystemExit: ``error: <one line>`` (printed to stderr by Python, exit status 1) for an error
            :func:`one_line` recognises, unless :func:`is_verbose`.
        BaseException: ``exc`` itself, with its traceback, otherwise (a bug, or verbose).
    """
    raise SystemExit(f"error: {_message_or_raise(exc)}") from None


def print_user_error(exc: BaseException) -> int:
    """Called in an ``except`` clause of a command that returns its exit status (argparse commands):
    print ``error: <one line>`` to stderr and return 2 if ``exc`` is the input's fault.

    Raises:
        BaseException: ``exc`` itself, with its traceback, for anything else (a bug, or verbose).
    """
    print(f"error: {_message_or_raise(exc)}", file=sys.stderr, flush=True)
    return 2


@contextlib.contextmanager
def reported(on_failure: Callable[[], None] | None = None) -> Iterator[None]:
    """Run the body; turn an error caused by the input into ``error: <one line>`` and a non-zero exit.

    Args:
        on_failure: called on any exception before it is reported or re-raised (e.g. removing the
            files a failed run wrote, :meth:`coin_lightning.outputs.JobDir.discard`).

    Raises:
        SystemExit: as :func:`exit_if_user_error`.
        Exception: errors that are not the input's fault (bugs), and every error when
            :func:`is_verbose`, unchanged with their traceback.
    """
    try:
        yield
    except Exception as exc:
        if on_failure is not None:
            on_failure()
        exit_if_user_error(exc)
