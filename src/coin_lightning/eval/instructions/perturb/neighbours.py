"""The search space of the adversarial mode: all one-edit-further variants of an instruction.

:func:`neighbour_fn` returns the ``candidates`` callable of :func:`coin_lightning.eval.instructions.adversarial.greedy_attack`.
It follows TextAttack's constraints as PromptBench uses them: each word of the clean instruction is
edited at most once (``RepeatModification``), protected words never (``StopwordModification`` in
spirit, here label words and quoted options), and at most ``max_words`` words (or ``suffix_count``
suffixes) are changed in total.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from coin_lightning.eval.instructions.perturb.character import DEEPWORDBUG_OPS, TEXTBUGGER_OPS, edit_word
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.perturb.sentence import append, random_suffix, usable_tautologies
from coin_lightning.eval.instructions.perturb.text import (
    Token,
    content_words,
    editable_words,
    match_case,
    replace_tokens,
)
from coin_lightning.eval.instructions.perturb.word import related_candidates, synonym_candidates


def neighbour_fn(
    name: str, clean: str, rng: random.Random, protected: Iterable[str], cfg: PerturbConfig | None = None
) -> Callable[[str], list[str]]:
    """Build ``candidates(text) -> list[str]`` for greedy search from ``clean`` with operator ``name``.

    ``candidates`` accepts ``clean`` and any string it has returned before, and returns the variants
    with one more edit (one more word changed, or one more suffix appended), at most
    ``cfg.adversarial.candidates_per_step`` of them (a seeded sample), or ``[]`` when the edit limit
    is reached.

    Args:
        name: a perturbation of ``perturb.GENERATED``.
        clean: the clean instruction.
        rng: ``random.Random``; fixes which variants are offered.
        protected: label words, never edited.
        cfg: strengths (``max_words``, ``edits_per_word``, ``candidates``, ``suffix_count``, ...).

    Raises:
        ValueError: unknown ``name``; ``candidates`` called with a string it did not produce.
    """
    cfg = PerturbConfig.from_cfg(cfg)
    cap = cfg.adversarial.candidates_per_step
    if name in ("checklist", "stresstest"):
        return _suffix_space(name, clean, rng, cfg, cap, usable_tautologies(protected))
    if name in ("deepwordbug", "textbugger"):
        ops = DEEPWORDBUG_OPS if name == "deepwordbug" else TEXTBUGGER_OPS
        k, edits = cfg.character.variants_per_word, cfg.character.edits_per_word

        def variants(word: str) -> list[str]:
            out: list[str] = []
            for _ in range(4 * k):
                new = edit_word(word, rng, ops, edits)
                if new is not None and new not in out:
                    out.append(new)
                if len(out) == k:
                    break
            return out

        limit = cfg.character.max_words
    elif name in ("textfooler", "bertattack"):
        source = synonym_candidates if name == "textfooler" else related_candidates

        def variants(word: str) -> list[str]:
            return [match_case(word, c) for c in source(word, cfg.word.candidates, cfg.word.wordnet_dir)]

        limit = cfg.word.max_words
    else:
        raise ValueError(f"no search space for perturbation {name!r}")
    return _word_space(clean, protected, variants, limit, rng, cap)


def _word_space(clean, protected, variants, limit, rng, cap) -> Callable[[str], list[str]]:
    tokens = editable_words(clean, protected)
    pool = content_words(tokens) or [t for t in tokens if t.text.isalpha()]
    cache: dict[Token, list[str]] = {}
    states: dict[str, dict[Token, str]] = {clean: {}}

    def candidates(text: str) -> list[str]:
        if text not in states:
            raise ValueError(f"candidates() got an instruction it did not produce: {text!r}")
        edits = states[text]
        if len(edits) >= limit:
            return []
        out = []
        for token in pool:
            if token in edits:
                continue
            if token not in cache:
                cache[token] = variants(token.text)
            for v in cache[token]:
                new_edits = {**edits, token: v}
                new = replace_tokens(clean, new_edits)
                states.setdefault(new, new_edits)
                out.append(new)
        return _cap(out, rng, cap)

    return candidates


def _suffix_space(name, clean, rng, cfg: PerturbConfig, cap, tautologies) -> Callable[[str], list[str]]:
    states: dict[str, tuple[str, ...]] = {clean: ()}

    def candidates(text: str) -> list[str]:
        if text not in states:
            raise ValueError(f"candidates() got an instruction it did not produce: {text!r}")
        used = states[text]
        if len(used) >= cfg.sentence.suffix_count:
            return []
        if name == "checklist":
            suffixes = [random_suffix(rng, cfg.sentence.suffix_len) for _ in range(cap)]
        else:
            suffixes = [t for t in tautologies if t not in used] or list(tautologies)
        out = []
        for s in suffixes:
            new = append(text, s)
            states.setdefault(new, used + (s,))
            out.append(new)
        return _cap(out, rng, cap)

    return candidates


def _cap(items: list[str], rng: random.Random, cap: int) -> list[str]:
    unique = list(dict.fromkeys(items))
    return unique if len(unique) <= cap else rng.sample(unique, cap)
