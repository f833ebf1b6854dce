"""The project's default instruction set: its hand-written clean and semantic instructions
(``resources/instructions/default.yaml``) plus the seeded character, word and sentence perturbations of
the clean ones (``perturbed[i]`` derives from ``clean[i]``), as in the CoIN evaluation (Yan et al. 2024,
Section 4; PromptBench's levels, Zhu et al. 2023).

Its clean and semantic instructions may instead come from PromptBench (``eval.instructions=promptbench``,
:func:`promptbench_instruction_set`).

The ``promptbench`` package on PyPI (Zhu et al. 2023; MIT licence) ships the zero-shot prompts of
every GLUE task in ``promptbench/prompts/*.py``. Its pinned dependencies are years old, so it is
installed without them (``pip install --no-deps promptbench==0.0.4``, done by ``make install``) and
never imported: this module finds the package directory with ``importlib.util.find_spec`` (which
does not run the package) and reads the dictionaries with ``ast.literal_eval``. The project ships
none of PromptBench's text; it is read at run time.

Selection, fixed (for promptbench 0.0.4):

- **clean** (6 per task): the first 3 usable prompts of ``TASK_ORIENTED_PROMPTS[task]``, then the
  first 3 usable of ``ROLE_ORIENTED_PROMPTS[task]``, in file order;
- **semantic** (6 per task): the first usable prompt of each language list of
  ``SEMANTIC_ADV_PROMPT_SET[task]`` (chinese, french, arabic, spanish, japanese, korean: PromptBench's
  semantic attack, paraphrases translated back into English), in file order. A task without
  semantic prompts falls back to the project's own semantic instructions, with a logged note (in
  0.0.4 every GLUE task has them).

Normalisation: the PyPI prompts end in ``"\\nQuestion:{content}\\nAnswer:"`` (the project adds the
content itself, :func:`coin_lightning.eval.engine.tasks.eval_prompt`); that tail is cut and whitespace is
stripped. *Usable* = after that no ``{...}`` placeholder is left (a prompt whose tail was pasted
into its middle, as 0.0.4's first rte/wnli prompts, is skipped) and every label word of the task is
named as a whole token, ignoring case (PromptBench's cola prompts write ``'Acceptable'``; answers are
parsed case-blind). ``mnli_matched``/``mnli_mismatched`` use mnli's prompts.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from coin_lightning.eval.instructions.perturb import apply, instruction_rng
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.instructions.perturb.text import whole_word
from coin_lightning.eval.instructions.sets import (
    TASK_ALIASES,
    InstructionError,
    InstructionSet,
    default_instruction_path,
    label_words,
    load_instruction_file,
)

log = logging.getLogger(__name__)

PACKAGE = "promptbench"
"""The PyPI distribution and package read here."""

PINNED_VERSION = "0.0.4"
"""The version whose files the selection above is documented for (pinned in ``constraints.txt``)."""

INSTALL_HINT = f"pip install --no-deps -c constraints.txt {PACKAGE}=={PINNED_VERSION}"
"""How to install it (``--no-deps``: its own pins are years old)."""

SOURCES = {
    "task": ("prompts/task_oriented.py", "TASK_ORIENTED_PROMPTS"),
    "role": ("prompts/role_oriented.py", "ROLE_ORIENTED_PROMPTS"),
    "semantic": ("prompts/semantic_atk_prompts.py", "SEMANTIC_ADV_PROMPT_SET"),
}
"""Pool -> (file inside the package, the dictionary assigned in it)."""

PER_POOL = 3
"""Clean prompts taken from each of the task- and role-oriented pools."""

CONTENT_TAIL = re.compile(r"\s*Question:\s*\{content\}\s*Answer:\s*$")
"""The tail of a PyPI prompt where PromptBench inserts the row's content."""


