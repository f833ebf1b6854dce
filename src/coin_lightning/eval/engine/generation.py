"""Greedy generation, and reading class labels from its answers.

Generation runs through ``transformers``' ``model.generate``, continuing from prefilled batches.

:class:`~coin_lightning.eval.engine.predict.Predictor` prefills prompts in length-sorted batches
(:func:`coin_lightning.eval.engine.decode.prefill`: packed rows, after the cached shared prefix) up to
each prompt's last token. :func:`stacked_cache` stacks several such batches into one key/value cache
(a ``transformers`` ``DynamicCache``), and :func:`generate_after` hands it to ``model.generate``
with the prompts' ids and attention mask: ``generate`` runs the last prompt tokens and the greedy
steps, with its own stopping on end-of-sequence ids and padding of finished rows. Given the task's
label words, :class:`AnswerDecided` also stops each row once its parsed label can no longer change
(:func:`answer_decided`), so a model that never emits EOS does not
decode all ``max_new_tokens`` steps for an answer its first word already decides.

Reading a class label from the answer (:func:`parse_label`) follows PromptBench's rules: PromptBench
(Zhu et al. 2023) and the CoIN evaluation (luka-group/CoIN, ``promptbench/inference.py``, ``_process_cls_pred``)
lower-case the generated text, drop ``<pad>`` / ``</s>``, strip punctuation and
white space from both ends, and take the label word the answer *starts with*; any other answer counts
as wrong. The strip set below is theirs.

Shapes: ``B`` rows, ``W`` cached positions (the widest prefilled batch: prefix, padding and row).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from coin_lightning.eval.engine.decode import Prefilled

STRIP_CHARS = ",._\"'-+=!?()&^%$#@:\\|{}[]<>/`\n\t\r\v\f\u200b "
"""Characters removed from both ends of an answer (PromptBench's set, plus the zero-width space)."""

DROPPED_TOKENS = ("<pad>", "</s>")
"""Special-token strings deleted from the answer before stripping (PromptBench's)."""

UNPARSEABLE = -1
"""Prediction id of an answer that starts with no label word."""


def normalize_answer(text: str) -> str:
    """Lower-case ``text``, delete :data:`DROPPED_TOKENS` and strip :data:`STRIP_CHARS` from both ends."""
    text = text.lower()
    for token in DROPPED_TOKENS:
        text = text.replace(token, "")
    return text.strip(STRIP_CHARS)


def parse_label(answer: str, label_words: Sequence[str]) -> int:
    """Map a generated answer to the index of the label word it starts with.

    Label words are tried longest first, so the result never depends on their order (PromptBench
    tries them in list order; with its label sets no word is a prefix of another, so both agree).
    ``"not_entailment"`` therefore maps to ``not_entailment`` and ``"unacceptable."`` to
    ``unacceptable``, while ``"it is entailment"`` is unparseable.

    Args:
        answer: the decoded generation (new tokens only).
        label_words: the task's label words by label id, e.g. ``("entailment", "not_entailment")``.

    Returns:
        The label id, or :data:`UNPARSEABLE` (``-1``).
    """
    text = normalize_answer(answer)
    order = sorted(range(len(label_words)), key=lambda i: -len(label_words[i]))
    return next((i for i in order if label_words[i] and text.startswith(label_words[i].lower())), UNPARSEABLE)


def answer_decided(text: str, label_words: Sequence[str]) -> bool:
    """Whether no continuation of a generated answer can change what :func:`parse_label` reads from it.

    The parse takes the longest label word the normalised answer starts with. Appending text changes
    neither the lower-casing nor the left strip of a non-empty answer, so once the stripped answer
    ``u`` is no prefix of any label word longer than itself, the words it can start with are settled:
    ``parse_label(text + more) == parse_label(text)`` for every ``more``. To stay exact, an answer
    holding ``<`` (the start of a dropped ``<pad>`` / ``</s>``) or ending in a half-decoded character
    (U+FFFD), and label words ending in a strip character, are never called decided.

    Args:
        text: the decoded answer so far (new tokens only).
        label_words: the task's label words.

    Returns:
        True when generation can stop without changing the parsed label.
    """
    lowered = text.lower()
    words = [w.lower() for w in label_words if w]
    if "<" in lowered or lowered.endswith("\ufffd") or any(w[-1] in STRIP_CHARS for w in words):
        return False
    u = lowered.lstrip(STRIP_CHARS)
    return bool(u) and not any(len(w) > len(u) and w.startswith(u) for w in words)


class AnswerDecided(StoppingCriteria):
    """A ``transformers`` stopping criterion: a row is done once its answer's parsed label is settled.

    Args:
        tokenizer: decodes the new tokens (``skip_special_tokens=True``, as the parse reads them).
        label_words: the task's label words.
        start: column of the first new token in ``generate``'s ``input_ids``.

    Attributes:
        decided_at: per row, the number of new tokens when its answer was first decided (the later
            tokens are ``generate``'s padding), or ``None``.
    """

    def __init__(self, tokenizer, label_words: Sequence[str], start: int):
        self.tokenizer, self.label_words, self.start = tokenizer, list(label_words), start
        self.decided_at: list[int | None] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        """Bool ``[B]``: the rows whose new tokens ``input_ids[:, start:]`` settle their label
        (:func:`answer_decided`)."""
        rows = input_ids[:, self.start:].tolist()
        done = [answer_decided(self.tokenizer.decode(r, skip_special_tokens=True), self.label_words) for r in rows]
        self.decided_at = [at if at is not None else (len(r) if d else None)
                           for at, d, r in zip(self.decided_at or [None] * len(rows), done, rows)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stacked_cache(states: Sequence[Prefilled]):
    """One key/value cache and attention mask for several prefilled batches, so they generate together.

    Decoding a step costs about the same for 16 rows as for 64 on a CPU (it streams the weights
    through small matmuls), while prefilling many rows at once pads them all to the longest: so
    :class:`~coin_lightning.eval.engine.predict.Predictor` prefills in length-sorted batches and generates
    several of them as one. Each state's key/value cache ``[B_i, kv_heads, W_i, D]`` per layer and its
    attention mask ``[B_i, W_i]`` are left-padded to the widest ``W`` (padding keys are zeros and never
    attended to: the mask is 0 there) and concatenated on the batch dimension, into a ``transformers``
    ``DynamicCache`` (built from the tensors through its constructor).

    Args:
        states: prefilled batches (their caches are read, not changed).

    Returns:
        ``(cache, mask)``: the cache of ``W`` positions and the Long ``[sum B_i, W]`` mask.

    Raises:
        ValueError: no states.
    """
    if not states:
        raise ValueError("stacked_cache needs at least one prefilled batch")
    width = max(int(s.attention_mask.shape[1]) for s in states)

    def stack(tensors):  # [B_i, kv, W_i, D] -> [sum B_i, kv, W, D], zeros on the left
        return torch.cat([torch.nn.functional.pad(t, (0, 0, width - t.shape[-2], 0)) for t in tensors])

    layers = [(stack([s.cache.layers[i].keys for s in states]), stack([s.cache.layers[i].values for s in states]))
              for i in range(len(states[0].cache.layers))]
    mask = torch.cat([torch.nn.functional.pad(s.attention_mask, (width - s.attention_mask.shape[1], 0))
                      for s in states])
    return DynamicCache(ddp_cache_data=layers), mask


def generate_after(model, states: Sequence[Prefilled], prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   stop_ids: Sequence[int], pad_id: int, tokenizer, label_words: Sequence[str]) -> list[list[int]]:
    """Greedy generation with ``model.generate`` from prefilled batches (:func:`stacked_cache`).

    The states hold the ``prompts`` (``B`` whole token lists, in the order of the states' rows) without
    their last token. ``generate`` gets their stacked cache, the attention mask ``[prefix | padding |
    row]`` with a column for the last tokens, and the prompts' ids laid out on that mask; it runs the
    last tokens (positions from the mask: as in one unpadded pass over each prompt) and then greedy
    steps, stopping rows at any of ``stop_ids`` and once their answer (decoded with ``tokenizer``) is
    decided given the task's ``label_words`` (:class:`AnswerDecided`; the parsed label is the one the full
    ``max_new_tokens`` would give).

    Returns:
        ``B`` lists of new token ids, each cut before its first stop token (at most ``max_new_tokens``)
        or after the token that decided its answer.
    """
    cache, mask = stacked_cache(states)
    mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    ids = torch.full_like(mask, pad_id)
    ids[mask.bool()] = torch.tensor([t for p in prompts for t in p], device=mask.device)
    decided = AnswerDecided(tokenizer, label_words, ids.shape[1])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(stop_ids),
                             pad_token_id=pad_id, use_cache=True,
                             stopping_criteria=StoppingCriteriaList([decided]))
    stop = set(stop_ids)
    rows = out[:, ids.shape[1]:].tolist()
    cuts = [next((j for j, t in enumerate(row) if t in stop), len(row)) for row in rows]
    # the padding after a decided answer is not the model's
    return [row[:cut if at is None else min(cut, at)] for row, cut, at in zip(rows, cuts, decided.decided_at)]
