"""The global batch and the validation schedule, in optimizer steps, turned into Lightning Trainer keys.

The paper (Yan et al. 2024, Sec. 4.1) trains with a global batch of 64 examples: a micro-batch of 2 and
32 accumulation steps on one GPU. With ``data.global_batch_size`` set, the accumulation follows the
number of processes so the global batch stays the same on any hardware::

    trainer.accumulate_grad_batches = data.global_batch_size / (data.batch_size x devices x num_nodes)

Validation is given in optimizer steps (``data.val_every_n_steps``) and converted to Lightning's
``val_check_interval``, which counts micro-batches (``x accumulate_grad_batches``);
``data.val_batches`` caps the batches per validation (Lightning's ``limit_val_batches``).
Everything here reads the config only: no process is started, no model or data is loaded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from coin_lightning.data.config import DataArgs
from coin_lightning.errors import ConfigError

log = logging.getLogger(__name__)


def _accelerator_count(accelerator: str) -> int:
    """Devices of an accelerator visible to this process, by Lightning's public accelerator API."""
    accelerator = str(accelerator).lower()
    if accelerator in ("gpu", "cuda", "auto"):
        from lightning.pytorch.accelerators import CUDAAccelerator

        if CUDAAccelerator.is_available():
            return CUDAAccelerator.auto_device_count()
        if accelerator != "auto":
            return 0
    return 1  # mps (one device), cpu and auto without CUDA (Lightning's cpu "auto" is one process)


def resolve_devices(devices: Any, accelerator: str = "auto") -> int:
    """The number of processes per node that ``Trainer(devices=..., accelerator=...)`` would start.

    Args:
        devices: an int (``-1`` = all), a list of device indices, a string (``"auto"``, ``"-1"``,
            ``"4"``, ``"0,1,3"``), as Lightning's ``Trainer`` accepts them.
        accelerator: ``cpu``, ``gpu``/``cuda``, ``mps`` or ``auto`` (for ``auto``/``-1`` only).

    Raises:
        ConfigError: an unreadable value, or ``auto``/``-1`` on an accelerator with no device here.
    """
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, int) and not isinstance(devices, bool):
        n = devices
    else:  # a string, or True/False (refused below)
        text = str(devices).strip()
        if text == "auto" or text == "-1":
            n = -1
        elif "," in text:
            n = len([t for t in text.split(",") if t.strip()])
        elif text.isdigit():
            n = int(text)
        else:
            raise ConfigError(f"trainer.devices={devices!r}: give a count, a list of indices, -1 or auto")
    if n == -1:
        n = _accelerator_count(accelerator)
        if n == 0:
            raise ConfigError(f"trainer.devices={devices} with trainer.accelerator={accelerator}: no such device here")
    if n < 1:
        raise ConfigError(f"trainer.devices={devices!r} must be at least 1 (or -1/auto)")
    return n


@dataclass(frozen=True)
class BatchPlan:
    """Trainer keys derived from the global batch and the validation schedule."""

    world_size: int
    """Processes: devices per node x nodes."""
    accumulate_grad_batches: int
    """Micro-batches per optimizer step on each process."""
    global_batch_size: int
    """Examples per optimizer step over all processes: micro-batch x accumulation x world size."""
    val_check_interval: Any
    """Lightning's value: micro-batches between validations (int), or the configured value unchanged."""
    limit_val_batches: Any
    """Lightning's value: batches per validation (int), or the configured value unchanged."""


def plan_batches(
    batch_size: int,
    devices: int,
    num_nodes: int = 1,
    global_batch_size: int | None = None,
    accumulate_grad_batches: int = 1,
    val_every_n_steps: int | None = None,
    val_check_interval: Any = 1.0,
    val_batches: int | None = None,
    limit_val_batches: Any = 1.0,
) -> BatchPlan:
    """Gradient accumulation and validation interval for a global batch, on ``devices x num_nodes`` processes.

    Args:
        batch_size: examples per micro-batch per process (``data.batch_size``).
        devices, num_nodes: processes per node (resolved, see :func:`resolve_devices`) and nodes.
        global_batch_size: examples per optimizer step over all processes (paper: 64); ``None``
            keeps ``accumulate_grad_batches`` as given.
        val_every_n_steps: optimizer steps between validations; ``None`` keeps ``val_check_interval``.
        val_batches: batches per validation; ``None`` keeps ``limit_val_batches``.

    Raises:
        ConfigError: a non-positive value, or a global batch that is not a multiple of
            ``batch_size x devices x num_nodes`` (the message gives the numbers).
    """
    for key, value in (("data.batch_size", batch_size), ("trainer.num_nodes", num_nodes),
                       ("trainer.accumulate_grad_batches", accumulate_grad_batches)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    for key, value in (("data.global_batch_size", global_batch_size), ("data.val_every_n_steps", val_every_n_steps),
                       ("data.val_batches", val_batches)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "data.val_batches" else 1)):
            raise ConfigError(f"{key}={value!r} must be a positive integer or null")
    world = devices * num_nodes
    per_step = batch_size * world
    if global_batch_size is not None:
        if global_batch_size % per_step:
            raise ConfigError(
                f"data.global_batch_size={global_batch_size} is not a multiple of data.batch_size={batch_size} "
                f"x trainer.devices={devices} x trainer.num_nodes={num_nodes} = {per_step}; choose a global batch "
                f"that is, or a micro-batch/device count that divides it"
            )
        accumulate_grad_batches = global_batch_size // per_step
    if val_every_n_steps is not None:
        val_check_interval = val_every_n_steps * accumulate_grad_batches
    return BatchPlan(
        world_size=world,
        accumulate_grad_batches=accumulate_grad_batches,
        global_batch_size=per_step * accumulate_grad_batches,
        val_check_interval=val_check_interval,
        limit_val_batches=limit_val_batches if val_batches is None else val_batches,
    )


