"""The ``data`` config group as a typed dataclass (``conf/data/*.yaml``).

:class:`DataArgs` is the schema of every ``conf/data`` file (registered in Hydra's ConfigStore as
``data/schema`` by :mod:`coin_lightning.conf`): Hydra refuses an unknown key (``data.batchsize``) or a
value of the wrong type (``data.batch_size=abc``) while composing; ``__post_init__`` refuses what types
cannot express (unknown names, ranges, missing files), each in one line naming the key, before anything
loads. Relative paths are made absolute against Hydra's original working directory there too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coin_lightning.config_types import build, check_choice
from coin_lightning.data.collate import TRUNCATIONS
from coin_lightning.data.grouping import GROUP_MODES, NEGATIVE_MODES, PAIRS_PER_ITEM
from coin_lightning.data.records import PROMPT_FORMATS, DataError
from coin_lightning.data.samplers import DATA_ORDERS
from coin_lightning.data.sources import SOURCES
from coin_lightning.data.sources.base import absolute
from coin_lightning.data.sources.coin_csv import VAL_ROWS
from coin_lightning.data.templates import TEMPLATE_POOLS

ON_ERROR = ("raise", "skip")
"""Values of ``data.on_error``."""


@dataclass
class DataArgs:
    """The ``data`` config group (``conf/data/*.yaml``): every setting of
    :class:`~coin_lightning.data.datamodule.CoinDataModule`. Defaults are the embedded source's."""

    source: str = "embedded"
    """``embedded`` (synthetic offline tasks, own templates), ``glue``, ``flan``, ``coin_csv`` or another key
    of :data:`~coin_lightning.data.sources.SOURCES`."""
    tasks: list[str] | None = None
    """Tasks to use; ``null`` = all of the source's (e.g. ``[embedded_parity, embedded_sign]``, GLUE names,
    FLAN task keys, CSV ``task_name`` values)."""
    n_per_task: int = 200
    """Records generated per embedded task (classification tasks class-balanced); ``embedded`` only."""
    data_seed: int | None = 0
    """Generator seed of the embedded records (``null`` = the run's seed); train/val grouping uses the run's seed."""
    split: str = "train"
    """Source split to train from (validation is held out from it); embedded ``test`` inputs never overlap ``train``."""
    templates: str = "own"
    """``own`` (the shipped YAML, ``resources/templates/``) or a path to a FLAN-layout JSON (or own-layout YAML)."""
    template_pool: str = "main"
    """``main`` (templates with the task's main target, e.g. FLAN's answer templates) or ``all`` (every paraphrase set)."""
    group: str = "pair_of_pairs"
    """``pair_of_pairs`` (the reference code's: the hard negative is a full pair) or ``hard_negative_column``."""
    negatives: str = "length"
    """Hard negative among different-target records: ``length`` (length-matched) or ``random``."""
    batch_size: int = 2
    """Pairs (examples) per training micro-batch (paper ``micro_batch_size`` 2); a multiple of the pairs per
    item (2 for ``pair_of_pairs``, 1 for ``hard_negative_column``)."""
    eval_batch_size: int | None = None
    """Pairs per validation batch (same rule); ``null`` = ``batch_size``."""
    global_batch_size: int | None = None
    """Examples per optimizer step over all processes (paper 64), a multiple of ``batch_size``: sets
    ``trainer.accumulate_grad_batches = global / (batch_size x devices x num_nodes)`` (``training.batching``);
    ``null`` = accumulation as given."""
    val_every_n_steps: int | None = None
    """Optimizer steps between validations (-> ``trainer.val_check_interval`` in micro-batches); ``null`` = as given."""
    val_batches: int | None = None
    """Batches per validation (-> ``trainer.limit_val_batches``); ``null`` = as given."""
    val_every_epoch_fraction: float | None = None
    """Validate and checkpoint every ``int(fraction x training examples / global batch)`` optimizer steps, in
    (0, 1] (the reference: 1/8 of the epoch, its ``eval_steps = save_steps``); ``null`` = ``val_every_n_steps``."""
    cutoff_len: int = 256
    """Max tokens per row (paper 256); how a longer row is cut: ``truncation``."""
    truncation: str = "input"
    """``input`` (shorten the input, keep the response whole) or ``sequence`` (cut the whole row on the right,
    as the reference: a long input loses its response, so that row gets no CE and pools an input token);
    see :mod:`coin_lightning.data.collate`."""
    prompt_format: str = "alpaca"
    """``alpaca`` (``"{input}\\n\\n### Response:\\n"``, the paper's code) or ``chat`` (the tokenizer's chat template)."""
    val_size: int = 100
    """Records held out for validation, by record (paper: 2000); ``coin_csv``: rows, as whole row pairs."""
    max_per_task: int | None = None
    """Cap on records per task (FLAN-style examples-proportional mixing); ``null`` = no cap."""
    task_weights: dict[str, float] | None = None
    """``{task: weight}``: scales each task's (capped) training records; repeats when > 1; default 1."""
    group_by_length: bool = False
    """Micro-batches of similar length (rank-aware :class:`~coin_lightning.data.samplers.LengthGroupedSampler`)."""
    order: str = "shuffled"
    """``shuffled`` (a new seeded order each epoch) or ``sequential`` (the dataset's order; the reference: no
    shuffling, CSV order); see :func:`~coin_lightning.data.samplers.train_sampler`."""
    append_eos: bool = True
    """End responses with EOS; the reference (luka-group/CoIN) does not, so its pooled token is the last answer token."""
    num_workers: int = 0
    """DataLoader worker processes."""
    on_error: str = "raise"
    """``raise`` (stop at a bad row, file and row named) or ``skip`` (drop it and count it in ``stats``)."""
    root: str | None = None
    """Local data (``glue``: a directory of ``<root>/<task>/<split>.jsonl``; ``flan``: a JSONL file or a
    directory of ``*.jsonl``, ``<root>/<split>/`` if present); ``null`` = the Hugging Face hub."""
    path: str | None = None
    """The CoIN CSV file (``coin_csv`` only)."""
    val_rows: str = "seeded"
    """``coin_csv`` only, which rows validate: ``seeded`` (a seeded random set of row pairs, spread over the
    whole file) or ``last`` (the file's last ``val_size`` rows; the reference's
    ``train_test_split(shuffle=False)``)."""
    hub_id: str | None = None
    """Hub dataset of ``flan`` when ``root`` is null (``null`` = ``Muennighoff/flan``; GLUE's is fixed)."""
    data_files: Any = None
    """``datasets.load_dataset`` ``data_files`` for the ``flan`` hub source (to fetch only some task files)."""

    def __post_init__(self) -> None:
        """Refuse unknown names and out-of-range values, then the source's missing files (``DataError``)."""
        for key, allowed in (("source", tuple(SOURCES)), ("group", GROUP_MODES), ("prompt_format", PROMPT_FORMATS),
                             ("template_pool", TEMPLATE_POOLS), ("negatives", NEGATIVE_MODES), ("on_error", ON_ERROR),
                             ("truncation", TRUNCATIONS), ("val_rows", VAL_ROWS), ("order", DATA_ORDERS)):
            check_choice(f"data.{key}", getattr(self, key), allowed, DataError)
        ppi = self.pairs_per_item
        if self.eval_batch_size is None:
            self.eval_batch_size = self.batch_size
        for key in ("batch_size", "eval_batch_size"):
            value = getattr(self, key)
            if value < ppi or value % ppi:
                raise DataError(
                    f"data.{key}={value!r} must be a positive multiple of {ppi}, the pairs per item of "
                    f"data.group={self.group} (it counts pairs = examples per micro-batch)"
                )
        for key, low in (("num_workers", 0), ("val_size", 0), ("n_per_task", 1)):
            if getattr(self, key) < low:
                raise DataError(f"data.{key}={getattr(self, key)!r} must be an integer >= {low}")
        fraction = self.val_every_epoch_fraction
        if fraction is not None and not 0 < fraction <= 1:
            raise DataError(f"data.val_every_epoch_fraction={fraction!r} must be a number in (0, 1], or null")
        SOURCES[self.source].check(self.root, self.path, self.templates)
        if self.order == "sequential" and self.group_by_length:
            raise DataError("data.order=sequential keeps the dataset order; data.group_by_length=true reorders by length: "
                            "choose one")
        for key in ("global_batch_size", "val_every_n_steps", "val_batches"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise DataError(f"data.{key}={value!r} must be a positive integer or null")
        if self.global_batch_size is not None and self.global_batch_size % self.batch_size:
            raise DataError(f"data.global_batch_size={self.global_batch_size} must be a positive multiple of "
                            f"data.batch_size={self.batch_size}")
        self.root, self.path = absolute(self.root), absolute(self.path)

    @property
    def pairs_per_item(self) -> int:
        """Pairs per dataset item (group): 2 for ``pair_of_pairs``, 1 for ``hard_negative_column``."""
        return PAIRS_PER_ITEM[self.group]

    @classmethod
    def from_config(cls, node: Any) -> DataArgs:
        """The checked ``data`` settings of a config node (``None`` = defaults).

        Raises:
            DataError: an unknown key, a value of the wrong type, or a bad value (one line naming the key).
            ConfigError: a required value left ``???``.
        """
        return build(cls, node, "data", DataError)

