"""Predicting class labels for one instruction over many rows: ``generate`` or ``rank``.

- ``generate``: greedy decoding of ``max_new_tokens`` (7, as the CoIN evaluation's ``generate_len``)
  with ``transformers``' ``model.generate``, parsed with PromptBench's rules
  (:func:`coin_lightning.eval.engine.generation.parse_label`); a row stops early once its parsed label is
  settled (:class:`~coin_lightning.eval.engine.generation.AnswerDecided`), so ``answer`` may be shorter
  than ``max_new_tokens`` while ``pred`` is the same.
- ``rank``: the label word whose tokens have the highest summed log-likelihood after the prompt wins
  (always parseable). Scoring the word's tokens only (no end-of-sequence) measures "the answer starts
  with this word", the event ``generate`` counts as that label.

Rows of one instruction are batched together (longest first, to limit padding) and, with
``prefix_cache``, share the key/value cache of their common token prefix (see
:mod:`coin_lightning.eval.engine.decode`). Both paths tokenize the whole prompt the same way, so the cached
path differs from the uncached one only by floating-point rounding.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from coin_lightning.eval.engine.decode import (
    Prefilled,
    encode_prefix,
    label_log_likelihoods,
    pad_rows,
    prefill,
    shared_prefix_length,
)
from coin_lightning.eval.engine.generation import generate_after, parse_label
from coin_lightning.eval.engine.tasks import eval_prompt
from coin_lightning.losses import pool_hidden


@dataclass
class Prediction:
    """The model's answer to one row under one instruction."""

    answer: str
    """``generate``: the decoded new tokens; ``rank``: the winning label word."""
    pred: int
    """Predicted label id, ``-1`` when the answer starts with no label word."""
    scores: list[float] | None = None
    """``rank``: summed log-likelihood (nats) of each label word, by label id; else ``None``."""


