"""Checks of config values: types of config dataclass fields, ranges and required (``???``) values,
each refused in one line naming its key.

Hydra passes command-line values through as YAML scalars, so ``loss.lambda=abc`` arrives as the string
``"abc"`` and would only fail later, deep in a computation. :func:`check_types` compares every field
of a config dataclass with its annotation before anything uses it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from coin_lightning.errors import ConfigError

_CHECKS: dict[str, Callable[[Any], bool]] = {
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
    "list": lambda v: isinstance(v, (list, tuple)),
}

_WORDS = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string", "None": "null",
          "list": "a list"}


def _kind(annotation: str) -> str:
    return annotation.split("[", 1)[0].strip()


def check_types(obj: Any, prefix: str, error: type[Exception] = ConfigError) -> Any:
    """Check every field of the dataclass ``obj`` against its annotation; ints become floats where
    ``float`` is expected. Nested dataclass fields are checked with ``<prefix>.<field>``.

    Args:
        obj: a dataclass instance whose annotations are strings (``from __future__ import annotations``).
        prefix: the config key of ``obj`` (``loss``, ``model.lora``, ...), for the message.
        error: the exception class to raise.

    Returns:
        ``obj`` (checked, float fields converted).

    Raises:
        ConfigError (or ``error``): ``<prefix>.<field>=<value> must be <type>``.
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name.rstrip('_')}"
        if dataclasses.is_dataclass(value):
            check_types(value, key, error)
            continue
        kinds = [_kind(a) for a in str(f.type).split("|")]
        if isinstance(value, (list, tuple)) and "list[str]" in str(f.type).replace(" ", ""):
            if not value or not all(isinstance(v, str) and v for v in value):
                raise error(f"{key}={value!r} must be a non-empty list of names")
            continue
        known = [k for k in kinds if k in _CHECKS]
        if len(known) < len(kinds) or any(_CHECKS[k](value) for k in known):
            if "float" in known and "int" not in known and _CHECKS["float"](value):
                setattr(obj, f.name, float(value))
            continue
        wanted = " or ".join(_WORDS.get(k, k) for k in kinds)
        raise error(f"{key}={value!r} must be {wanted}")
    return obj


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Refuse ``value`` outside ``[low, high]`` (``(`` / ``)`` when open), naming ``key``.

    Raises:
        ConfigError: ``<key> must be ... , got <value>``.
    """
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        raise ConfigError(f"{key} must be {' and '.join(x for x in (lo, hi) if x)}, got {value}")


def check_required(cfg: Any) -> None:
    """Refuse a required value left unset (``???`` in the config or on the command line).

    Raises:
        ConfigError: names the first such key.
    """
    from omegaconf import OmegaConf

    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(f"{missing[0]} is required (its value is ???): set {missing[0]}=...")
