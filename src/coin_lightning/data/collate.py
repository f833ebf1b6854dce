"""Tokenization, input-side truncation, label masking and left padding into the training batch.

Produces exactly the batch of ``docs/CONTRACTS.md``: ``input_ids``, ``attention_mask``, ``labels``
(Long ``[R, T]``), ``response_start`` (Long ``[R]``) and ``num_pairs`` (int ``P``); rows ``[0, P)``
are the originals, ``[P, 2P)`` their paraphrases in the same order and, for
``data.group=hard_negative_column``, ``[2P, 3P)`` the hard negatives (labels all ``-100``).

A row is ``build_prompt(input, fmt, tokenizer)`` followed by the target and, with ``append_eos``
(``data.append_eos``, default true), the tokenizer's EOS token: the model learns to stop, and the
pooled (last non-padding) token of the contrastive loss is EOS. The CoIN reference
(luka-group/CoIN ``run_contrastive_llama.py``) appends none, so its pooled token is the last token
of the answer; ``data.append_eos=false`` reproduces that. Prompt and response are tokenized separately (the response exactly as generation would
produce it after the prompt), so the label mask falls exactly on the response: the reference code
(luka-group/CoIN ``run_contrastive_llama.py``, ``generate_and_tokenize_prompt``) masks by the token
length of the prompt tokenized alone, which can be off by one at the boundary.

Truncation to ``cutoff_len`` (paper: 256) follows ``data.truncation``. ``input`` (the default) never
touches the response: the input is shortened instead, first by cutting the longest content field of the template and re-rendering (instruction
wording, options and the response marker stay whole), then, if that is not enough or the row is
pre-rendered, by cutting tokens from the middle of the prompt. A response longer than
``cutoff_len - min_prompt_tokens`` is kept whole with a ``min_prompt_tokens`` prompt tail; the row then
exceeds ``cutoff_len`` and is counted in ``response_over_cutoff``. ``sequence`` is the reference's rule
(luka-group/CoIN ``run_contrastive_llama.py`` L261-266, ``tokenizer(..., truncation=True,
max_length=cutoff_len)``): the whole prompt + response row is cut on the right to ``cutoff_len`` tokens,
so a long input loses its response (no CE on that row, and the pooled last token is an input token);
such rows are counted in ``response_cut``. EOS is then appended only if the row is shorter than
``cutoff_len``, as in the reference (L271-276).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from coin_lightning.data.records import DataError, Example, Group, build_prompt
from coin_lightning.data.templates import DERIVED_FIELDS, placeholder_names

IGNORE_INDEX = -100
"""Label of positions without language-model loss (``torch.nn.CrossEntropyLoss`` default)."""


@dataclass(frozen=True)
class EncodedRow:
    """One tokenized row."""

    ids: np.ndarray
    """Token ids ``[L]`` (int64): prompt then response (target, + EOS with ``append_eos``)."""
    n_prompt: int
    """Number of prompt tokens; the response is ``ids[n_prompt:]``."""


@dataclass(frozen=True)
class EncodedGroup:
    """A tokenized :class:`~coin_lightning.data.records.Group`, in collation order."""

    originals: tuple[EncodedRow, ...]
    """Anchor rows, one per pair."""
    paraphrases: tuple[EncodedRow, ...]
    """Positive rows, same order as ``originals``."""
    negatives: tuple[EncodedRow, ...] = ()
    """Hard-negative rows (``hard_negative_column`` only)."""

    @property
    def rows(self) -> tuple[EncodedRow, ...]:
        """All rows of the group."""
        return self.originals + self.paraphrases + self.negatives

    @property
    def max_len(self) -> int:
        """Longest row in tokens (the group's padded width)."""
        return max(len(r.ids) for r in self.rows)


TRUNCATIONS = ("input", "sequence")
"""Values of ``data.truncation``: ``input`` (shorten the input, keep the response whole) or ``sequence``
(the reference: cut the whole row on the right at ``cutoff_len``)."""


class Encoder:
    """Tokenize examples into :class:`EncodedRow` with the prompt format and truncation rule.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast or slow) with an EOS token.
        prompt_format: ``alpaca`` or ``chat`` (``records.build_prompt``).
        cutoff_len: maximum row length in tokens (paper: 256).
        min_prompt_tokens: prompt tokens kept at least when the response alone is too long.
        append_eos: end every response with the EOS token (reference: no; see the module docstring).
        truncation: ``input`` or ``sequence`` (:data:`TRUNCATIONS`; see the module docstring).

    Attributes:
        truncated: rows shortened so far (their input, or with ``sequence`` the whole row).
        response_over_cutoff: rows whose response alone left less than ``min_prompt_tokens`` (``input``).
        response_cut: rows that lost response tokens to the cut (``sequence``).

    Raises:
        DataError: the tokenizer has no EOS token, or ``cutoff_len`` is too small.
    """

    def __init__(self, tokenizer, prompt_format: str = "alpaca", cutoff_len: int = 256, min_prompt_tokens: int = 8,
                 append_eos: bool = True, truncation: str = "input"):
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no EOS token; the response must end with one")
        if cutoff_len < 2 * min_prompt_tokens:
            raise DataError(f"data.cutoff_len={cutoff_len} is too small (at least {2 * min_prompt_tokens})")
        self.tokenizer, self.prompt_format, self.truncation = tokenizer, prompt_format, truncation
        self.cutoff_len, self.min_prompt_tokens, self.append_eos = cutoff_len, min_prompt_tokens, append_eos
        # the chat template writes its own special tokens; the alpaca prompt gets the tokenizer's (e.g. BOS)
        self.add_special_tokens = prompt_format != "chat"
        self.truncated = self.response_over_cutoff = self.response_cut = 0

    def _tok(self, texts: list[str], special: bool) -> list[list[int]]:
        """Token ids of each text (unique texts tokenized once).

        A fast tokenizer without truncation or padding set is called through its public
        ``backend_tokenizer`` (``tokenizers.Tokenizer.encode_batch``), which gives the ids of
        ``tokenizer(texts)["input_ids"]`` without building a ``BatchEncoding``; any other tokenizer
        is called as usual.
        """
        if not texts:
            return []
        unique = list(dict.fromkeys(texts))
        backend = self.tokenizer.backend_tokenizer if getattr(self.tokenizer, "is_fast", False) else None
        if backend is not None and backend.truncation is None and backend.padding is None:
            ids = [e.ids for e in backend.encode_batch(unique, add_special_tokens=special)]
        else:
            ids = [list(x) for x in self.tokenizer(unique, add_special_tokens=special)["input_ids"]]
        table = dict(zip(unique, ids))
        return [list(table[t]) for t in texts]

    def prompt(self, text: str) -> str:
        """The prompt string of a rendered input (the one function shared with evaluation)."""
        return build_prompt(text, self.prompt_format, self.tokenizer)

    def encode(self, examples: Sequence[Example]) -> list[EncodedRow]:
        """Tokenize examples (batched), truncating the input side of rows over ``cutoff_len``.

        Returns:
            One :class:`EncodedRow` per example, ``len(ids) <= cutoff_len`` except rows counted in
            :attr:`response_over_cutoff`.
        """
        prompts = self._tok([self.prompt(e.input) for e in examples], self.add_special_tokens)
        end = [self.tokenizer.eos_token_id] if self.append_eos else []
        responses = [r + end for r in self._tok([e.target for e in examples], False)]
        out = []
        for ex, p, r in zip(examples, prompts, responses):
            if len(p) + len(r) > self.cutoff_len:
                if self.truncation == "sequence":
                    out.append(self._cut_row(p, r[: len(r) - len(end)]))
                    continue
                p = self._shorten(ex, p, r)
            out.append(EncodedRow(np.asarray(p + r, dtype=np.int64), len(p)))
        return out

    def _cut_row(self, p: list[int], r: list[int]) -> EncodedRow:
        """The reference's right cut of a too-long row (no EOS, which only fits below ``cutoff_len``)."""
        self.truncated += 1
        ids = (p + r)[: self.cutoff_len]
        if len(ids) < len(p) + len(r):
            self.response_cut += 1
        return EncodedRow(np.asarray(ids, dtype=np.int64), min(len(p), self.cutoff_len))

    def _shorten(self, ex: Example, p: list[int], r: list[int]) -> list[int]:
        self.truncated += 1
        budget = self.cutoff_len - len(r)
        if budget < self.min_prompt_tokens:
            self.response_over_cutoff += 1
            budget = self.min_prompt_tokens
        if ex.template_input is not None and ex.values is not None:
            p = self._shorten_fields(ex, p, budget)
        if len(p) > budget:  # cut the middle of the prompt: keep its start and its end (response marker)
            head = budget // 4
            p = p[:head] + p[len(p) - (budget - head):]
        return p

    def _shorten_fields(self, ex: Example, p: list[int], budget: int) -> list[int]:
        values = dict(ex.values)
        names = [n for n in placeholder_names(ex.template_input) if n in values and n not in DERIVED_FIELDS]
        field_ids = {n: self._tok([values[n]], False)[0] for n in names}
        for _ in range(8):
            excess = len(p) - budget
            if excess <= 0 or not field_ids:
                break
            name = max(field_ids, key=lambda n: len(field_ids[n]))
            ids = field_ids[name]
            if len(ids) <= 1:
                break
            keep = max(1, len(ids) - excess - 1)
            field_ids[name] = ids[:keep]
            values[name] = self.tokenizer.decode(ids[:keep])
            p = self._tok([self.prompt(ex.template_input.format_map(values))], self.add_special_tokens)[0]
        return p

    def encode_groups(self, groups: Sequence[Group]) -> list[EncodedGroup]:
        """Tokenize whole groups (one batched tokenizer call for all their rows)."""
        rows = iter(self.encode([e for g in groups for e in g.examples]))

        def take(k: int) -> tuple[EncodedRow, ...]:  # the next k rows (examples come in collation order)
            return tuple(islice(rows, k))

        return [EncodedGroup(take(len(g.pairs)), take(len(g.pairs)), take(len(g.negatives))) for g in groups]


def collate(items: Sequence[EncodedGroup], pad_token_id: int) -> dict:
    """Left-pad a list of encoded groups into the CONTRACTS.md training batch.

    Args:
        items: encoded groups (dataset items of one micro-batch).
        pad_token_id: the tokenizer's pad id.

    Returns:
        ``{"input_ids", "attention_mask", "labels"}`` Long ``[R, T]``, ``"response_start"`` Long
        ``[R]`` and ``"num_pairs"`` int ``P`` with ``R = 2P`` (or ``3P`` with negatives): all
        originals, then all paraphrases in the same order, then all negatives.

    Raises:
        DataError: items mixing groups with and without negatives.
    """
    originals = [r for g in items for r in g.originals]
    paraphrases = [r for g in items for r in g.paraphrases]
    negatives = [r for g in items for r in g.negatives]
    if negatives and len(negatives) != len(originals):
        raise DataError("a batch mixes groups with and without hard-negative rows")
    rows = originals + paraphrases + negatives
    ids = [torch.from_numpy(r.ids) for r in rows]
    n_lm = len(originals) + len(paraphrases)  # the negatives have no language-model loss
    labels = [torch.cat((torch.full((r.n_prompt,), IGNORE_INDEX), x[r.n_prompt:])) for r, x in zip(rows[:n_lm], ids)]
    labels += [torch.full_like(x, IGNORE_INDEX) for x in ids[n_lm:]]
    input_ids = _left_pad(ids, int(pad_token_id))
    return {
        "input_ids": input_ids,
        "attention_mask": _left_pad([torch.ones_like(x) for x in ids], 0),
        "labels": _left_pad(labels, IGNORE_INDEX),
        "response_start": input_ids.shape[1] - torch.tensor([len(x) - r.n_prompt for r, x in zip(rows, ids)]),
        "num_pairs": len(originals),
    }


def _left_pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    """Long ``[R, T]``: the rows right-aligned, ``value`` on their left (``T`` the longest row)."""
    return pad_sequence(rows, batch_first=True, padding_value=value, padding_side="left")


class Collator:
    """``DataLoader`` ``collate_fn``: :func:`collate` with a fixed pad id (picklable for workers).

    Raises:
        DataError: the tokenizer has no pad token (set one when loading it).
    """

    def __init__(self, pad_token_id: int | None):
        if pad_token_id is None:
            raise DataError("the tokenizer has no pad token id; batches are left-padded with tokenizer.pad_token_id")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: Sequence[EncodedGroup]) -> dict:
        return collate(items, self.pad_token_id)
