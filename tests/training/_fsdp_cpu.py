"""Test helper: the FSDP strategy of ``conf/trainer/fsdp.yaml`` made to run on CPU + gloo.

:class:`CpuFSDPStrategy` subclasses whatever class ``conf/trainer/fsdp.yaml`` names as
``trainer.strategy._target_`` (so a test runs the project's strategy, not a copy of it) and lifts two
CUDA assumptions of Lightning's ``FSDPStrategy``, nothing else:

- The accelerator may be the CPU (Lightning refuses ``FSDPStrategy`` itself with ``accelerator="cpu"``,
  and so does the project's strategy): Lightning's plain ``Strategy.accelerator`` property.
- Lightning wraps with ``device_id=root_device.index``, which is ``None`` on CPU, and torch's FSDP
  refuses ``None`` without an accelerator; a model that is not yet wrapped is wrapped here with
  ``device_id=cpu`` and the same arguments. A model that already contains FSDP modules goes through
  Lightning's own ``_setup_model`` unchanged (its path for a model wrapped in an earlier stage).
- Lightning's full state dict uses ``offload_to_cpu=True``, which crashes (segfault in the state-dict
  hook's clone) when the shards already live on the CPU: the full model and optimizer state dicts
  are gathered here with ``offload_to_cpu=False``, otherwise as Lightning gathers them.

Used by ``python -m coin_lightning.train ... trainer.strategy._target_=tests.training._fsdp_cpu.CpuFSDPStrategy``
(see ``test_fsdp_lightning.py``) and by ``_two_rank_worker.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import Strategy
from omegaconf import OmegaConf

from coin_lightning.conf import CONFIG_DIR

CONFIG_CLASS = get_class(OmegaConf.load(Path(CONFIG_DIR) / "trainer" / "fsdp.yaml").strategy._target_)
"""The strategy class ``trainer=fsdp`` instantiates."""


def _full_state_dict_type(module: torch.nn.Module, rank0_only: bool = True):
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.api import FullOptimStateDictConfig

    return FSDP.state_dict_type(
        module,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )


class CpuFSDPStrategy(CONFIG_CLASS):
    """``conf/trainer/fsdp.yaml``'s strategy class on CPU (see the module docstring)."""

    accelerator = Strategy.accelerator

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if any(isinstance(m, FSDP) for m in model.modules()):
            return super()._setup_model(model)
        return FSDP(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:  # noqa: D102
        with _full_state_dict_type(self.model):
            return self.model.state_dict()

    def optimizer_state(self, optimizer) -> dict[str, Any]:  # noqa: D102
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        optimizer = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer's torch optimizer
        with _full_state_dict_type(self.model):
            state = FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
        return state