class Predictor:
    """Batched label prediction with a causal LM (base model or peft-wrapped).

    Args:
        model: a ``transformers`` causal LM; put in ``eval()`` mode here.
        tokenizer: its tokenizer (a pad token is needed; EOS is used when there is none).
        prompt_format: ``alpaca`` or ``chat`` (:func:`~coin_lightning.data.records.build_prompt`).
        method: ``generate`` or ``rank``.
        batch_size: rows per forward pass.
        max_new_tokens: generation length for ``generate``.
        prefix_cache: reuse the key/value cache of the prompt prefix shared by all rows.
        decode_batch_size: ``generate`` runs ``model.generate`` on up to this many rows together
            (whole prefill batches, their caches stacked with
            :func:`~coin_lightning.eval.engine.generation.stacked_cache`): decoding steps cost about the same for
            16 or 64 rows on a CPU, prefilling does not. ``None`` or a value below ``batch_size``: each
            prefill batch generates alone.
        prompt_layout: ``training`` or ``reference`` (:func:`~coin_lightning.eval.engine.tasks.eval_prompt`).

    ``method``, ``batch_size`` and ``max_new_tokens`` are checked where they enter (:class:`~coin_lightning.eval.settings.EvalSettings`).
    """

    def __init__(self, model, tokenizer, prompt_format: str = "alpaca", method: str = "generate",
                 batch_size: int = 16, max_new_tokens: int = 7, prefix_cache: bool = True,
                 decode_batch_size: int | None = 64, prompt_layout: str = "training"):
        self.decode_batch_size = max(batch_size, decode_batch_size or 0)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.prompt_layout = prompt_layout
        self.method = method
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prefix_cache = prefix_cache
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)
        # end-of-sequence ids: the tokenizer's EOS and the model's generation_config.eos_token_id
        generation_config = getattr(model, "generation_config", None)
        eos = generation_config.eos_token_id if generation_config is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.stop_ids = sorted({int(i) for i in [tokenizer.eos_token_id, *eos] if i is not None})

    def prompt(self, instruction: str, content: str) -> str:
        """The full prompt text for one row."""
        return eval_prompt(instruction, content, self.prompt_layout, self.prompt_format, self.tokenizer)

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of whole prompts (the chat format already carries its special tokens)."""
        special = self.prompt_format != "chat" or self.prompt_layout != "training"
        return [list(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=special)["input_ids"]]

    def word_ids(self, word: str) -> list[int]:
        """Token ids of a label word as it follows the prompt (no special tokens)."""
        return list(self.tokenizer(word, add_special_tokens=False)["input_ids"])

    def _my_batches(self, sequences: list[list[int]], shard: tuple[int, int]) -> list[list[int]]:
        """Row indices of this ``shard``'s batches: batches of ``batch_size`` rows, longest first."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)][shard[0]::shard[1]]

    def batches(self, sequences: list[list[int]], hidden: bool = False, shard: tuple[int, int] = (0, 1)):
        """Yield ``(row indices, Prefilled)`` for the token lists of one instruction's rows (each prefilled as
        it is), longest first.

        ``shard=(r, W)`` keeps the batches ``r, r + W, ...`` of that order (one process of ``W`` that
        share the rows, :class:`~coin_lightning.eval.engine.distributed.ShardedPredictor`); the batches and the
        shared prefix are those of all rows, so the shards together compute what one process does.
        """
        mine = self._my_batches(sequences, shard)
        if not mine:
            return
        prefix = None
        if self.prefix_cache and len(sequences) > 1:
            prefix = encode_prefix(self.model, sequences[0][: shared_prefix_length(sequences)])
        cut = len(prefix.ids) if prefix is not None else 0
        for rows in mine:
            yield rows, prefill(self.model, [sequences[i][cut:] for i in rows], self.pad_id, prefix, hidden=hidden)

    def predict(self, instruction: str, contents: Sequence[str], label_words: Sequence[str],
                shard: tuple[int, int] = (0, 1)) -> list[Prediction]:
        """Predict a label for every content string under ``instruction``.

        Args:
            instruction: the (possibly perturbed) instruction text.
            contents: ``N`` content strings (:mod:`coin_lightning.eval.engine.tasks`).
            label_words: the task's label words by label id.
            shard: ``(rank, world size)``: predict only this process's batches (:meth:`batches`).

        Returns:
            ``N`` predictions in the order of ``contents`` (``None`` for rows of other shards).
        """
        if not contents:
            return []
        results: list[Prediction | None] = [None] * len(contents)
        sequences = self.encode([self.prompt(instruction, c) for c in contents])
        if self.method == "rank":
            candidates = [self.word_ids(w) for w in label_words]
            for rows, state in self.batches(sequences, shard=shard):
                scores = label_log_likelihoods(self.model, state, candidates, self.pad_id)
                for j, i in enumerate(rows):
                    best = int(torch.argmax(scores[j]))
                    results[i] = Prediction(answer=label_words[best], pred=best, scores=scores[j].tolist())
            return results  # type: ignore[return-value]
        # generate: prefill each prompt but its last token, which model.generate runs before decoding
        if min(len(s) for s in sequences) < 2:
            raise ValueError("Predictor.generate: a prompt of fewer than 2 tokens (check the prompt format)")
        pending: list[tuple[list[int], Prefilled]] = []

        def decode_pending() -> None:
            rows = [i for r, _ in pending for i in r]
            new = generate_after(self.model, [st for _, st in pending], [sequences[i] for i in rows],
                                 self.max_new_tokens, self.stop_ids, self.pad_id, self.tokenizer, label_words)
            for j, i in enumerate(rows):
                text = self.tokenizer.decode(new[j], skip_special_tokens=True)
                results[i] = Prediction(answer=text, pred=parse_label(text, label_words))
            pending.clear()

        for rows, state in self.batches([s[:-1] for s in sequences], shard=shard):
            pending.append((rows, state))
            if sum(len(r) for r, _ in pending) + self.batch_size > self.decode_batch_size:
                decode_pending()
        if pending:
            decode_pending()
        return results  # type: ignore[return-value]

    def hidden_rows(self, instruction: str, contents: Sequence[str], shard: tuple[int, int] = (0, 1),
                    responses: Sequence[str] | None = None, pooling: str = "last_prompt", eos: bool = False):
        """Yield ``(row indices, Float [B, H] on CPU)`` batch by batch (only this ``shard``'s batches, see
        :meth:`batches`): final-layer hidden states pooled as training pools them (``loss.pooling``).

        Without ``responses``: the state at each prompt's last token (``last_prompt`` pooling, through the
        prefix cache). With ``responses`` (one answer word per row): the states of the prompt followed by its
        answer (and EOS with ``eos``, ``data.append_eos``), pooled with
        :func:`coin_lightning.losses.pool_hidden` (``pooling``; the response starts after the prompt).

        Raises:
            ValueError: an unknown ``pooling``.
        """
        prompts = self.encode([self.prompt(instruction, c) for c in contents])
        if responses is None:
            for rows, state in self.batches(prompts, hidden=True, shard=shard):
                yield rows, state.last_hidden.cpu()
            return
        end = [self.tokenizer.eos_token_id] if eos else []
        sequences = [p + self.word_ids(r) + end for p, r in zip(prompts, responses)]
        device = next(self.model.parameters()).device
        for rows in self._my_batches(sequences, shard):
            # right padding: the default positions are the real ones
            ids, mask = pad_rows([sequences[i] for i in rows], self.pad_id, device, "right")
            with torch.inference_mode():
                out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                                 logits_to_keep=1)
            starts = torch.tensor([len(prompts[i]) for i in rows], device=device)
            yield rows, pool_hidden(out.hidden_states[-1], mask, pooling, starts).float().cpu()

    def last_hidden(self, instruction: str, contents: Sequence[str], responses: Sequence[str] | None = None,
                    pooling: str = "last_prompt", eos: bool = False) -> torch.Tensor:
        """Float ``[N, H]`` in ``contents`` order: :meth:`hidden_rows` of all rows (by default the final-layer
        state at each prompt's last token)."""
        return assemble(self.hidden_rows(instruction, contents, responses=responses, pooling=pooling, eos=eos),
                        len(contents))


def assemble(pieces, n: int) -> torch.Tensor:
    """Rows ``(row indices, Float [B, H])`` put in order: Float ``[n, H]`` (``[0, 0]`` when there are none)."""
    out: torch.Tensor | None = None
    for rows, states in pieces:
        if out is None:
            out = torch.empty((n, states.shape[-1]))
        out[rows] = states
    return out if out is not None else torch.empty((0, 0))
