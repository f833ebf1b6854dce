"""Typed config nodes: the dataclasses of ``model``, ``loss``, ``eval`` and ``eval.perturb`` as
OmegaConf structured configs, plus range and required-value checks, each refused in one line naming its key.

Each group's dataclass is registered in Hydra's ConfigStore as the schema its YAML files start from
(:mod:`coin_lightning.conf`), so Hydra refuses an unknown key or a value of the wrong type while it
composes the config. :func:`build` makes the dataclass from a composed node or a plain mapping
through the same OmegaConf merge; the dataclass's ``__post_init__`` then checks what types cannot
express (ranges, names from a set).
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import omegaconf
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from coin_lightning.errors import MESSAGE_HOOKS, ConfigError

T = TypeVar("T")

_NODES = {"float": "FloatNode", "int": "IntegerNode", "bool": "BooleanNode", "str": "StringNode"}


def omegaconf_message(exc: Exception, prefix: str = "") -> str:
    """One line for an OmegaConf error, named by its full key (``prefix.`` before it when given).

    An unknown key (``ConfigKeyError``) lists the keys its dataclass has; a value of the wrong type
    (``ValidationError``) gives OmegaConf's first line; a required value left unset says how to set it.
    """
    full = str(getattr(exc, "full_key", "") or "").replace("lambda_", "lambda")
    key = ".".join(k for k in (prefix, full) if k) or "a config key"
    if isinstance(exc, MissingMandatoryValue):
        return f"{key} is required (its value is ???): set {key}=..."
    msg = str(getattr(exc, "msg", None) or exc).strip().splitlines()
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)) and "not in" in (msg[0] if msg else ""):
        schema = getattr(exc, "object_type", None)
        known = f"; known: {', '.join(f.name.rstrip('_') for f in dataclasses.fields(schema))}" if (
            dataclasses.is_dataclass(schema)) else ""
        return f"{key}: unknown key{known}"
    return f"{key}: {msg[0] if msg else type(exc).__name__}"


def config_error_message(exc: BaseException) -> str | None:
    """The one-line message of an OmegaConf error, or of a Hydra composition error it caused (an override
    of an unknown key, a bad type); ``None`` for anything else. Added to :data:`coin_lightning.errors.MESSAGE_HOOKS`."""
    if isinstance(exc, OmegaConfBaseException):
        return omegaconf_message(exc)
    if (isinstance(exc, HydraException) and not isinstance(exc, (InstantiationException, MissingConfigException))
            and isinstance(exc.__cause__, OmegaConfBaseException)):
        append = next((line.split(" use ", 1)[1] for line in str(exc).splitlines() if line.startswith("To append")), None)
        typed = dataclasses.is_dataclass(getattr(exc.__cause__, "object_type", None))  # a schema refuses + too
        hint = f"; a key that is not in the config file (e.g. any lightning.Trainer argument) is added with +: {append}" if (
            append and not typed) else ""
        return omegaconf_message(exc.__cause__) + hint
    return None


MESSAGE_HOOKS.append(config_error_message)


def plain(value: Any) -> Any:
    """``value`` as plain Python containers (interpolations resolved) when it is a config node, else as is."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def config_key(name: str) -> str:
    """The config key of a dataclass field: ``lambda_`` (a Python keyword) is ``lambda`` in YAML."""
    return name.rstrip("_")


def build(cls: type[T], node: Any, key: str, error: type[Exception] = ConfigError) -> T:
    """The dataclass ``cls`` from a config node (DictConfig, mapping, ``None`` = defaults, or a ``cls``).

    The node is merged into ``OmegaConf.structured(cls)``: an unknown key or a value that does not
    convert to its field's type is refused by OmegaConf; then the constructor (``__post_init__``)
    checks the values. Config keys equal field names but for :func:`config_key`.

    Args:
        key: the node's config key (``model``, ``evaluation.eval``, ...), prefixed to messages.
        error: the exception class raised for OmegaConf's refusals.

    Raises:
        ``error``: ``<key>.<field>: unknown key; known: ...`` or ``<key>.<field>: <what is wrong>``.
        ConfigError: a required value left ``???``, or the dataclass's own value checks.
    """
    if isinstance(node, cls):
        return node
    fields = {config_key(f.name): f.name for f in dataclasses.fields(cls)}
    node = {fields.get(name, name): v for name, v in (plain(node) or {}).items()}
    missing = sorted(OmegaConf.missing_keys(OmegaConf.create(node)))  # a merge would keep the default instead
    if missing:
        raise ConfigError(f"{key}.{config_key(missing[0])} is required (its value is ???): set {key}.{config_key(missing[0])}=...")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))
    except OmegaConfBaseException as exc:
        raise error(omegaconf_message(exc, key)) from None


def schema_node(cls: type) -> Any:
    """A typed struct DictConfig with the fields of the flat dataclass ``cls`` under their config keys.

    For a dataclass whose config keys are not all field names (``loss.lambda``): OmegaConf builds
    structured configs from field names, so the schema is made of typed value nodes instead; Hydra
    refuses unknown keys (struct) and values that do not convert (``FloatNode``, ...) as for a dataclass.
    """
    content = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        node_type = getattr(omegaconf, _NODES.get(str(f.type), "AnyNode"))
        content[config_key(f.name)] = node_type(default)
    return OmegaConf.create(content, flags={"struct": True})


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


def check_choice(key: str, value: Any, choices: Any, error: type[Exception] = ConfigError) -> None:
    """Refuse ``value`` not in ``choices``, naming ``key``.

    Raises:
        ConfigError (or ``error``): ``<key>=<value> is not one of ...``.
    """
    if value not in choices:
        raise error(f"{key}={value!r} is not one of {', '.join('null' if c is None else str(c) for c in choices)}")


def check_required(cfg: Any) -> None:
    """Refuse a required value left unset (``???`` in the config or on the command line).

    Raises:
        ConfigError: names the first such key.
    """
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(f"{missing[0]} is required (its value is ???): set {missing[0]}=...")