def apply_batch_plan(data: DataArgs, trainer: dict) -> BatchPlan:
    """Compute :func:`plan_batches` from a job's ``data`` and ``trainer`` (:class:`~coin_lightning.training.checks.TrainRun`)
    and write the result into ``trainer`` (``accumulate_grad_batches``, ``val_check_interval``, ``limit_val_batches``).

    An integer interval from ``data.val_every_n_steps`` sets ``check_val_every_n_epoch: null``
    (Lightning then counts it across epochs and accepts an interval longer than one epoch); a
    fractional ``val_check_interval`` gets ``check_val_every_n_epoch: 1``, which Lightning requires.

    Raises:
        ConfigError: see :func:`resolve_devices` and :func:`plan_batches`; also more GPUs asked for
            than this machine has (when it has any: a machine without CUDA is reported elsewhere).
    """
    accelerator = trainer.get("accelerator", "auto")
    devices = resolve_devices(trainer.get("devices", "auto"), accelerator)
    visible = _accelerator_count(accelerator)
    if str(accelerator).lower() in ("gpu", "cuda") and 0 < visible < devices:
        raise ConfigError(f"trainer.devices={devices} but this machine has {visible} GPU(s); set trainer.devices={visible} "
                          "(data.global_batch_size keeps the global batch)")
    plan = plan_batches(
        batch_size=data.batch_size,
        devices=devices,
        num_nodes=trainer.get("num_nodes", 1),
        global_batch_size=data.global_batch_size,
        accumulate_grad_batches=trainer.get("accumulate_grad_batches", 1),
        val_every_n_steps=data.val_every_n_steps,
        val_check_interval=trainer.get("val_check_interval", 1.0),
        val_batches=data.val_batches,
        limit_val_batches=trainer.get("limit_val_batches", 1.0),
    )
    given = trainer.get("accumulate_grad_batches", 1)
    if data.global_batch_size is not None and given != plan.accumulate_grad_batches:
        log.info("trainer.accumulate_grad_batches=%d (not %s): data.global_batch_size=%d / (data.batch_size=%d x "
                 "%d device(s) x %d node(s))", plan.accumulate_grad_batches, given, data.global_batch_size,
                 data.batch_size, devices, trainer.get("num_nodes", 1))
    trainer.update(accumulate_grad_batches=plan.accumulate_grad_batches, val_check_interval=plan.val_check_interval,
                   limit_val_batches=plan.limit_val_batches)
    if isinstance(plan.val_check_interval, float):  # a fraction of an epoch: Lightning needs epochs counted
        if trainer.get("check_val_every_n_epoch") is None:
            trainer["check_val_every_n_epoch"] = 1
    elif data.val_every_n_steps is not None:  # counted in steps across epochs, never refused as
        trainer["check_val_every_n_epoch"] = None  # longer than one epoch of a small dataset
    return plan


def apply_epoch_fraction(data: DataArgs, trainer: dict, train_examples: int, global_batch_size: int) -> int | None:
    """Set ``data.val_every_n_steps`` from ``data.val_every_epoch_fraction`` and the training data's
    size, then re-apply :func:`apply_batch_plan` (idempotent) so the trainer's interval follows.

    The interval is ``int(fraction x train_examples / global batch)`` optimizer steps (at least 1): the
    reference's ``eval_steps = save_steps = int(len(train_data) / batch_size / 8)`` (luka-group/CoIN
    ``run_contrastive_llama.py`` L426-428) with ``fraction = 1/8``. A checkpoint callback that reads
    ``${data.val_every_n_steps}`` (``experiment=coin_alpaca``) saves at the same steps.

    Args:
        data, trainer: the job's ``data`` and ``trainer``, after :func:`apply_batch_plan`.
        train_examples: examples (pairs) in the training set, e.g. 2 x groups for ``pair_of_pairs``.
        global_batch_size: examples per optimizer step (the :class:`BatchPlan` of :func:`apply_batch_plan`).

    Returns:
        The interval in optimizer steps, or ``None`` when ``data.val_every_epoch_fraction`` is unset.
    """
    fraction = data.val_every_epoch_fraction
    if fraction is None:
        return None
    steps = max(1, int(train_examples / global_batch_size * fraction))
    data.val_every_n_steps = steps
    apply_batch_plan(data, trainer)
    log.info("data.val_every_n_steps=%d: %s of %d training examples at a global batch of %d", steps, fraction,
             train_examples, global_batch_size)
    return steps
