"""Contrastive groups: (original, positive, hard negative), one dataset item each. Seeded, reproducible.

Definitions (CoIN, Yan et al. 2024, Section 3.2; reference code luka-group/CoIN):

- *original*: record ``r`` rendered with template ``A`` of its task;
- *positive* (paraphrase): the same record ``r`` under another template ``B != A`` of the same task
  whose target is the same (:meth:`TemplateBank.paraphrase_sets`), so both expect the same output;
- *hard negative*: the same template ``A`` applied to another record ``r'`` of the same task,
  preferring one with a different target.

Two groupings (``data.group``), each one dataset item, so a ``DistributedSampler`` (which shards
items) can never separate an example from its hard negative:

- ``pair_of_pairs`` (default; the reference code's layout): the hard negative is a full pair,
  ``(r@A, r@B)`` and ``(r'@A, r'@B')`` with its own paraphrase template ``B'``. Collated as originals
  then paraphrases, the InfoNCE matrix over the batch holds ``r@A`` vs ``r'@B'`` and ``r'@A`` vs
  ``r@B`` (both directions). In the reference CSV these are rows ``2k`` and ``2k+1``.
- ``hard_negative_column``: one pair ``(r@A, r@B)`` plus the hard negative ``r'@A`` as one extra
  negative column for the anchor (rows ``[2P, 3P)`` of the batch, no language-model loss on them).

Hard-negative choice (``negatives``): ``length`` (default) takes, among records with a different
target, one of the two nearest in (jittered) input length, which keeps rows of one group similar in
length (padding efficiency) and the negative close in surface form; ``random`` takes a uniformly
random different-target record (closest to the paper's description). Either way every record is an
anchor once per epoch: ``pair_of_pairs`` pairs up records of different targets (both pairs of a
group are anchors, each the other's hard negative) and gives a leftover record a borrowed partner
(which then occurs twice); ``hard_negative_column`` has one group per record. A negative has the
same target only when the task has no record with another target (``stats["same_target_negatives"]``).
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from functools import partial

from coin_lightning.data.records import DataError, Example, Group, Pair, Record
from coin_lightning.data.selection import records_by_task
from coin_lightning.data.templates import DERIVED_FIELDS, Template, TemplateBank

GROUP_MODES = ("pair_of_pairs", "hard_negative_column")
"""Values of ``data.group``."""
PAIRS_PER_ITEM = {"pair_of_pairs": 2, "hard_negative_column": 1}
"""Anchor pairs per dataset item; ``data.batch_size`` (pairs) must be a multiple of it."""
NEGATIVE_MODES = ("length", "random")
"""Values of ``data.negatives`` (how a hard negative is picked among different-target records)."""
LENGTH_JITTER = 0.1
"""``negatives=length``: records are ordered by ``log(1 + chars) + U(-j, j)``, so a negative is
length-matched to within about this fraction while the seed still varies the partner."""


def _pick_templates(flat: list[tuple[tuple[int, ...], int]], rng: random.Random) -> tuple[int, int, int]:
    """Template ``A`` uniform over all usable templates (``flat``: (paraphrase set, index) pairs), and two
    paraphrases ``B``, ``B'`` of it drawn from the rest of its set."""
    s, a = flat[rng.randrange(len(flat))]
    others = [t for t in s if t != a]
    return a, others[rng.randrange(len(others))], others[rng.randrange(len(others))]


def _render(templates: Sequence[Template], rs: list[Record], values: list[dict[str, str]], i: int, index: int) -> Example:
    """Record ``rs[i]`` (placeholder values ``values[i]``) under ``templates[index]``."""
    inp, tgt = templates[index].render(values[i])
    return Example(rs[i].task, rs[i].uid, templates[index].name, inp, tgt, templates[index].input, values[i])


def _partners(rs: list[Record], answers: list[str], lengths: list[int], rng: random.Random, mode: str) -> tuple[list[int], list[tuple[int, int]], int]:
    """Order records and find hard-negative partners; returns (order, pairs, same_target_count).

    ``order`` is a permutation of ``range(len(rs))``: sorted by jittered log length (``length``) or
    random (``random``); ``pairs`` partition as many records as possible into different-target
    pairs of neighbours in that order, then give each leftover record the nearest different-target
    record as partner (that partner then occurs twice).
    """
    n = len(rs)
    base = [r.uid.split("#", 1)[0] for r in rs]  # repeats of one record (uid "<uid>#<k>") are never partners

    def differs(i: int, k: int) -> bool:
        return answers[k] != answers[i] and base[k] != base[i]

    order = list(range(n))
    rng.shuffle(order)
    if mode == "length":
        jitter = {i: math.log1p(lengths[i]) + rng.uniform(-LENGTH_JITTER, LENGTH_JITTER) for i in order}
        order.sort(key=jitter.__getitem__)
    pos = {i: p for p, i in enumerate(order)}

    def nearest_different(i: int) -> int | None:
        p = pos[i]
        left = next((order[q] for q in range(p - 1, -1, -1) if differs(i, order[q])), None)
        right = next((order[q] for q in range(p + 1, n) if differs(i, order[q])), None)
        if left is None or right is None:
            return left if right is None else right
        return left if rng.random() < 0.5 else right

    pairs: list[tuple[int, int]] = []
    pending: list[int] = []
    for i in order:
        if pending and differs(i, pending[-1]):
            pairs.append((pending.pop(), i))
        else:
            pending.append(i)
    same = 0
    for i in pending:
        j = nearest_different(i)
        if j is None:  # every other record has the same answer: take a neighbour, counted
            p = pos[i]
            cands = ([order[q] for q in (p - 1, p + 1) if 0 <= q < n and base[order[q]] != base[i]]
                     or [k for k in range(n) if base[k] != base[i]])
            if not cands:
                raise DataError(f"task {rs[i].task!r} has a single record; a hard negative needs another record of the task")
            j = rng.choice(cands)
            same += 1
        pairs.append((i, j))
    return order, pairs, same


