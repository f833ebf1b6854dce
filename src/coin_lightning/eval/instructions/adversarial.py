"""Adversarial instructions (``eval.perturb_mode=adversarial``): greedy search against the model.

PromptBench (Zhu et al. 2023, Section 3) attacks each clean prompt with TextAttack recipes whose goal
is to lower the model's accuracy on a sample of the task, under a query budget; the search is greedy
(TextAttack's ``GreedySearch`` / ``GreedyWordSwapWIR``). :func:`greedy_attack` implements that loop
for any candidate generator: at each step every candidate one edit further is scored and the one with
the lowest accuracy is kept, as long as it lowers accuracy and the budget lasts. The candidate
generators are :func:`coin_lightning.eval.instructions.perturb.neighbour_fn` (each word edited at most
once, at most ``max_words`` words or ``suffix_count`` suffixes); the runner supplies ``accuracy``,
computed with the model on a small probe set (``eval.perturb.adversarial.probe_size`` rows).

:func:`attack_instruction` runs it for one clean instruction and one perturbation (seeded, label
words protected); :func:`attack_instruction_set` runs it for every (perturbation, task, clean
instruction) and caches the chosen instructions to a file in the instruction-file schema, with a
``<file>.meta.json`` sidecar (fingerprint, settings, per-attack accuracies and queries) that decides
whether the cache is reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from coin_lightning.eval.instructions.perturb import instruction_rng, neighbour_fn
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.sets import (
    InstructionError,
    InstructionSet,
    label_words,
    load_instruction_file,
    save_instruction_file,
)
from coin_lightning.io import write_json

log = logging.getLogger(__name__)


class AttackResult(NamedTuple):
    """Outcome of :func:`greedy_attack`; unpacks as ``(instruction, accuracy, queries, ...)``."""

    instruction: str
    """The chosen (perturbed) instruction."""
    accuracy: float
    """Its accuracy on the probe set, in [0, 1]."""
    queries: int
    """Calls of ``accuracy`` made (the clean instruction's included; repeats are served from memory)."""
    clean_accuracy: float
    """Accuracy of the clean instruction."""
    steps: int
    """Edits accepted (0: the clean instruction was kept)."""


def greedy_attack(
    instruction: str,
    candidates: Callable[[str], list[str]],
    accuracy: Callable[[str], float],
    query_budget: int,
    always_edit: bool = True,
) -> AttackResult:
    """Greedy search for the edit sequence that lowers ``accuracy`` most, within ``query_budget`` queries.

    From ``current = instruction``: score every string of ``candidates(current)`` (in order, while the
    budget lasts); move to the lowest-scoring one if it is lower than ``current``'s score; repeat until
    no candidate improves, ``candidates`` returns nothing, the budget is spent, or accuracy is 0
    (after the first step, which ``always_edit`` forces).

    Args:
        instruction: the clean instruction.
        candidates: ``text -> list of texts one edit further`` (see ``perturb.neighbour_fn``).
        accuracy: ``text -> accuracy in [0, 1]`` on the probe set (one model query each).
        query_budget: the most ``accuracy`` calls, the clean one included (>= 2).
        always_edit: accept the first step's best candidate even when it does not lower accuracy, so
            the result is perturbed whenever any candidate exists (a failed attack then still yields
            a perturbed instruction, as PromptBench reports one per prompt and attack).

    Returns:
        :class:`AttackResult`.

    Raises:
        ValueError: ``query_budget`` < 2.
    """
    if query_budget < 2:
        raise ValueError(f"eval.query_budget must be at least 2 (the clean instruction and one candidate), got {query_budget}")
    memo: dict[str, float] = {}

    def score(text: str) -> float:
        if text not in memo:
            memo[text] = float(accuracy(text))
        return memo[text]

    current, current_acc = instruction, score(instruction)
    clean_acc, steps = current_acc, 0
    while (current_acc > 0 or (always_edit and steps == 0)) and len(memo) < query_budget:
        best: tuple[str, float] | None = None
        for cand in candidates(current):
            if cand not in memo and len(memo) >= query_budget:
                break
            acc = score(cand)
            if best is None or acc < best[1]:
                best = (cand, acc)
            if acc == 0:
                break
        if best is None:
            break
        if best[1] < current_acc or (always_edit and steps == 0):
            current, current_acc = best
            steps += 1
        else:
            break
    return AttackResult(current, current_acc, len(memo), clean_acc, steps)


def attack_instruction(
    instruction: str,
    perturbation: str,
    accuracy: Callable[[str], float],
    query_budget: int,
    *,
    task: str,
    index: int = 0,
    cfg: Any = None,
) -> AttackResult:
    """Attack one clean instruction with one perturbation's edits (:func:`greedy_attack` over
    :func:`~coin_lightning.eval.instructions.perturb.neighbour_fn`).

    Args:
        instruction: the clean instruction.
        perturbation: a registered perturbation (``perturb.generated()``) (e.g. ``"textfooler"``).
        accuracy: ``instruction -> accuracy`` on the task's probe set.
        query_budget: ``eval.query_budget``.
        task: the task (its label words are protected; seeds the search).
        index: the instruction's position in the task's clean list (seeds the search).
        cfg: ``eval.perturb`` (strengths, ``adversarial.candidates_per_step``, seed).

    Returns:
        :class:`AttackResult`; the same arguments and accuracies give the same result.

    Raises:
        ValueError: unknown perturbation, ``query_budget`` < 2.
        InstructionError: unknown task (no label words).
    """
    cfg = PerturbConfig.from_cfg(cfg)
    rng = instruction_rng(cfg.seed, f"adversarial/{perturbation}", task, index)
    words = label_words(task)
    return greedy_attack(instruction, neighbour_fn(perturbation, instruction, rng, words, cfg), accuracy, query_budget)


def attack_instruction_set(
    base: InstructionSet,
    accuracy: Callable[[str, str], float],
    perturb_cfg: Any = None,
    *,
    query_budget: int,
    tasks: Iterable[str] | None = None,
    cache_path: str | Path | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> InstructionSet:
    """Attack every clean instruction of ``base`` with each configured perturbation; cache the result.

    Args:
        base: a set with ``clean`` instructions (other perturbations, e.g. ``semantic``, are copied).
        accuracy: ``(task, instruction) -> accuracy on that task's probe set``, supplied by the runner;
            ``task`` is a name of ``tasks``.
        perturb_cfg: ``eval.perturb`` (``perturbations``, strengths, ``adversarial.candidates_per_step``; ``seed``
            seeds the candidate sampling).
        query_budget: ``eval.query_budget``, the most accuracy queries per clean instruction and perturbation.
        tasks: evaluation task names (``mnli_matched`` uses ``mnli``'s clean instructions, but is
            attacked and stored under its own name); default: the clean task keys of ``base``.
        cache_path: instruction file (``.yaml``/``.json``) to reuse or write; ``None``: no cache.
        fingerprint: what the accuracies depend on (model, adapter, probe rows, prompt format...);
            a cache is reused only when it, the settings and the clean instructions are unchanged.

    Returns:
        ``clean``, one perturbation per attack (aligned with ``clean``), then ``base``'s others;
        keyed by the names in ``tasks``.

    Raises:
        InstructionError: ``base`` has no clean instructions for a task; corrupt cache metadata.
        ValueError: ``query_budget`` < 2.
    """
    cfg = PerturbConfig.from_cfg(perturb_cfg)
    if "clean" not in base.instructions:
        raise InstructionError(f"{base.source}: no clean instructions to attack")
    names = list(dict.fromkeys(base.tasks("clean") if tasks is None else tasks))
    clean = {name: tuple(base.instructions_for(name, "clean")) for name in names}
    levels = {**dict(base.level_map), **dict(cfg.levels)}
    meta_key = json.loads(json.dumps({
        "fingerprint": dict(fingerprint or {}),
        "seed": cfg.seed,
        "query_budget": query_budget,
        "perturb": cfg.to_dict(),
        "clean_sha256": hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest(),
    }, default=str))
    meta_path = None if cache_path is None else Path(str(cache_path) + ".meta.json")
    if cache_path is not None and Path(cache_path).is_file() and meta_path.is_file():
        try:
            cached_meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InstructionError(f"{meta_path}: corrupt cache metadata: {exc}") from None
        if cached_meta.get("key") == meta_key:
            log.info("reusing adversarial instructions from %s", cache_path)
            return load_instruction_file(cache_path, tasks=list(base.tasks()) + names, level_map=levels)
    out: dict[str, dict[str, tuple[str, ...]]] = {"clean": clean}
    records = []
    for pert in cfg.perturbations:
        out[pert] = {}
        for name in names:
            chosen = []
            for i, text in enumerate(clean[name]):
                result = attack_instruction(text, pert, lambda s, n=name: accuracy(n, s), query_budget,
                                            task=name, index=i, cfg=cfg)
                chosen.append(result.instruction)
                records.append({"perturbation": pert, "task": name, "index": i, **result._asdict()})
                log.info("%s %s[%d]: accuracy %.3f -> %.3f in %d queries", pert, name, i,
                         result.clean_accuracy, result.accuracy, result.queries)
            out[pert][name] = tuple(chosen)
    for pert in base.perturbations:
        if pert in out:
            continue
        kept = {n: tuple(base.instructions_for(n, pert)) for n in names if base.resolve_task(n, pert)}
        if kept:
            out[pert] = kept
    name = str(cache_path) if cache_path else f"{base.source} (adversarial, seed={cfg.seed})"
    result_set = InstructionSet(out, levels, name)
    if cache_path is not None:
        save_instruction_file(result_set, cache_path)
        write_json(meta_path, {"key": meta_key, "attacks": records})
    return result_set
