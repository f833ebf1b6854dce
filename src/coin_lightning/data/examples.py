"""Rendered rows of a contrastive group: :class:`Example`, :class:`Pair` and :class:`Group`.

A group is one dataset item (CoIN, Yan et al. 2024, Section 3.2): anchor pair(s) of a record under two
paraphrasing templates plus their hard negatives, built by :mod:`coin_lightning.data.grouping` and
tokenized by :mod:`coin_lightning.data.collate`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One rendered row: a record under a template, before the prompt format and tokenization."""

    task: str
    """Task name of the record."""
    uid: str
    """Record uid; the positive of an example has the same uid, its hard negative another."""
    template: str
    """Template name (``"own:rte/3"``, ``"flan:rte/0"``, ``"csv:original"``)."""
    input: str
    """Rendered input (instruction with content); wrapped by ``prompts.build_prompt`` at collation."""
    target: str
    """Rendered target (the response, without EOS)."""
    template_input: str | None = field(default=None, compare=False, repr=False)
    """The template's input string, so collation can re-render with shortened fields; ``None`` for
    pre-rendered rows (CoIN CSV)."""
    values: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    """Placeholder values used to render ``input``."""


@dataclass(frozen=True)
class Pair:
    """An original and its positive: the same record under two paraphrasing templates."""

    original: Example
    """Record ``r`` under template ``A`` (the anchor)."""
    paraphrase: Example
    """Record ``r`` under template ``B != A`` with the same target template."""


@dataclass(frozen=True)
class Group:
    """One dataset item: anchor pair(s) and their hard negatives, never split across batches or ranks."""

    pairs: tuple[Pair, ...]
    """``pair_of_pairs``: (anchor pair, hard-negative pair); ``hard_negative_column``: (anchor pair,)."""
    negatives: tuple[Example, ...] = ()
    """``hard_negative_column``: the hard negative of each pair (``r'`` under ``A``); else empty."""

    @property
    def examples(self) -> tuple[Example, ...]:
        """All rows in collation order: originals, paraphrases, negatives."""
        return tuple(p.original for p in self.pairs) + tuple(p.paraphrase for p in self.pairs) + self.negatives
