"""Lightning callbacks: peft adapter export and token throughput."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor

from coin_lightning.io import atomic_path

log = logging.getLogger(__name__)


class AdapterCheckpoint(L.Callback):
    """Write the LoRA adapter in peft's format (``adapter_model.safetensors`` + ``adapter_config.json``).

    The directory is written atomically (a temporary sibling, then a rename), on rank 0 only, at the
    end of training and, with ``every_n_train_steps``, also during training under
    ``<dirpath>/step_<n>``. The result loads with ``PeftModel.from_pretrained(base, dirpath)``.

    Args:
        dirpath: destination directory of the final adapter.
        every_n_train_steps: also export every n optimizer steps (0 = only at the end).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 0) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self.written: list[Path] = []
        self._last_step = -1

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path) -> None:
        """Save ``pl_module.model`` (a ``PeftModel``) to ``path`` atomically (rank 0; others wait)."""
        if trainer.is_global_zero:
            with atomic_path(path) as tmp:
                pl_module.model.save_pretrained(str(tmp), safe_serialization=True)
            self.written.append(path)
            log.info("adapter written to %s", path)
        trainer.strategy.barrier("adapter_export")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:  # noqa: D102
        n = self.every_n_train_steps
        step = trainer.global_step
        if n and step > 0 and step % n == 0 and step != self._last_step:
            self._last_step = step
            self.export(trainer, pl_module, self.dirpath.parent / f"{self.dirpath.name}_step_{step}")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self.export(trainer, pl_module, self.dirpath)


def _rows(batch: dict) -> int:
    return int(batch["input_ids"].shape[0])


def _tokens(batch: dict) -> int:
    return int(batch["attention_mask"].sum())


class TokenThroughput(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` counting sequences (rows) and real tokens of CoIN batches.

    Logs ``train|samples_per_sec`` (sequences/s) and ``train|items_per_sec`` (non-padding tokens/s)
    and their ``device|`` variants, averaged over ``window_size`` steps.
    """

    def __init__(self, window_size: int = 10, **kwargs: Any) -> None:
        super().__init__(batch_size_fn=_rows, length_fn=_tokens, window_size=window_size, **kwargs)
