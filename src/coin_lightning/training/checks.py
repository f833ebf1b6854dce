"""The typed training job (:class:`TrainRun`) and its checks before any model loads, of how the job's processes get
started (Lightning launchers under Hydra: :func:`check_launch`), and of the data's size against
the trainer's validation interval. Every problem is one line naming the key (a ``ConfigError`` or
``ModelLoadError``, both :class:`coin_lightning.errors.UserError`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from coin_lightning.config_types import check_range
from coin_lightning.data.config import DataArgs
from coin_lightning.errors import ConfigError
from coin_lightning.losses import LossArgs
from coin_lightning.model.checks import check_adapter, check_checkpoint, check_model_ranges
from coin_lightning.model.config import ModelArgs
from coin_lightning.model.loading import check_gpu_needs
from coin_lightning.training.callbacks import AdapterCheckpoint
from coin_lightning.training.interrupt import InterruptCheckpoint


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    return float(value)


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer")
    return value


def check_trainer(trainer: Mapping, model: ModelArgs) -> None:
    """Check the ``trainer`` mapping's values that Lightning would only trip over later (or never).

    Raises:
        ConfigError: ``max_steps`` 0 or below -1 (0 trains nothing and writes no adapter),
            ``max_epochs`` < -1 or 0, ``val_check_interval`` not a positive int or a fraction in (0, 1],
            ``gradient_clip_val`` < 0, bf16 on a CPU (``accumulate_grad_batches``: the batch plan,
            :func:`~coin_lightning.training.batching.plan_batches`).
    """
    max_steps = _integer("trainer.max_steps", trainer.get("max_steps", -1))
    if max_steps == 0 or max_steps < -1:
        raise ConfigError(f"trainer.max_steps={max_steps} trains nothing: give a positive number of optimizer steps, or -1 for whole epochs")
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (_integer("trainer.max_epochs", max_epochs) == 0 or max_epochs < -1):
        raise ConfigError(f"trainer.max_epochs={max_epochs} trains nothing: give a positive number, or -1")
    if max_steps == -1 and max_epochs == -1:
        raise ConfigError("trainer.max_steps=-1 and trainer.max_epochs=-1 never stop: set one of them")
    vci = trainer.get("val_check_interval")
    if vci is not None:
        if isinstance(vci, int) and not isinstance(vci, bool):
            check_range("trainer.val_check_interval", vci, low=1)
        else:
            check_range("trainer.val_check_interval", _number("trainer.val_check_interval", vci), low=0, high=1, low_open=True)
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        check_range("trainer.gradient_clip_val", _number("trainer.gradient_clip_val", clip), low=0)
    if str(trainer.get("accelerator")) == "cpu" and ("bf16" in str(trainer.get("precision")) or model.dtype == "bfloat16"):
        raise ConfigError(
            f"trainer.accelerator=cpu with precision={trainer.get('precision')} / model.dtype={model.dtype}: bf16 on a CPU "
            "is about 80x slower than fp32; use trainer.precision=32-true model.dtype=float32, or trainer=gpu"
        )


@dataclass
class TrainRun:
    """One training job, parsed once from a composed ``train.yaml`` by :func:`coin_lightning.conf.train_run`
    and passed down: typed ``model``, ``loss`` and ``data``, the ``_target_`` groups as resolved plain dicts."""

    model: ModelArgs
    """``model``: the base model, LoRA and speed-ups."""
    loss: LossArgs
    """``loss``: lambda, temperature, pooling, cap."""
    data: DataArgs
    """``data``: the DataModule's settings, checked (values and files) when parsed; the batch plan writes its
    validation interval here (:mod:`coin_lightning.training.batching`)."""
    trainer: dict
    """``trainer``: the Lightning Trainer (``_target_``); the batch plan writes accumulation and validation here."""
    optimizer: dict
    """``optimizer``: a partial ``torch.optim`` optimizer (``_target_``, ``_partial_``)."""
    scheduler: dict | None
    """``scheduler``: a partial LR schedule, or ``None``."""
    logger: dict
    """``logger``: the Lightning loggers (``_target_`` entries)."""
    resolve_callbacks: Callable[[dict], dict]
    """The resolved ``callbacks`` group given the final ``data`` (a callback may interpolate
    ``${data.val_every_n_steps}``, known once the training data is read)."""
    seed: Any = 0
    """``seed`` of data order, LoRA initialisation and dropout (checked to be an integer)."""
    warmup_ratio: Any = 0.0
    """``warmup_ratio``: the schedule's warmup as a fraction of the optimizer steps, in [0, 1)."""
    output_dir: str = "."
    """The job directory (``output_dir``)."""
    ckpt_path: str | None = None
    """``ckpt_path``: a Lightning checkpoint to resume from, ``auto``, or ``None``."""
    config: dict = field(default_factory=dict)
    """The whole resolved config: ``summary.json`` and the loggers' hyper-parameters record it."""


