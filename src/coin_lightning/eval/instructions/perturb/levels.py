"""The perturbation levels and the registry of perturbation operators (PromptBench's taxonomy, CoIN Table 1).

The one place for these facts: every operator module declares its :class:`Perturbation` (its level,
strength knobs and adversarial search space) with :func:`register`, and instruction files, generated
sets, the ``eval.perturb`` schema, metrics and reports read :func:`level_of` and :func:`generated` (or
a configured replacement, ``eval.perturb.levels``). ``docs/EXTENDING.md`` shows how to add one.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LEVELS: tuple[str, ...] = ("clean", "character", "word", "sentence", "semantic")
"""Perturbation levels, from none to meaning-preserving rewrites."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation operator, as the framework uses it."""

    name: str
    """Its name in configs, instruction files and reports (e.g. ``deepwordbug``)."""
    level: str
    """Its level, one of :data:`LEVELS`."""
    operator: Callable[..., str]
    """``(text, rng, protected, **strength) -> str``: a pure function of its arguments (``rng`` a
    ``random.Random``), never editing a ``protected`` word, quoted spans or ``{...}`` placeholders."""
    group: str
    """The ``eval.perturb`` group holding its strength knobs (``character``, ``word`` or ``sentence``)."""
    knobs: tuple[str, ...]
    """The fields of ``group`` passed to ``operator`` as keyword arguments."""
    neighbours: Callable[..., Callable[[str], list[str]]]
    """``(clean, rng, protected, cfg) -> candidates``: the adversarial search space
    (:func:`coin_lightning.eval.instructions.perturb.neighbour_fn`)."""


PERTURBATIONS: dict[str, Perturbation] = {}
"""Registered perturbations by name."""


def register(perturbation: Perturbation) -> Perturbation:
    """Add ``perturbation`` to :data:`PERTURBATIONS` (replacing one of the same name) and return it.

    Raises:
        ValueError: its level is not one of :data:`LEVELS`, or its name is ``clean`` or ``semantic``.
    """
    if perturbation.level not in LEVELS or perturbation.name in ("clean", "semantic"):
        raise ValueError(f"perturbation {perturbation.name!r}: level must be one of {', '.join(LEVELS)} "
                         "and the name not clean or semantic")
    PERTURBATIONS[perturbation.name] = perturbation
    return perturbation


def generated() -> tuple[str, ...]:
    """Perturbations produced by operators from the clean instructions (``semantic`` is written by hand), by
    level (:data:`LEVELS`' order), then in registration order: the default ``eval.perturb.perturbations``."""
    return tuple(sorted(PERTURBATIONS, key=lambda n: LEVELS.index(PERTURBATIONS[n].level)))


def level_of() -> dict[str, str]:
    """Default perturbation name -> level: ``clean``, every registered operator, ``semantic``
    (Zhu et al. 2023, PromptBench; the CoIN paper's Section 4)."""
    return {"clean": "clean", **{n: PERTURBATIONS[n].level for n in generated()}, "semantic": "semantic"}


def check_level_map(level_map: dict[str, str], where: str = "eval.perturb.levels",
                    error: type[Exception] = ValueError) -> dict[str, str]:
    """Validate a perturbation -> level mapping and return it as a plain dict.

    Raises:
        ValueError (or ``error``): a value is not one of :data:`LEVELS` (message names ``where`` and the key).
    """
    out = {}
    for name, level in dict(level_map).items():
        if level not in LEVELS:
            raise error(f"{where}.{name}: unknown level {level!r}; levels are {', '.join(LEVELS)}")
        out[str(name)] = str(level)
    return out


def lookup(name: str) -> Perturbation:
    """The registered perturbation ``name``.

    Raises:
        ValueError: no perturbation of that name is registered (the message lists those that are).
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"no operator for perturbation {name!r}; operators: {', '.join(generated())}")
    return PERTURBATIONS[name]
