"""Data sources: one :class:`~coin_lightning.data.sources.base.Source` subclass per ``data.source``
value, registered in :data:`SOURCES` (``docs/EXTENDING.md``: adding one)."""
from __future__ import annotations

from coin_lightning.data.records import DataError
from coin_lightning.data.sources.base import EvalSpec, Source
from coin_lightning.data.sources.coin_csv import CoinCsv
from coin_lightning.data.sources.embedded import Embedded
from coin_lightning.data.sources.flan import Flan
from coin_lightning.data.sources.glue import Glue

SOURCES: dict[str, Source] = {cls.name: cls() for cls in (Embedded, Glue, Flan, CoinCsv)}
"""``data.source`` value -> the source (an instance of its class), in the order error messages list them."""


def register(cls: type[Source]) -> type[Source]:
    """Register a source class under its ``name`` (usable as a class decorator); returns ``cls``.

    Raises:
        DataError: the name is empty or already registered (``SOURCES.pop(name)`` removes a source).
    """
    if not cls.name or cls.name in SOURCES:
        raise DataError(f"data source {cls.name!r}: {'already registered' if cls.name else 'no name'}")
    SOURCES[cls.name] = cls()
    return cls


def eval_tasks() -> dict[str, tuple[Source, EvalSpec]]:
    """The evaluation tasks of every registered source, ``{task: (source, spec)}``, in registry order."""
    return {task: (source, spec) for source in SOURCES.values() for task, spec in source.eval_tasks.items()}
