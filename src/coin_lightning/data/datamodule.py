"""``CoinDataModule``: records from any source -> contrastive groups -> tokenized batches.

One class serves every source (``conf/data/{embedded,glue,flan,coin_csv}.yaml`` differ in ``source``
and its keys), so the hub, local files and the embedded default behave identically downstream. The
training entry point builds it with ``hydra.utils.instantiate(cfg.data, tokenizer=None,
seed=cfg.seed)`` and calls :meth:`setup` to read and validate the data before any model loads, then
sets ``tokenizer`` and calls :meth:`setup` again to tokenize. After :meth:`setup`: ``train_dataset``,
``val_dataset`` (items = whole groups, :class:`~coin_lightning.data.samplers.GroupDataset`) and
``stats`` (see :meth:`setup`).

Pipeline in :meth:`setup` (the source's ``groups``, :mod:`coin_lightning.data.sources.base`): load
records -> keep those that fill their task's templates (``on_error``) -> cap per task (``max_per_task``)
-> hold out ``val_size`` records by uid -> weight tasks (``task_weights``, train only) -> build groups
(``grouping.build_groups``) -> tokenize and truncate (``collate.Encoder``). The CoIN CSV skips
templates: its rows are already rendered pairs.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import lightning as L
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from coin_lightning.config_types import plain
from coin_lightning.data.checks import check_data_values
from coin_lightning.data.collate import Collator, Encoder
from coin_lightning.data.grouping import PAIRS_PER_ITEM
from coin_lightning.data.records import DataError
from coin_lightning.data.samplers import GroupDataset, check_order, train_sampler
from coin_lightning.data.sources import SOURCES
from coin_lightning.data.sources.base import absolute as _abs
from coin_lightning.data.sources.hub import load_hub_dataset
from coin_lightning.data.template_files import load_template_bank
from coin_lightning.data.templates import TemplateBank

log = logging.getLogger(__name__)


class CoinDataModule(L.LightningDataModule):
    """Contrastive instruction-tuning data for Lightning: one dataset item = one group.

    Args:
        source: ``embedded`` (default, offline), ``glue``, ``flan``, ``coin_csv`` or another key of
            :data:`~coin_lightning.data.sources.SOURCES`.
        tokenizer: a ``transformers`` tokenizer with EOS and pad tokens; needed for dataloaders
            (``setup`` without it builds the text groups only, as the ``show`` command does).
        seed: seeds the validation split, mixture, groups and shuffling (the run's ``cfg.seed``).
        group: ``pair_of_pairs`` (default, reference layout) or ``hard_negative_column``.
        batch_size: pairs (examples) per training micro-batch (paper ``micro_batch_size`` 2); a
            multiple of the pairs per item (2 for ``pair_of_pairs``, 1 for ``hard_negative_column``).
        eval_batch_size: pairs per validation batch (default ``batch_size``); same rule.
        cutoff_len: max tokens per row (paper 256); inputs are shortened, responses never.
        prompt_format: ``alpaca`` (reference) or ``chat``.
        templates: ``own`` (shipped YAML) or a path to a FLAN-layout JSON (or own-layout YAML).
        template_pool: ``main`` (templates with the task's main target, e.g. FLAN's answer
            templates) or ``all``.
        negatives: hard-negative choice, ``length`` (length-matched) or ``random``.
        root: local data directory/file (``glue``: ``<root>/<task>/<split>.jsonl``; ``flan``: JSONL
            file or directory); ``None`` loads from the Hugging Face hub.
        path: the CoIN CSV (``coin_csv`` only).
        tasks: tasks to use (default: all of the source's).
        split: source split to train from (validation is held out from it).
        val_size: records held out for validation (paper 2000); rows for ``coin_csv``.
        max_per_task: cap of records per task (FLAN-style examples-proportional mixing), or None.
        task_weights: ``{task: weight}`` scaling each task's (capped) record count; default 1.
        num_workers: DataLoader workers.
        group_by_length: batch groups of similar length (:class:`LengthGroupedSampler`).
        order: training order, ``shuffled`` (default) or ``sequential`` (reference; see
            :func:`~coin_lightning.data.samplers.train_sampler`).
        append_eos: end responses with EOS (default; the reference does not, see
            :mod:`coin_lightning.data.collate`).
        truncation: ``input`` (default: shorten the input, keep the response) or ``sequence`` (the
            reference: cut the whole row at ``cutoff_len``); see :mod:`coin_lightning.data.collate`.
        val_rows: ``coin_csv`` only: ``seeded`` (default) or ``last`` (the file's last ``val_size``
            rows, as the reference); see :meth:`~coin_lightning.data.sources.coin_csv.CoinCsv.groups`.
        on_error: ``raise`` or ``skip`` (count) bad rows.
        n_per_task: records per embedded task (``embedded`` only).
        data_seed: seed of the embedded generator; ``None`` = ``seed``.
        hub_id: hub dataset id override (``glue``: ``nyu-mll/glue`` is fixed by the loader; ``flan``:
            default ``Muennighoff/flan``).
        data_files: ``datasets.load_dataset`` ``data_files`` for the ``flan`` hub source.
        global_batch_size: examples per optimizer step over all processes (paper 64), or None; the
            trainer's gradient accumulation is derived from it (``training.batching``). Must be a
            multiple of ``batch_size``.
        val_every_n_steps: optimizer steps between validations, or None (``trainer.val_check_interval``
            as given); converted to micro-batches by ``training.batching``.
        val_batches: validation batches per validation, or None (``trainer.limit_val_batches``).
        val_every_epoch_fraction: validate and checkpoint every ``int(fraction x training examples /
            global batch)`` optimizer steps, the reference's ``eval_steps = save_steps`` (1/8 of the
            epoch); set from the data by ``training.batching.epoch_fraction_steps``. None = unused.

    Raises:
        DataError: an invalid value (unknown source/group/format/pool, batch size not a multiple of
            the pairs per item, ...), raised at construction.
    """

    def __init__(
        self,
        source: str = "embedded",
        tokenizer=None,
        seed: int = 0,
        group: str = "pair_of_pairs",
        batch_size: int = 2,
        eval_batch_size: int | None = None,
        cutoff_len: int = 256,
        prompt_format: str = "alpaca",
        templates: str = "own",
        template_pool: str = "main",
        negatives: str = "length",
        root: str | None = None,
        path: str | None = None,
        tasks: Sequence[str] | None = None,
        split: str = "train",
        val_size: int = 100,
        max_per_task: int | None = None,
        task_weights: dict[str, float] | None = None,
        num_workers: int = 0,
        group_by_length: bool = False,
        on_error: str = "raise",
        n_per_task: int = 200,
        data_seed: int | None = 0,
        hub_id: str | None = None,
        data_files: Any = None,
        order: str = "shuffled",
        append_eos: bool = True,
        global_batch_size: int | None = None,
        val_every_n_steps: int | None = None,
        val_batches: int | None = None,
        truncation: str = "input",
        val_rows: str = "seeded",
        val_every_epoch_fraction: float | None = None,
    ):
        super().__init__()
        check_data_values(source, group, batch_size, eval_batch_size, prompt_format, template_pool, negatives,
                          on_error, num_workers, val_size, n_per_task, truncation, val_rows, val_every_epoch_fraction)
        SOURCES[source].check(root, path, templates)
        ppi = PAIRS_PER_ITEM[group]
        eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        check_order(order, group_by_length)
        for key, value in (("global_batch_size", global_batch_size), ("val_every_n_steps", val_every_n_steps),
                           ("val_batches", val_batches)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise DataError(f"data.{key}={value!r} must be a positive integer or null")
        if global_batch_size is not None and (global_batch_size < 1 or global_batch_size % batch_size):
            raise DataError(
                f"data.global_batch_size={global_batch_size} must be a positive multiple of data.batch_size={batch_size}"
            )
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.source, self.seed, self.group = source, int(seed), group
        self.batch_size, self.eval_batch_size, self.pairs_per_item = int(batch_size), int(eval_batch_size), ppi
        self.cutoff_len, self.prompt_format = int(cutoff_len), prompt_format
        self.templates, self.template_pool, self.negatives = templates, template_pool, negatives
        self.root, self.path = _abs(root), _abs(path)
        self.tasks = None if tasks is None else [str(t) for t in plain(tasks)]
        self.split, self.val_size = split, int(val_size)
        self.max_per_task = None if max_per_task is None else int(max_per_task)
        self.task_weights = dict(plain(task_weights) or {})
        self.num_workers, self.group_by_length, self.on_error = int(num_workers), bool(group_by_length), on_error
        self.n_per_task = int(n_per_task)
        self.data_seed = self.seed if data_seed is None else int(data_seed)
        self.hub_id, self.data_files = hub_id, plain(data_files)
        self.order, self.append_eos = order, bool(append_eos)
        self.truncation, self.val_rows = truncation, val_rows
        self.train_dataset: GroupDataset | None = None
        self.val_dataset: GroupDataset | None = None
        self.stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        """Download hub data into the ``datasets`` cache (rank 0 only; local sources do nothing)."""
        if self.root is None:
            for hub_id, config, files in SOURCES[self.source].hub_data(self.tasks, self.hub_id, self.data_files):
                load_hub_dataset(hub_id, config, split=self.split, data_files=files)

    @cached_property
    def bank(self) -> TemplateBank:
        """The template bank of ``data.templates``, loaded on first use; DataError: as ``load_template_bank``."""
        return load_template_bank(self.templates if str(self.templates) == "own" else _abs(self.templates))

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Build ``train_dataset``, ``val_dataset`` and ``stats`` (once; later calls only tokenize
        if a tokenizer was attached since).

        ``stats`` keys: ``source``, ``templates``, ``records_per_task`` (usable records loaded),
        ``train_records_per_task``, ``val_records``, ``train_groups``, ``val_groups``,
        ``groups_per_task``, ``skipped`` (bad rows skipped with ``on_error=skip``),
        ``unmatched_flan`` and ``incomplete_flan`` (per task, ``flan`` only; see
        ``sources.flan.load_flan``), ``same_target_negatives``, ``truncated`` and
        ``response_over_cutoff`` and ``response_cut`` (rows, after tokenization), ``keyword_data_unparsed`` (CSV).

        Raises:
            DataError: bad data (see the sources, ``grouping`` and ``templates``).
        """
        if self.train_dataset is None:
            self._build()
        if self.tokenizer is not None and self.train_dataset.encoded is None:
            self._encode()

    def _build(self) -> None:
        stats: dict[str, Any] = {"source": self.source, "skipped": 0}
        train, val = SOURCES[self.source].groups(self, stats)
        stats["train_groups"], stats["val_groups"] = len(train), len(val)
        stats["pairs_per_item"] = self.pairs_per_item
        self.train_dataset, self.val_dataset = GroupDataset(train), GroupDataset(val)
        self.stats = stats
        if stats["skipped"]:
            log.warning("data: skipped %d bad row(s) (data.on_error=skip)", stats["skipped"])
        log.info(
            "data: %s, %d train / %d val groups from %d tasks (templates: %s)",
            self.source, len(train), len(val), len(stats["records_per_task"]), stats["templates"],
        )

    def _encode(self) -> None:
        enc = Encoder(self.tokenizer, self.prompt_format, self.cutoff_len, append_eos=self.append_eos,
                      truncation=self.truncation)
        self.train_dataset.encoded = enc.encode_groups(self.train_dataset.groups)
        self.val_dataset.encoded = enc.encode_groups(self.val_dataset.groups)
        self.stats["truncated"] = enc.truncated
        self.stats["response_over_cutoff"] = enc.response_over_cutoff
        self.stats["response_cut"] = enc.response_cut
        if enc.response_cut:
            log.warning("data: %d row(s) lost response tokens to data.truncation=sequence at cutoff_len=%d",
                        enc.response_cut, self.cutoff_len)
        if enc.truncated:
            how = "had their input shortened" if self.truncation == "input" else "were cut on the right"
            log.info("data: %d row(s) %s to fit cutoff_len=%d", enc.truncated, how, self.cutoff_len)
        if enc.response_over_cutoff:
            log.warning(
                "data: %d row(s) have a response longer than cutoff_len=%d allows; kept whole, the row is longer",
                enc.response_over_cutoff, self.cutoff_len,
            )

    # ------------------------------------------------------------------ loaders
    def _require_encoded(self, ds: GroupDataset | None) -> GroupDataset:
        if ds is None:
            raise DataError("call setup() first")
        if ds.encoded is None:
            raise DataError("the DataModule has no tokenizer; pass tokenizer=... (or set .tokenizer) before setup()")
        return ds

    def train_dataloader(self) -> DataLoader:
        """Micro-batches of ``batch_size / pairs_per_item`` groups in the order of ``data.order``.

        Without ``group_by_length``: a ``DistributedSampler`` (also with one process) whose order
        depends only on ``(seed, epoch)`` (``sequential``: the dataset order); with it: a
        :class:`LengthGroupedSampler` (:func:`~coin_lightning.data.samplers.train_sampler`). Both are
        rank-aware and left in place by Lightning; items are whole groups, so they stay whole. The
        loader is torchdata's ``StatefulDataLoader``, so mid-epoch checkpoints resume exactly.
        """
        ds = self._require_encoded(self.train_dataset)
        items = self.batch_size // self.pairs_per_item
        common = dict(
            collate_fn=Collator(self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        sampler = train_sampler(ds, ds.lengths, items, self.order, self.group_by_length, self.seed)
        # A stateful loader: Lightning stores its position in checkpoints, so a resume from a
        # mid-epoch checkpoint continues with the very next micro-batch (exact resume).
        return StatefulDataLoader(ds, batch_size=items, sampler=sampler, **common)

    def val_dataloader(self) -> DataLoader | list:
        """Validation micro-batches of ``eval_batch_size / pairs_per_item`` groups, in order
        (``[]`` when ``val_size=0``, which makes Lightning skip validation)."""
        ds = self._require_encoded(self.val_dataset)
        if len(ds) == 0:
            return []
        return DataLoader(
            ds,
            batch_size=self.eval_batch_size // self.pairs_per_item,
            shuffle=False,
            collate_fn=Collator(self.tokenizer.pad_token_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
