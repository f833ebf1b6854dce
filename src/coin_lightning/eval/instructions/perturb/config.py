"""The ``eval.perturb`` config node as typed dataclasses (``conf/eval/perturb/default.yaml``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from coin_lightning.eval.instructions.perturb.levels import GENERATED, LEVEL_OF, check_level_map
from coin_lightning.eval.instructions.perturb.word import DEFAULT_WORDNET_DIR


@dataclass(frozen=True)
class CharacterConfig:
    """Strength of DeepWordBug / TextBugger."""

    max_words: int = 2
    """Words edited per instruction."""
    edits_per_word: int = 1
    """Character operations applied to each edited word."""
    variants_per_word: int = 3
    """Adversarial mode: random edits of each word offered to the greedy search per step."""


@dataclass(frozen=True)
class WordConfig:
    """Strength of TextFooler / BertAttack."""

    max_words: int = 2
    """Words replaced per instruction."""
    candidates: int = 10
    """Replacement candidates kept per word (WordNet synonyms or related words); generation draws one,
    the adversarial search tries all."""
    wordnet_dir: str = DEFAULT_WORDNET_DIR
    """WordNet 3.0 database directory (Debian package ``wordnet-base``)."""


@dataclass(frozen=True)
class SentenceConfig:
    """Strength of CheckList / StressTest."""

    suffix_count: int = 1
    """Suffixes (random strings or tautologies) appended per instruction."""
    suffix_len: int = 10
    """Characters in a CheckList suffix (PromptBench: 10)."""


@dataclass(frozen=True)
class AdversarialConfig:
    """Greedy adversarial search (``eval.perturb_mode=adversarial``); the budget is ``eval.query_budget``."""

    candidates_per_step: int = 24
    """Candidate edits scored per greedy step at most (a seeded sample when there are more)."""
    probe_size: int = 32
    """Rows per task on which the runner scores a candidate instruction (accuracy)."""


@dataclass(frozen=True)
class PerturbConfig:
    """All perturbation settings; build it from the Hydra node with :meth:`from_cfg`."""

    seed: int = 0
    """Seeds every generated perturbation; the same seed gives the same instruction set."""
    perturbations: tuple[str, ...] = GENERATED
    """Perturbations generated (or attacked) from the clean instructions."""
    levels: Mapping[str, str] = field(default_factory=lambda: dict(LEVEL_OF))
    """Perturbation name -> level; names absent here are unknown in instruction files."""
    character: CharacterConfig = CharacterConfig()
    """DeepWordBug / TextBugger strength."""
    word: WordConfig = WordConfig()
    """TextFooler / BertAttack strength and synonym source."""
    sentence: SentenceConfig = SentenceConfig()
    """CheckList / StressTest strength."""
    adversarial: AdversarialConfig = AdversarialConfig()
    """Greedy search settings."""

    @classmethod
    def from_cfg(cls, node: Any = None, where: str = "eval.perturb") -> "PerturbConfig":
        """Build from a Hydra/OmegaConf node, a plain mapping, a ``PerturbConfig`` or ``None`` (defaults).

        Raises:
            ValueError: unknown key, negative or non-integer strength, unknown perturbation or level
                (message names the key, e.g. ``eval.perturb.character.max_words``).
        """
        if node is None:
            return cls()
        if isinstance(node, cls):
            return node
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(node, DictConfig):
                node = OmegaConf.to_container(node, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        if not isinstance(node, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(node).__name__}")
        values = _fields(cls, node, where)
        levels = check_level_map(values.get("levels", LEVEL_OF), f"{where}.levels")
        perts = tuple(values.get("perturbations", GENERATED))
        for name in perts:
            if name not in GENERATED:
                raise ValueError(f"{where}.perturbations: {name!r} cannot be generated; choose from {', '.join(GENERATED)}")
            if name not in levels:
                raise ValueError(f"{where}.perturbations: {name!r} has no level in {where}.levels")
        sub = {
            key: _build(typ, values.get(key, {}), f"{where}.{key}")
            for key, typ in (("character", CharacterConfig), ("word", WordConfig), ("sentence", SentenceConfig),
                             ("adversarial", AdversarialConfig))
        }
        seed = values.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{where}.seed: expected an integer, got {seed!r}")
        return cls(seed=seed, perturbations=perts, levels=levels, **sub)

    def strength(self, perturbation: str) -> dict[str, Any]:
        """Keyword arguments of the operator for ``perturbation`` (see ``perturb.OPERATORS``)."""
        if perturbation in ("deepwordbug", "textbugger"):
            return {"max_words": self.character.max_words, "edits_per_word": self.character.edits_per_word}
        if perturbation in ("textfooler", "bertattack"):
            return {"max_words": self.word.max_words, "candidates": self.word.candidates,
                    "wordnet_dir": self.word.wordnet_dir}
        if perturbation == "checklist":
            return {"suffix_count": self.sentence.suffix_count, "suffix_len": self.sentence.suffix_len}
        if perturbation == "stresstest":
            return {"suffix_count": self.sentence.suffix_count}
        raise ValueError(f"no operator for perturbation {perturbation!r}; operators: {', '.join(GENERATED)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for run metadata and cache keys)."""
        out = dataclasses.asdict(self)
        out["perturbations"] = list(self.perturbations)
        out["levels"] = dict(self.levels)
        return out


def _fields(cls, node: Mapping, where: str) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in node:
        if key not in known:
            raise ValueError(f"{where}.{key}: unknown key; known: {', '.join(sorted(known))}")
    return dict(node)


def _build(cls, node: Any, where: str):
    if node is None:
        node = {}
    if not isinstance(node, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {node!r}")
    values = _fields(cls, node, where)
    for f in dataclasses.fields(cls):
        if f.name in values and f.type in ("int", int):
            v = values[f.name]
            minimum = 1 if f.name in ("suffix_len", "candidates", "variants_per_word", "candidates_per_step",
                                      "probe_size") else 0
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"{where}.{f.name}: expected an integer >= {minimum}, got {v!r}")
        if f.name == "wordnet_dir" and f.name in values:
            values[f.name] = str(values[f.name])
    return cls(**values)