def read_assignment(path: Path, name: str) -> Any:
    """The literal value assigned to ``name`` at the top level of the Python file ``path``.

    Raises:
        InstructionError: the file is missing, does not parse, or has no literal ``name = ...``.
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise InstructionError(f"{path}: cannot read PromptBench prompts ({str(exc).splitlines()[0]})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                break
    raise InstructionError(f"{path}: no literal assignment {name} = {{...}}")


def normalise(prompt: str) -> str:
    """A PromptBench prompt without its ``Question:{content} Answer:`` tail, stripped."""
    return CONTENT_TAIL.sub("", prompt).strip()


def first_usable(prompts: Iterable[str], words: Iterable[str], n: int) -> list[str]:
    """The first ``n`` usable normalised prompts, in order: without ``{...}`` placeholders and naming every label
    word (as a whole token, ignoring case)."""
    patterns = [whole_word(w) for w in words]
    texts = dict.fromkeys(normalise(p) if isinstance(p, str) else "" for p in prompts)
    return [t for t in texts if "{" not in t and "}" not in t and all(p.search(t) for p in patterns)][:n]


def load_pools() -> dict[str, dict]:
    """The three dictionaries (``task``, ``role``, ``semantic``) of the installed ``promptbench`` package, whose
    directory is found without importing the package.

    Raises:
        InstructionError: the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InstructionError(f"eval.instructions=promptbench needs the {PACKAGE} package: {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0])
    return {pool: read_assignment(root / rel, var) for pool, (rel, var) in SOURCES.items()}


def promptbench_instruction_set(tasks: Iterable[str], level_map: Mapping[str, str] | None = None,
                                pools: Mapping[str, dict] | None = None) -> InstructionSet:
    """``clean`` and ``semantic`` instructions of ``tasks`` from PromptBench (selection above).

    Args:
        tasks: evaluation task names (``mnli_matched``/``mnli_mismatched`` are keyed as ``mnli``).
        level_map: perturbation -> level (``eval.perturb.levels``).
        pools: the dictionaries of :func:`load_pools` (default: read from the installed package).

    Returns:
        An :class:`InstructionSet` with 6 clean and up to 6 semantic instructions per task key.

    Raises:
        InstructionError: the package is missing (how to install it is named), or a task has fewer
            than 3 usable prompts in a pool, or PromptBench has no prompts for it.
    """
    if pools is None:
        pools = load_pools()
        try:
            version = importlib.metadata.version(PACKAGE)
        except importlib.metadata.PackageNotFoundError:  # found on the path without distribution metadata
            version = "unknown"
        if version != PINNED_VERSION:
            log.warning("promptbench %s is installed; the prompt selection is documented for %s", version, PINNED_VERSION)
    keys = list(dict.fromkeys(TASK_ALIASES.get(t, t) for t in tasks))
    clean: dict[str, list[str]] = {}
    semantic: dict[str, list[str]] = {}
    for key in keys:
        if key not in pools["task"] or key not in pools["role"]:
            raise InstructionError(f"eval.instructions=promptbench: PromptBench has no prompts for task {key!r} "
                                   "(it covers the GLUE tasks)")
        words = label_words(key)
        clean[key] = []
        for pool in ("task", "role"):
            picked = first_usable(pools[pool].get(key, ()), words, PER_POOL)
            if len(picked) < PER_POOL:
                raise InstructionError(f"promptbench {SOURCES[pool][0]}: {SOURCES[pool][1]}[{key!r}] has "
                                       f"{len(picked)} usable prompts naming {', '.join(words)}; {PER_POOL} needed")
            clean[key] += picked
        semantic[key] = [p for v in (pools["semantic"].get(key) or {}).values() for p in first_usable(v, words, 1)]
    data: dict[str, dict[str, list[str]]] = {"clean": clean, "semantic": {k: v for k, v in semantic.items() if v}}
    if missing := [k for k in keys if not semantic[k]]:
        log.warning("promptbench has no semantic prompts for %s: using the project's own semantic instructions there",
                    ", ".join(missing))
        own = load_instruction_file(default_instruction_path(), level_map=level_map)
        data["semantic"].update({k: own.instructions_for(k, "semantic") for k in missing})
    return InstructionSet.from_dict(data, f"promptbench {PINNED_VERSION} prompts", level_map=level_map)


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
    keys = []
    for task in base.tasks("clean") if tasks is None else tasks:
        key = base.resolve_task(task, "clean")
        if key is None:
            base.instructions_for(task, "clean")  # raises: names the task and the tasks the set has
        keys.append(key)
    keys = list(dict.fromkeys(keys))
    out: dict[str, dict[str, tuple[str, ...]]] = {"clean": {k: base.instructions["clean"][k] for k in keys}}
    for pert in cfg.perturbations:
        out[pert] = {}
        for key in keys:
            words = tuple(protected(key))
            out[pert][key] = tuple(apply(pert, text, instruction_rng(seed, pert, key, i), words, cfg)
                                   for i, text in enumerate(out["clean"][key]))
    rest = base.select([p for p in base.perturbations if p not in out], keys)
    levels = {**dict(base.level_map), **dict(cfg.levels)}
    return InstructionSet({**out, **rest.instructions}, levels, f"{base.source} (perturbed, seed={seed})")


def default_instruction_set(
    perturb_cfg: Any = None, seed: int | None = None, tasks: Iterable[str] | None = None, source: str = "default"
) -> InstructionSet:
    """The project's default set: own ``clean`` + ``semantic`` instructions and generated perturbations.

    Args:
        perturb_cfg: the ``eval.perturb`` node (strengths, seed, perturbations, levels).
        seed: overrides ``perturb_cfg.seed``.
        tasks: evaluation tasks (``mnli_matched`` -> ``mnli``); default: every task of the file.
        source: ``default`` (the project's own clean and semantic instructions) or ``promptbench``
            (PromptBench's, read from the installed package: :func:`promptbench_instruction_set`;
            ``tasks`` required); ``eval.instructions`` is checked where it enters (``EvalSettings``).

    Returns:
        Perturbations ``clean``, the generated ones, ``semantic``; keyed by instruction task key.

    Raises:
        InstructionError: an unknown ``source``; a task without default instructions (use
            ``eval.instructions_file``); the ``promptbench`` package missing (the message says how to install it).
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
