"""``CoinDataModule``: records from any source -> contrastive groups -> tokenized batches.

One class serves every source (``conf/data/{embedded,glue,flan,coin_csv}.yaml`` differ in ``source``
and its keys), so the hub, local files and the embedded default behave identically downstream. The
training entry point builds it with ``CoinDataModule(DataArgs.from_config(cfg.data), seed=cfg.seed)``
(:class:`~coin_lightning.data.config.DataArgs`) and calls :meth:`setup` to read and validate the data before any model loads, then
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
from dataclasses import asdict
from functools import cached_property
from typing import Any

import lightning as L
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from coin_lightning.data.collate import Collator, Encoder
from coin_lightning.data.config import DataArgs
from coin_lightning.data.records import DataError
from coin_lightning.data.samplers import GroupDataset, train_sampler
from coin_lightning.data.sources import SOURCES
from coin_lightning.data.sources.base import absolute, load_hub_dataset
from coin_lightning.data.template_files import load_template_bank
from coin_lightning.data.templates import TemplateBank

log = logging.getLogger(__name__)


class CoinDataModule(L.LightningDataModule):
    """Contrastive instruction-tuning data for Lightning: one dataset item = one group.

    The ``data.*`` values read as attributes (``dm.tasks``, ``dm.split``, ``dm.root``, ...: those of
    ``args``), as the sources read them.

    Args:
        args: the checked ``data`` settings (:class:`~coin_lightning.data.config.DataArgs`; ``None`` = defaults).
        tokenizer: a ``transformers`` tokenizer with EOS and pad tokens; needed for dataloaders
            (``setup`` without it builds the text groups only, as the ``show`` command does).
        seed: seeds the validation split, mixture, groups and shuffling (the run's ``cfg.seed``), and the
            embedded records when ``data.data_seed`` is null.
    """

    def __init__(self, args: DataArgs | None = None, tokenizer=None, seed: int = 0):
        super().__init__()
        self.args = args if args is not None else DataArgs()
        self.save_hyperparameters({**asdict(self.args), "seed": seed})
        self.tokenizer, self.seed = tokenizer, seed
        self.train_dataset: GroupDataset | None = None
        self.val_dataset: GroupDataset | None = None
        self.stats: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        args = self.__dict__.get("args")
        if args is None or not hasattr(args, name):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return getattr(args, name)

    # ------------------------------------------------------------------ loading
    def prepare_data(self) -> None:
        """Download hub data into the ``datasets`` cache (rank 0 only; local sources do nothing)."""
        if self.root is None:
            for hub_id, config, files in SOURCES[self.source].hub_data(self.tasks, self.hub_id, self.data_files):
                load_hub_dataset(hub_id, config, split=self.split, data_files=files)

    @cached_property
    def bank(self) -> TemplateBank:
        """The template bank of ``data.templates``, loaded on first use; DataError: as ``load_template_bank``."""
        return load_template_bank(self.templates if str(self.templates) == "own" else absolute(self.templates))

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
        stats.update(train_groups=len(train), val_groups=len(val), pairs_per_item=self.pairs_per_item)
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
        self.stats.update(truncated=enc.truncated, response_over_cutoff=enc.response_over_cutoff, response_cut=enc.response_cut)
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
        sampler = train_sampler(ds, self.batch_size // self.pairs_per_item, self.order, self.group_by_length, self.seed)
        # A stateful loader: Lightning stores its position in checkpoints, so a resume from a
        # mid-epoch checkpoint continues with the very next micro-batch (exact resume).
        return self._loader(StatefulDataLoader, ds, self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Validation micro-batches of ``eval_batch_size / pairs_per_item`` groups, in order
        (``[]`` when ``val_size=0``, which makes Lightning skip validation)."""
        ds = self._require_encoded(self.val_dataset)
        return self._loader(DataLoader, ds, self.eval_batch_size, shuffle=False) if len(ds) else []

    def _loader(self, loader: type, ds: GroupDataset, pairs: int, **kwargs: Any) -> DataLoader:
        """``loader`` over ``ds`` with ``pairs / pairs_per_item`` groups per batch, collated with the pad id."""
        return loader(ds, batch_size=pairs // self.pairs_per_item, collate_fn=Collator(self.tokenizer.pad_token_id),
                      num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)