def build_groups(
    records: Sequence[Record],
    bank: TemplateBank,
    group: str = "pair_of_pairs",
    seed: int = 0,
    pool: str = "main",
    negatives: str = "length",
    stats: dict | None = None,
) -> list[Group]:
    """Turn records into contrastive groups (see the module docstring for the definitions).

    Args:
        records: validated records (:func:`~coin_lightning.data.selection.validate_records`); every record is
            an anchor once.
        bank: the template bank.
        group: ``pair_of_pairs`` or ``hard_negative_column`` (checked by :class:`~coin_lightning.data.config.DataArgs`).
        seed: the same seed and inputs give the same groups (templates, partners and order); each
            task has its own random stream, so adding a task leaves the others' groups unchanged.
        pool: template pool, ``main`` or ``all``.
        negatives: ``length`` or ``random`` (see the module docstring).
        stats: if given, ``same_target_negatives`` and ``groups_per_task`` are added.

    Returns:
        Groups in a seeded random order, tasks interleaved.

    Raises:
        DataError: a task with a single record (no hard negative possible).
    """
    stats = {} if stats is None else stats
    groups: list[Group] = []
    per_task: dict[str, int] = stats.setdefault("groups_per_task", {})
    stats["same_target_negatives"] = stats.get("same_target_negatives", 0)
    for task, rs in records_by_task(records).items():
        rng = random.Random(f"{seed}/groups/{task}")
        sets = bank.paraphrase_sets(task, pool)  # not empty: validate_records refuses a task without a set
        values = [bank.values(r) for r in rs]
        templates = bank.for_task(task)
        render = partial(_render, templates, rs, values)
        # the expected output of a record: its rendered target under the task's (shared) target template
        target_tpl = templates[sets[0][0]]
        answers = [target_tpl.render(v)[1] for v in values]
        lengths = [sum(len(x) for k, x in v.items() if k not in DERIVED_FIELDS) for v in values]  # input chars
        _, partners, same = _partners(rs, answers, lengths, rng, negatives)
        stats["same_target_negatives"] += same

        flat = [(s, a) for s in sets for a in s]  # A uniform over all usable templates
        before = len(groups)
        if group == "pair_of_pairs":
            for i, j in partners:
                a, b, b2 = _pick_templates(flat, rng)
                groups.append(
                    Group(pairs=(Pair(render(i, a), render(i, b)), Pair(render(j, a), render(j, b2))))
                )
        else:
            partner = {}
            for i, j in partners:  # each record of a different-target pair is the other's negative
                partner.setdefault(i, j)
                partner.setdefault(j, i)
            for i in range(len(rs)):
                a, b, _ = _pick_templates(flat, rng)
                groups.append(Group(pairs=(Pair(render(i, a), render(i, b)),), negatives=(render(partner[i], a),)))
        per_task[task] = len(groups) - before
    random.Random(f"{seed}/groups/order").shuffle(groups)
    return groups


def groups_from_pairs(pairs: Sequence[tuple[Record, Record]], group: str = "pair_of_pairs") -> list[Group]:
    """Groups from pre-rendered record pairs (the CoIN CSV: row ``2k`` and its hard negative ``2k+1``).

    Each record carries ``meta["original"]``, ``meta["paraphrased"]`` and ``target``.
    ``pair_of_pairs``: one group per row pair, exactly the reference's micro-batch of 2.
    ``hard_negative_column``: two groups per row pair, each row the anchor with the other's original
    as its negative column.
    """

    def ex(r: Record, which: str) -> Example:
        return Example(r.task, r.uid, f"csv:{which}", r.meta[which], str(r.target))

    groups = []
    for a, b in pairs:
        pa, pb = Pair(ex(a, "original"), ex(a, "paraphrased")), Pair(ex(b, "original"), ex(b, "paraphrased"))
        if group == "pair_of_pairs":
            groups.append(Group(pairs=(pa, pb)))
        else:
            groups.append(Group(pairs=(pa,), negatives=(pb.original,)))
            groups.append(Group(pairs=(pb,), negatives=(pa.original,)))
    return groups
