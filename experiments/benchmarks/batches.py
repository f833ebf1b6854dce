"""Benchmark inputs from real data: training micro-batches and evaluation rows, and padding efficiency.

Training batches come from the project's own pipeline (``CoinDataModule``: templates, pair-of-pairs
groups, tokenization, left-padding collate), on the GLUE training data of ``../shared/data`` when it
is there, else on the embedded synthetic tasks. Evaluation rows are a seeded sample of a GLUE
validation split (or an embedded task's test split) with one of the project's clean instructions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
"""``<repo>/../shared/data`` (the shared data pack), as the tests use."""


@dataclass
class TrainData:
    """The fixed training batches of the benchmark and the padding statistics of one epoch."""

    source: str
    """``glue`` or ``embedded``."""
    batches: list[dict]
    """CONTRACTS.md batches (CPU tensors) timed by every step variant."""
    padding: dict[str, Any] = field(default_factory=dict)
    """Epoch statistics with and without length grouping (see :func:`padding_stats`)."""


def padding_stats(loader) -> dict[str, Any]:
    """Real tokens / computed tokens over every batch of ``loader`` (one epoch).

    Returns:
        ``efficiency`` (real / ``R x T`` summed over batches), ``batches``, ``real_tokens``,
        ``computed_tokens``, ``mean_width`` (mean ``T``), ``response_tokens_per_row`` and
        ``whole_items`` (every batch has ``R = 2 num_pairs`` or ``3 num_pairs`` rows, i.e. no group
        was split).
    """
    real = computed = widths = n = rows = resp = 0
    whole = True
    for b in loader:
        mask = b["attention_mask"]
        R, T = mask.shape
        real += int(mask.sum())
        computed += R * T
        widths += T
        rows += R
        resp += int((b["labels"] != -100).sum())
        n += 1
        whole &= R in (2 * int(b["num_pairs"]), 3 * int(b["num_pairs"]))
    return {
        "efficiency": real / max(computed, 1),
        "batches": n,
        "real_tokens": real,
        "computed_tokens": computed,
        "mean_width": widths / max(n, 1),
        "response_tokens_per_row": resp / max(rows, 1),
        "whole_items": whole,
    }


def resolve_source(data: str, root: Path) -> str:
    """``auto`` -> ``glue`` when ``<root>/glue`` exists, else ``embedded``.

    Raises:
        FileNotFoundError: ``glue`` requested but ``<root>/glue`` is missing.
    """
    if data == "auto":
        return "glue" if (root / "glue").is_dir() else "embedded"
    if data == "glue" and not (root / "glue").is_dir():
        raise FileNotFoundError(f"--data glue: {root / 'glue'} does not exist (set --data-root)")
    return data


def train_data(
    tokenizer,
    source: str,
    root: Path,
    batch_pairs: int,
    seq_len: int,
    count: int,
    seed: int = 0,
    tasks: list[str] | None = None,
) -> TrainData:
    """Build the data module, measure padding with and without length grouping, pick ``count`` batches.

    The timed batches are length-grouped batches of width about ``seq_len`` with typical padding
    (:func:`pick_batches`), so every step variant sees the same real rows.

    Args:
        tokenizer: the model's tokenizer.
        source: ``glue`` (``<root>/glue``) or ``embedded``.
        batch_pairs: ``data.batch_size`` (pairs per micro-batch; 4 pairs = 8 rows).
        seq_len: target padded width of the timed batches.
        count: number of timed batches.
        tasks: restrict the source's tasks (default: all).

    Raises:
        ValueError: no batches.
    """
    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule

    kwargs: dict[str, Any] = {"root": str(root / "glue")} if source == "glue" else {"n_per_task": 100}
    args = DataArgs(source=source, batch_size=batch_pairs, group_by_length=True, tasks=tasks, val_size=0, **kwargs)
    dm = CoinDataModule(args, tokenizer=tokenizer, seed=seed)
    dm.setup("fit")
    epoch = list(dm.train_dataloader())
    grouped = padding_stats(epoch)
    dm.args.group_by_length = False
    random_order = padding_stats(dm.train_dataloader())
    dm.args.group_by_length = True
    picked = pick_batches(epoch, seq_len, count, grouped["efficiency"])
    stats = {
        "length_grouped": grouped,
        "random_batches": random_order,
        "pairs_per_batch": batch_pairs,
        "group": dm.group,
        "groups": len(dm.train_dataset),
        "tasks": sorted(dm.stats.get("records_per_task", {})),
    }
    return TrainData(source=source, batches=picked, padding=stats)


def pick_batches(candidates: list[dict], seq_len: int, count: int, typical_efficiency: float) -> list[dict]:
    """Choose ``count`` batches of width near ``seq_len`` whose padding is typical of the epoch.

    Batches whose width ``T`` is within ``max(8, seq_len / 8)`` tokens of ``seq_len`` are ranked by how
    close their real/computed token ratio is to ``typical_efficiency`` (the epoch's), then by width
    distance and loader order; when fewer than ``count`` are that close in width, the closest widths
    are taken. A batch that happens to be unusually well or badly padded therefore does not decide the
    FLOP and time figures.

    Raises:
        ValueError: no candidates.
    """
    if not candidates:
        raise ValueError("no training batches to choose from")
    tol = max(8, seq_len // 8)

    def width(i: int) -> int:
        return int(candidates[i]["input_ids"].shape[1])

    def efficiency(i: int) -> float:
        mask = candidates[i]["attention_mask"]
        return float(mask.sum()) / mask.numel()

    near = [i for i in range(len(candidates)) if abs(width(i) - seq_len) <= tol]
    if len(near) >= count:
        order = sorted(near, key=lambda i: (abs(efficiency(i) - typical_efficiency), abs(width(i) - seq_len), i))
    else:
        order = sorted(range(len(candidates)), key=lambda i: (abs(width(i) - seq_len), i))
    return [candidates[i] for i in order[:count]]


@dataclass
class EvalRows:
    """Rows of one task under one instruction."""

    task: str
    """Task name."""
    instruction: str
    """One of the project's clean instructions for it."""
    contents: list[str]
    """Content strings (PromptBench format)."""
    label_words: tuple[str, ...]
    """Answer words by label id."""


def eval_rows(source: str, root: Path, task: str | None, n: int, seed: int = 0, index: int = 0) -> EvalRows:
    """A seeded sample of ``n`` validation rows and the clean instruction number ``index`` of the task.

    Args:
        source: ``glue`` (default task ``sst2``) or ``embedded`` (default ``embedded_parity``).

    Raises:
        coin_lightning.eval.instructions.sets.InstructionError: the task has no clean instructions.
    """
    from coin_lightning.eval.engine.tasks import load_task
    from coin_lightning.eval.instructions.defaults import default_instruction_path
    from coin_lightning.eval.instructions.sets import load_instruction_file

    instructions = load_instruction_file(default_instruction_path())
    name = task or ("sst2" if source == "glue" else "embedded_parity")
    t = load_task(name, root / "glue", n, seed)
    text = instructions.instructions_for(name, "clean")[index]
    return EvalRows(task=name, instruction=text, contents=list(t.contents), label_words=tuple(t.label_words))


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Move a batch's tensors to ``device`` (other values unchanged)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
