"""Lightning callbacks: peft adapter export and token throughput."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.strategies import FSDPStrategy

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
        """Save ``pl_module.model`` (a ``PeftModel``) to ``path`` atomically (rank 0; others wait).

        Under FSDP the sharded adapter is first gathered to rank 0 (a collective: every rank takes part).
        """
        state = _fsdp_adapter_state(trainer, pl_module)
        if trainer.is_global_zero:
            with atomic_path(path) as tmp:
                if state is None:
                    # the vocabulary is never resized: no embedding layers, and no hub lookup of the base's config
                    pl_module.model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
                else:
                    _write_peft_adapter(pl_module.model, state, tmp)
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


def _fsdp_adapter_state(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any] | None:
    """Under FSDP: the full adapter tensors keyed as in ``PeftModel.state_dict()`` (complete on rank 0,
    empty elsewhere; all ranks must call). Otherwise ``None``: peft reads the unsharded model itself."""
    if not isinstance(trainer.strategy, FSDPStrategy):
        return None
    full = trainer.strategy.lightning_module_state_dict()  # FSDP full state dict, consolidated on rank 0
    keep = pl_module.trainable_names()
    return {k.removeprefix("model."): v for k, v in full.items() if k in keep}


def _write_peft_adapter(peft_model, state: dict[str, Any], directory: Path) -> None:
    """Write peft's adapter format (safetensors + ``adapter_config.json``) from gathered adapter tensors.

    Used under FSDP: ``PeftModel.save_pretrained(state_dict=...)`` selects adapter tensors by module
    names, which carry FSDP wrapper prefixes under auto-wrapping, and so finds none of the (clean)
    keys of an FSDP state dict. peft's file keys are the model keys without the adapter name.
    """
    import copy

    from safetensors.torch import save_file

    name = peft_model.active_adapter
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k.replace(f".{name}.", "."): v.contiguous() for k, v in state.items()}
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(peft_model.peft_config[name])
    config.inference_mode = True
    config.save_pretrained(str(directory))


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
