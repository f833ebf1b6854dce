"""What every command (``coin-train``, ``coin-evaluate``, ...) sets up before its work: known
third-party noise filtered by its exact message, and the help text of the argparse commands.

Console scripts (``[project.scripts]`` in ``pyproject.toml``) call the entry modules' ``cli``
(Hydra commands) or ``main`` (argparse commands); ``python -m coin_lightning.<command>`` runs the same
function.
"""
from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

from coin_lightning.errors import run_hydra
from coin_lightning.outputs import take_snapshot

NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # peft asks transformers for the deprecated name (transformers 5.x)
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    # torchdata's StatefulDataLoader calls a deprecated torch function at every epoch
    (r"'set_vital' is deprecated, please do not call", UserWarning),
    # Lightning's own call of a torch.utils._pytree name deprecated in torch 2.13
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning),
)
"""(message regex matched from its start, category) of third-party warnings nobody can act on."""

NOISY_LOG_MESSAGES: dict[str, tuple[str, ...]] = {  # Lightning advertises a cloud logger at every fit
    f"lightning.{package}.utilities.rank_zero": ("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",)
    for package in ("pytorch", "fabric")
}
"""Logger name -> starts of the log messages dropped from it (advertisements)."""


class DropMessages(logging.Filter):
    """A logging filter that drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is kept (its message starts with none of the prefixes)."""
        return not record.getMessage().startswith(self.prefixes)


def quiet_third_party() -> None:
    """Filter :data:`NOISY_WARNINGS` and :data:`NOISY_LOG_MESSAGES` (each by its exact message; other
    warnings of the same category, the project's own included, are still shown). Idempotent."""
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefixes in NOISY_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(prefixes))


def hydra_command(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function as a command: noise filtered, errors in one line
    (:func:`coin_lightning.errors.run_hydra`); the directories that exist before Hydra creates the job's are
    recorded first (:func:`coin_lightning.outputs.take_snapshot`)."""
    take_snapshot(sys.argv)
    quiet_third_party()
    run_hydra(main)


def examples(doc: str, command: str) -> str:
    """The first line and the ``Examples::`` block of an entry module's docstring, for argparse's
    ``description``, with ``python -m coin_lightning.<name>`` written as the console script ``command``."""
    block = doc.split("Examples::", 1)[1].split("\n\n", 2)[1] if "Examples::" in doc else ""
    first = doc.strip().splitlines()[0].split(": ", 1)[-1]  # without the "``coin-x`` (or ``python -m ...``)" it starts with
    text = f"{first}\n\nexamples:\n{block}" if block else first
    return re.sub(r"python -m coin_lightning\.\w+", command, text).replace("``", "")
