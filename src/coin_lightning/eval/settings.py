"""The ``eval`` config node (``conf/eval/default.yaml``, in ``conf/eval.yaml`` and ``conf/train.yaml``) as a typed dataclass,
and the typed evaluation job (:class:`EvalJob`) that carries it.

:class:`EvalSettings` is the schema of the group (registered in Hydra's ConfigStore by
:mod:`coin_lightning.conf`): Hydra refuses unknown keys and values of the wrong type while composing;
``__post_init__`` expands task shorthands and refuses unknown tasks, levels, methods and modes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coin_lightning.config_types import build, check_choice
from coin_lightning.data.records import PROMPT_FORMATS
from coin_lightning.data.sources import SOURCES, eval_tasks
from coin_lightning.errors import EvalConfigError
from coin_lightning.eval.engine.tasks import PROMPT_LAYOUTS, dedup_aliases
from coin_lightning.eval.instructions.perturb.config import LEVELS, PerturbConfig
from coin_lightning.model.config import ModelArgs

METHODS = ("generate", "rank")
"""Values of ``eval.method`` (:class:`coin_lightning.eval.engine.predict.Predictor`)."""

INSTRUCTION_SOURCES = ("default", "promptbench")
"""Values of ``eval.instructions`` (see ``coin_lightning.eval.instructions.sets``)."""

PERTURB_MODES = ("generated", "adversarial")
"""Values of ``eval.perturb_mode``."""


@dataclass
class EvalSettings:
    """The ``eval`` config node (``conf/eval/default.yaml``)."""

    tasks: list[str] = dataclasses.field(default_factory=lambda: ["glue"])
    """Task names (``glue`` / ``embedded`` expand to their tasks; the names of ``task_files`` too)."""
    task_files: list[str] = dataclasses.field(default_factory=list)
    """Your own tasks: YAML files, each defining one task (data, input fields, label words, clean
    instructions; :mod:`coin_lightning.eval.task_files`); name them in ``tasks``."""
    levels: list[str] = dataclasses.field(default_factory=lambda: list(LEVELS))
    """Perturbation levels to evaluate (subset of ``clean, character, word, sentence, semantic``)."""
    samples_per_task: int | None = 300
    """Rows per task (paper: 300); ``null`` = all."""
    seed: int = 0
    """Seed of the row sample (model-independent)."""
    method: str = "generate"
    """``generate`` or ``rank``."""
    batch_size: int = 16
    """Rows per forward pass."""
    max_new_tokens: int = 7
    """Greedy generation length (paper / PromptBench: 7)."""
    instructions_file: str | None = None
    """An instruction file ``{perturbation: {task: [...]}}``; ``null`` = the set of ``instructions``."""
    instructions: str = "default"
    """Clean and semantic instructions: ``default`` (the project's own) or ``promptbench`` (read from
    the installed ``promptbench`` package); the generated perturbations perturb the clean ones."""
    prompt_layout: str = "training"
    """``training`` (the training prompt format) or ``reference`` (CoIN's evaluation: instruction +
    content + ``### Response:``, no newlines); see ``coin_lightning.eval.engine.tasks.eval_prompt``."""
    dedup_aliases: bool = True
    """Count tasks that score the same rows (``mnli`` and ``mnli_matched``) once: the later is dropped."""
    perturb_mode: str = "generated"
    """``generated`` (seeded operators) or ``adversarial`` (greedy search per instruction)."""
    query_budget: int = 50
    """Adversarial mode: probe-set evaluations allowed per attacked instruction."""
    probe_size: int = 32
    """Adversarial mode: rows per task on which candidate instructions are scored."""
    prefix_cache: bool = True
    """Reuse the key/value cache of the prompt prefix shared by one instruction's rows."""
    decode_batch_size: int = 64
    """``generate``: rows ``model.generate`` runs together (whole prefill batches of ``batch_size``,
    their key/value caches stacked)."""
    perturb: PerturbConfig = dataclasses.field(default_factory=PerturbConfig)
    """The ``eval.perturb`` node (:class:`coin_lightning.eval.instructions.perturb.config.PerturbConfig`)."""

    def __post_init__(self) -> None:
        from coin_lightning.eval.task_files import load_task_files

        own = load_task_files(self.task_files)
        self.tasks = expand_tasks(self.tasks, own=tuple(own))
        if own and self.perturb_mode == "adversarial":
            raise EvalConfigError("eval.task_files: eval.perturb_mode=adversarial is for the built-in tasks; use generated")
        if self.dedup_aliases:
            self.tasks = dedup_aliases(self.tasks)
        if not self.levels:
            raise EvalConfigError("eval.levels is empty; give at least one of " + ", ".join(LEVELS))
        for lv in self.levels:
            if lv not in LEVELS:
                raise EvalConfigError(f"eval.levels: unknown level {lv!r}; levels are {', '.join(LEVELS)}")
        for key, allowed in (("method", METHODS), ("instructions", INSTRUCTION_SOURCES), ("prompt_layout", PROMPT_LAYOUTS),
                             ("perturb_mode", PERTURB_MODES)):
            check_choice(f"eval.{key}", getattr(self, key), allowed, EvalConfigError)
        for key in ("batch_size", "max_new_tokens", "query_budget", "probe_size", "decode_batch_size"):
            if getattr(self, key) < 1:
                raise EvalConfigError(f"eval.{key}={getattr(self, key)!r}: must be >= 1")
        if self.perturb_mode == "adversarial" and "clean" not in self.levels:
            raise EvalConfigError("eval.perturb_mode=adversarial attacks the clean instructions: keep 'clean' in eval.levels")

    @classmethod
    def from_config(cls, node: Any) -> EvalSettings:
        """Build from the ``eval`` node (a config node or mapping; :func:`coin_lightning.config_types.build`).

        Raises:
            EvalConfigError: unknown key, a value of the wrong type, unknown task, method, mode or
                level, no level, or a non-positive size (naming the key).
            ConfigError: a bad ``eval.perturb`` value.
        """
        return build(cls, node, "eval", EvalConfigError)


@dataclass
class EvalJob:
    """One evaluation job (``evaluate``, ``analyze``, or a training run's ``eval_after_train``), parsed once
    from its config by :mod:`coin_lightning.conf` and passed down as typed values.

    Raises:
        EvalConfigError: an unknown ``prompt_format``.
    """

    settings: EvalSettings
    """The ``eval`` node."""
    model: ModelArgs
    """The base model (``model``; with ``model.adapter`` when set)."""
    output_dir: str
    """Where the job writes its outputs (``output_dir``)."""
    adapter: str | None = None
    """The adapter to evaluate (``adapter``; in place of ``model.adapter``)."""
    prompt_format: str = "alpaca"
    """How an instruction and its input become a prompt (``prompt_format``: the training data's)."""
    data_root: str | None = None
    """Local GLUE directory (``data.root``); ``None`` = the hub."""
    trainer: dict = dataclasses.field(default_factory=dict)
    """The ``trainer`` keys evaluation reads (devices, precision, strategy), as plain values."""
    logger: dict = dataclasses.field(default_factory=dict)
    """The ``logger`` group (``_target_`` entries), instantiated by the job; empty for none."""
    config: dict | None = None
    """The resolved config, logged as the loggers' hyper-parameters (``None``: not logged)."""
    analyze: dict = dataclasses.field(default_factory=dict)
    """``analyze``'s keys (``projection``, ``rows``, ``instruction_index``, ``seed``); ``analyze`` only."""
    pooling: str = "last"
    """``loss.pooling``: the state ``analyze`` compares, as the adapter was trained."""
    append_eos: bool = True
    """``data.append_eos``: whether that state follows an EOS appended to the answer."""

    def __post_init__(self) -> None:
        check_choice("prompt_format", self.prompt_format, PROMPT_FORMATS, EvalConfigError)


def task_groups() -> dict[str, tuple[str, ...]]:
    """Shorthands accepted in ``eval.tasks``: a source's name for all its evaluation tasks (``glue``, ``embedded``)."""
    return {name: tuple(source.eval_tasks) for name, source in SOURCES.items() if source.eval_tasks}


def expand_tasks(names: Sequence[str], own: Sequence[str] = ()) -> list[str]:
    """Expand the shorthands of :func:`task_groups` (``glue``, ``embedded``), keep order, drop repeats;
    ``own``: the names of the tasks defined by ``eval.task_files``, also accepted.

    Raises:
        EvalConfigError: an unknown task name or an empty list.
    """
    groups, known_tasks = task_groups(), eval_tasks()
    out = list(dict.fromkeys(t for name in names for t in groups.get(name, (name,))))
    if unknown := [t for t in out if t not in known_tasks and t not in own]:
        raise EvalConfigError(f"eval.tasks: unknown task {unknown[0]!r}; known: {', '.join([*groups, *known_tasks, *own])}")
    if not out:
        raise EvalConfigError("eval.tasks is empty")
    return out