def check_train_config(run: TrainRun) -> None:
    """Check every value of a training job that can be checked without loading a model: ``loss``,
    ``model`` (with ``model.adapter``), ``optimizer.lr``, ``warmup_ratio``,
    ``seed``, ``trainer``, the values whose range depends on the model (against its config,
    :func:`~coin_lightning.model.checks.check_model_ranges`) and ``ckpt_path`` (a readable Lightning
    checkpoint of this LoRA setup). Required values, types and ``data`` were refused while parsing.

    Raises:
        ConfigError, ModelLoadError: one line naming the key at fault.
    """
    args = run.model
    check_gpu_needs(args)
    _integer("seed", run.seed)
    check_range("warmup_ratio", _number("warmup_ratio", run.warmup_ratio), low=0, high=1, high_open=True)
    if "lr" in run.optimizer:
        check_range("optimizer.lr", _number("optimizer.lr", run.optimizer["lr"]), low=0, low_open=True)
    check_trainer(run.trainer, args)
    check_model_ranges(args, run.loss.hidden_layer, run.data.cutoff_len)
    if args.adapter:
        check_adapter(args.adapter, args, key="model.adapter")
    if run.ckpt_path and str(run.ckpt_path) != "auto":  # auto: checked once resolved (training/run.py)
        check_checkpoint(str(run.ckpt_path), args)


def check_launch(trainer: L.Trainer) -> None:
    """Refuse FSDP on one device, and local multi-process DDP/FSDP inside a Hydra multirun (``-m``).

    FSDP on one device (``trainer=fsdp`` with ``trainer.devices=1``, one node): torch's FSDP then runs
    ``NO_SHARD`` (nothing to shard), and with ``use_orig_params`` the frozen base's parameters stop
    being registered after the first forward, so its full state dict, which every checkpoint and the
    adapter export take, fails (``FSDP assumes ... is in the state_dict``). Such a run is refused when
    a callback would write one (periodic, interrupt or adapter checkpoints). One device needs no FSDP:
    ``trainer=gpu`` trains the same model with the same numerics; without those callbacks a one-device
    run still exercises Lightning's FSDP wrapping, validation and fit (``make gpu-check`` does).

    Lightning's subprocess launcher starts ranks ``1..N-1`` by re-running the command line with the
    job's ``hydra.run.dir``. That keeps a single run in one directory, but in a multirun the command is
    the whole sweep: every extra rank would start the sweep again, in new output directories
    (Lightning does not support Hydra multirun with its subprocess launcher; see
    Lightning-AI/pytorch-lightning#18175 and facebookresearch/hydra#2070). Processes started by a
    scheduler (SLURM via ``hydra/launcher=submitit_slurm``, ``torchrun``) are not affected: each one
    runs exactly its own job.

    Raises:
        ConfigError: FSDP with one process in all and a checkpoint-writing callback; or Hydra runs in MULTIRUN mode and the trainer
            would spawn more than one local process by re-running the command.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.strategies import FSDPStrategy
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    writers = [cb for cb in trainer.callbacks if isinstance(cb, (ModelCheckpoint, AdapterCheckpoint, InterruptCheckpoint))]
    if isinstance(trainer.strategy, FSDPStrategy) and trainer.num_devices * trainer.num_nodes < 2 and writers:
        raise ConfigError(
            "trainer=fsdp with one device: torch's FSDP shards nothing then (NO_SHARD) and cannot write the "
            "frozen base's state dict that checkpoints and the adapter export take; use trainer=gpu for one "
            "device, or trainer.devices>=2 (or drop every checkpoint: ~callbacks.model_checkpoint "
            "~callbacks.adapter ~callbacks.interrupt +trainer.enable_checkpointing=false)"
        )
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = getattr(trainer.strategy, "launcher", None)
    if (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    ):
        raise ConfigError(
            f"trainer.devices={launcher.num_processes} local processes cannot run inside a Hydra multirun: "
            "Lightning starts the extra ranks by re-running the command, which would restart the sweep. "
            "Run each job without -m, or use hydra/launcher=submitit_slurm (SLURM starts one task per "
            "device; docs/SCALING.md)"
        )
