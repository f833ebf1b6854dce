"""The units of the data: the :class:`Record` every data source yields, before any template is applied,
and the rendered rows of a contrastive group, :class:`Example`, :class:`Pair` and :class:`Group`.

A group is one dataset item (CoIN, Yan et al. 2024, Section 3.2): anchor pair(s) of a record under two
paraphrasing templates plus their hard negatives, built by :mod:`coin_lightning.data.grouping` and
tokenized by :mod:`coin_lightning.data.collate`.

Prompt formats: :func:`build_prompt` is the one function that turns an instruction (with its content)
into model input. Training and evaluation both call it, so a model is always evaluated with the exact
wrapping it was trained with.

- ``alpaca``: ``"{input}\\n\\n### Response:\\n"`` followed by the target, the prompt of the CoIN
  reference code (luka-group/CoIN, itself from alpaca-lora without the preamble).
- ``chat``: the tokenizer's chat template with one user turn and the generation prompt.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coin_lightning.errors import UserError

PROMPT_FORMATS = ("alpaca", "chat")
ALPACA_RESPONSE_MARKER = "\n\n### Response:\n"


def build_prompt(text: str, fmt: str = "alpaca", tokenizer=None) -> str:
    """Wrap a rendered instruction input (instruction + content) into the model's prompt.

    Args:
        text: the rendered input, e.g. a template filled with a record's fields.
        fmt: ``"alpaca"`` or ``"chat"``.
        tokenizer: needed for ``chat`` (its ``apply_chat_template``).

    Returns:
        The prompt string; the response (target) is appended to it verbatim.

    Raises:
        ValueError: unknown format, or ``chat`` without a tokenizer that has a chat template.
    """
    if fmt == "alpaca":
        return f"{text}{ALPACA_RESPONSE_MARKER}"
    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt format 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")


class DataError(UserError, ValueError):
    """Bad input data. The message names the file, row or key at fault."""


def skip_or_raise(error: DataError, on_error: str, stats: dict | None, rows: int = 1) -> None:
    """A bad row under ``data.on_error``: ``raise`` raises ``error``; ``skip`` adds ``rows`` to
    ``stats["skipped"]`` (when ``stats`` is given) and returns."""
    if on_error != "skip":
        raise error from None
    if stats is not None:
        stats["skipped"] = stats.get("skipped", 0) + rows


@dataclass(frozen=True)
class Record:
    """One instance of one task, with its raw fields, independent of any instruction wording.

    All sources (``glue``, ``flan``, ``coin_csv``, ``embedded``) yield these, so grouping into
    triples and evaluation never depend on where the data came from.
    """

    task: str
    """Task name, e.g. ``"rte"`` or ``"embedded_parity"``; the key into the template bank."""
    fields: dict[str, Any]
    """Template fields, e.g. ``{"sentence1": ..., "sentence2": ...}``; rendered with ``str.format``."""
    label: int | None = None
    """Class id for classification tasks (the dataset's own id, e.g. GLUE's), else ``None``."""
    target: str | None = None
    """Answer text for generation tasks, or a pre-rendered answer; ``None`` when ``label`` decides it."""
    uid: str = ""
    """Stable identifier (``"<task>/<split>/<idx>"``); validation splits and comparisons key on it."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (source file, row number, ...)."""


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
    """Rendered input (instruction with content); wrapped by :func:`build_prompt` at collation."""
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
