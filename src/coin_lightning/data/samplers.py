"""The training dataset of whole groups (:class:`GroupDataset`) and its order: shuffled or sequential
(``data.order``), and length-grouped, rank-aware sampling of whole groups (``data.group_by_length=true``).

Items are whole contrastive groups, so any sampler keeps an example with its positive and hard
negative. :class:`LengthGroupedSampler` additionally puts groups of similar padded length into the
same micro-batch (fewer pad tokens), like ``transformers``' ``group_by_length`` (mega-batches of
shuffled items sorted by length), and shards across data-parallel ranks itself.

It subclasses ``torch.utils.data.DistributedSampler``, so Lightning (``use_distributed_sampler=True``,
the default) leaves it in place instead of wrapping or replacing it, and calls its ``set_epoch``
each epoch. Every rank computes the same global order from ``(seed, epoch)`` and takes its own
micro-batches: step ``s`` is ``batch_items * world_size`` consecutive items of the sorted order, of
which rank ``r`` takes the ``r``-th slice, so all ranks see similar lengths in the same step and the
same number of steps. The item count is padded (by repeating items) to a multiple of
``batch_items * world_size``, or trimmed with ``drop_last``.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from coin_lightning.data.collate import EncodedGroup
from coin_lightning.data.records import Group

DATA_ORDERS = ("shuffled", "sequential")
"""Values of ``data.order``: ``shuffled`` (a new seeded order every epoch) or ``sequential`` (the
dataset's order every epoch, as the CoIN reference's ``ContrastiveTrainer``, which passes no
sampler and ``shuffle=False``: for ``coin_csv`` the CSV's row order)."""

MEGA_BATCH_STEPS = 100
"""Steps per length-sorted chunk of :class:`LengthGroupedSampler` (``transformers`` uses 50); larger =
tighter length grouping, less randomness."""


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class LengthGroupedSampler(DistributedSampler):
    """Yield this rank's item indices so that each run of ``batch_items`` indices is one micro-batch
    of similar lengths. Use with ``DataLoader(batch_size=batch_items, sampler=..., drop_last=False)``.

    Args:
        lengths: padded length (tokens) of each item, e.g. ``EncodedGroup.max_len``.
        batch_items: items per micro-batch (``data.batch_size / pairs per item``).
        num_replicas: world size; default from ``torch.distributed`` when initialised, else 1.
        rank: this rank; default from ``torch.distributed`` when initialised, else 0.
        seed: base seed; the order depends on ``seed + epoch`` only, identically on every rank
            (items are shuffled before the per-chunk sort, and so is the order of steps).
        drop_last: trim instead of padding to a whole number of steps.

    Raises:
        ValueError: ``batch_items < 1`` or a rank outside ``[0, num_replicas)``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_items: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ):
        world, me = _world()
        num_replicas = world if num_replicas is None else num_replicas
        rank = me if rank is None else rank
        if batch_items < 1:
            raise ValueError(f"batch_items must be positive, got {batch_items}")
        super().__init__(list(lengths), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self.lengths = [int(x) for x in lengths]
        self.batch_items = int(batch_items)
        step = self.batch_items * self.num_replicas
        n = len(self.lengths)
        self.num_steps = n // step if drop_last else math.ceil(n / step)
        self.num_samples = self.num_steps * self.batch_items
        self.total_size = self.num_steps * step

    def __iter__(self) -> Iterator[int]:
        # all ranks' steps of this epoch, lists of batch_items * num_replicas indices; this rank takes its slice of each
        rng = random.Random(self.seed + self.epoch)
        n = len(self.lengths)
        idx = list(range(n))
        rng.shuffle(idx)
        idx = [idx[i % n] for i in range(self.total_size)]  # repeated to whole steps, or trimmed
        step = self.batch_items * self.num_replicas
        chunk = step * MEGA_BATCH_STEPS
        ordered = [k for c in range(0, len(idx), chunk) for k in sorted(idx[c:c + chunk], key=lambda i: -self.lengths[i])]
        steps = [ordered[s:s + step] for s in range(0, len(ordered), step)]
        rng.shuffle(steps)
        for s in steps:
            yield from s[self.rank * self.batch_items:(self.rank + 1) * self.batch_items]


def train_sampler(dataset: GroupDataset, batch_items: int, order: str = "shuffled", group_by_length: bool = False,
                  seed: int = 0) -> DistributedSampler:
    """The training sampler of ``CoinDataModule``, rank-aware (Lightning leaves it in place).

    Args:
        dataset: the training dataset (whole groups as items; tokenized, for ``GroupDataset.lengths``
            with ``group_by_length``).
        batch_items: items per micro-batch.
        order: ``shuffled`` or ``sequential`` (:data:`DATA_ORDERS`).
        group_by_length: a :class:`LengthGroupedSampler` (``shuffled`` only: it reorders by length).
        seed: base seed of the shuffled orders (``seed + epoch``).

    Returns:
        ``sequential``: a ``DistributedSampler`` with ``shuffle=False`` (rank ``r`` of ``W`` takes
        items ``r, r + W, ...`` in dataset order; one process: the dataset order itself);
        ``shuffled``: the same with ``shuffle=True``, or the length-grouped sampler.
    """
    if group_by_length:
        return LengthGroupedSampler(dataset.lengths, batch_items, seed=seed)
    world, rank = _world()
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=order == "shuffled", seed=seed)


class GroupDataset(Dataset):
    """Dataset whose items are whole contrastive groups (so samplers and ranks never split one).

    ``groups[i]`` is the text form (:class:`~coin_lightning.data.records.Group`), ``encoded[i]`` the
    tokenized form (:class:`~coin_lightning.data.collate.EncodedGroup`) that ``__getitem__`` returns
    once a tokenizer has been applied (before that, the text form).
    """

    def __init__(self, groups: Sequence[Group], encoded: Sequence[EncodedGroup] | None = None):
        self.groups = list(groups)
        self.encoded = None if encoded is None else list(encoded)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> EncodedGroup | Group:
        return self.groups[i] if self.encoded is None else self.encoded[i]

    @property
    def lengths(self) -> list[int]:
        """Padded width (tokens) of each item; needs the encoded form (``CoinDataModule`` checks it)."""
        return [g.max_len for g in self.encoded]
