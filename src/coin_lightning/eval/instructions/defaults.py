"""The project's default instruction set: its hand-written clean and semantic instructions
(``resources/instructions/default.yaml``) plus the seeded character, word and sentence perturbations of
the clean ones (``perturbed[i]`` derives from ``clean[i]``), as in the CoIN evaluation (Yan et al. 2024,
Section 4; PromptBench's levels, Zhu et al. 2023).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from coin_lightning.eval.instructions.perturb import apply, instruction_rng
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.promptbench import promptbench_instruction_set
from coin_lightning.eval.instructions.sets import (
    InstructionError,
    InstructionSet,
    default_instruction_path,
    label_words,
    load_instruction_file,
)


def perturb_instruction_set(
    base: InstructionSet,
    perturb_cfg: Any = None,
    seed: int | None = None,
    tasks: Iterable[str] | None = None,
    protected: Callable[[str], Iterable[str]] = label_words,
) -> InstructionSet:
    """Add the generated perturbations of ``base``'s ``clean`` instructions.

    For each perturbation ``p`` of ``perturb_cfg.perturbations``, task ``t`` and clean instruction
    ``i``: ``apply(p, clean[t][i], instruction_rng(seed, p, t, i), protected(t), cfg)``.

    Args:
        base: a set with a ``clean`` perturbation (others are kept as they are).
        perturb_cfg: the ``eval.perturb`` node, a mapping or a :class:`PerturbConfig` (``None``: defaults).
        seed: overrides ``perturb_cfg.seed``.
        tasks: task keys to keep (aliases resolved; default all of ``base``'s clean tasks).
        protected: task -> words never perturbed (default: the task's label words).

    Returns:
        ``clean``, the generated perturbations (config order), then ``base``'s other perturbations.

    Raises:
        InstructionError: ``base`` has no ``clean`` instructions, or a task is missing from them.
        WordNetMissing: word-level perturbations without the WordNet database.
    """
    cfg = PerturbConfig.from_cfg(perturb_cfg)
    seed = cfg.seed if seed is None else seed
    if "clean" not in base.instructions:
        raise InstructionError(f"{base.source}: no 'clean' instructions to perturb")
    keys = base.tasks("clean") if tasks is None else [_require(base, t) for t in tasks]
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict[str, tuple[str, ...]]] = {"clean": {k: base.instructions["clean"][k] for k in keys}}
    for pert in cfg.perturbations:
        out[pert] = {}
        for key in keys:
            words = tuple(protected(key))
            out[pert][key] = tuple(
                apply(pert, text, instruction_rng(seed, pert, key, i), words, cfg)
                for i, text in enumerate(base.instructions["clean"][key])
            )
    rest = base.select([p for p in base.perturbations if p not in out], keys)
    levels = {**dict(base.level_map), **dict(cfg.levels)}
    return InstructionSet({**out, **rest.instructions}, levels, f"{base.source} (perturbed, seed={seed})")


def _require(base: InstructionSet, task: str) -> str:
    key = base.resolve_task(task, "clean")
    if key is None:
        raise InstructionError(f"{base.source}: clean: no instructions for task {task!r}; has {', '.join(base.tasks('clean'))}")
    return key


def default_instruction_set(
    perturb_cfg: Any = None, seed: int | None = None, tasks: Iterable[str] | None = None, source: str = "default"
) -> InstructionSet:
    """The project's default set: own ``clean`` + ``semantic`` instructions and generated perturbations.

    Args:
        perturb_cfg: the ``eval.perturb`` node (strengths, seed, perturbations, levels).
        seed: overrides ``perturb_cfg.seed``.
        tasks: evaluation tasks (``mnli_matched`` -> ``mnli``); default: every task of the file.
        source: ``default`` (the project's own clean and semantic instructions) or ``promptbench``
            (PromptBench's, read from the installed package: :mod:`coin_lightning.eval.instructions.promptbench`;
            ``tasks`` required).

    Returns:
        Perturbations ``clean``, the generated ones, ``semantic``; keyed by instruction task key.

    Raises:
        InstructionError: a task without default instructions (use ``eval.instructions_file``); the
            ``promptbench`` package missing (the message says how to install it).
        WordNetMissing: word-level perturbations without the WordNet database.
    """
    cfg = PerturbConfig.from_cfg(perturb_cfg)
    if source == "promptbench":
        if tasks is None:
            raise InstructionError("eval.instructions=promptbench needs the task list")
        base = promptbench_instruction_set(tasks, level_map=cfg.levels)
    elif source == "default":
        base = load_instruction_file(default_instruction_path(), level_map=cfg.levels)
    else:
        raise InstructionError(f"eval.instructions={source!r}; choose default or promptbench")
    return perturb_instruction_set(base, cfg, seed, tasks)
