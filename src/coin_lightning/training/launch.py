"""Checks on how a job's distributed processes get started (Lightning launchers under Hydra)."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from coin_lightning.errors import ConfigError
from coin_lightning.training.callbacks import AdapterCheckpoint
from coin_lightning.training.interrupt import InterruptCheckpoint


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
