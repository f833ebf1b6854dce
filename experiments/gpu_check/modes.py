"""What differs between ``make gpu-check`` and ``make gpu-check-dry``: devices, precision, model, sizes.

The steps (:mod:`experiments.gpu_check.steps`) are the same in both modes; a :class:`Mode` supplies
the Hydra overrides and tolerances. ``gpu``: one CUDA GPU, ``bf16-mixed``, the embedded
SmolLM2-135M. ``dry``: the CPU, fp32, gloo, the tiny random LLaMA, a few steps (the check's own code
is tested by ``tests/experiments/test_gpu_check.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

CPU_FSDP = "tests.training._fsdp_cpu.CpuFSDPStrategy"
"""``trainer=fsdp``'s strategy class with the two CUDA assumptions of Lightning's ``FSDPStrategy`` lifted
(``device_id`` and the full state dict's CPU offload), so Lightning's wrapping runs on CPU + gloo."""


@dataclass(frozen=True)
class EvalRun:
    """One device-side evaluation compared with the CPU's."""

    overrides: tuple[str, ...]
    """``trainer`` overrides of ``python -m coin_lightning.evaluate``."""
    min_agreement: float
    """Share of rows whose parsed label must equal the CPU fp32 run's."""


NO_CHECKPOINTS = ("~callbacks.model_checkpoint", "~callbacks.adapter", "~callbacks.interrupt",
                  "+trainer.enable_checkpointing=false")
"""One device: torch's FSDP runs NO_SHARD, which cannot write the frozen base's full state dict, so
``trainer=fsdp`` refuses one device with checkpoints (``training/checks.py``); the step runs without."""


@dataclass(frozen=True)
class Mode:
    """The settings of one mode of the check (see the module docstring)."""

    name: str
    model: str
    """``model`` config group of every step."""
    trainer: tuple[str, ...]
    """Overrides of the one-device trainer (training steps and the CPU-side evaluation's device)."""
    fsdp: tuple[str, ...]
    """Overrides selecting Lightning's FSDP strategy (``conf/trainer/fsdp.yaml``) on one device."""
    base_dtype: str
    """``model.dtype`` of the frozen base in the "bf16 base, fp32 LoRA" step."""
    eval_runs: dict[str, EvalRun] = field(default_factory=dict)
    """Device-side evaluations, each compared with ``trainer=cpu`` (fp32) on the same rows."""
    steps: int = 100
    """Optimizer steps of each training step."""
    data: tuple[str, ...] = ()
    """Overrides of the training data (the embedded tasks)."""
    evaluation: tuple[str, ...] = ("eval.tasks=[embedded]", "eval.samples_per_task=4")
    """Overrides of the evaluation step's rows (its instructions are the clean ones)."""
    packing_rel_tol: float = 2e-2
    """Validation CE before training, packed vs padded rows: relative difference allowed."""
    fsdp_rel_tol: float = 1e-3
    """Validation CE before training, ``trainer=fsdp`` vs the one-device packed run: relative difference allowed."""
    gpu_only: tuple[str, ...] = ()
    """Steps skipped in this mode, with the reason printed."""


GPU = Mode(
    name="gpu",
    model="smollm2_135m",
    trainer=("trainer=gpu",),
    fsdp=("trainer=fsdp", "trainer.devices=1", *NO_CHECKPOINTS),
    base_dtype="bfloat16",
    eval_runs={
        "gpu_fp32": EvalRun(("trainer=gpu", "trainer.precision=32-true"), 1.0),
        "gpu_bf16": EvalRun(("trainer=gpu",), 0.9),  # bf16 rounding can flip greedy near-ties
    },
)

DRY = Mode(
    name="dry",
    model="tiny_llama",
    trainer=("trainer=cpu",),
    fsdp=(
        "trainer=fsdp", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.precision=32-true",
        f"trainer.strategy._target_={CPU_FSDP}",
        "+trainer.strategy.process_group_backend=gloo", *NO_CHECKPOINTS,
    ),
    base_dtype="float32",  # bf16 compute on a CPU is refused by the training checks (about 80x slower)
    eval_runs={"cpu_fp32": EvalRun(("trainer=cpu",), 1.0)},
    steps=4,
    data=("data.n_per_task=16", "data.val_size=8"),
    evaluation=("eval.tasks=[embedded_parity]", "eval.samples_per_task=2", "eval.max_new_tokens=2"),
    packing_rel_tol=1e-4,
    fsdp_rel_tol=1e-4,
    gpu_only=("liger",),
)

GPU_ONLY_REASON = "GPU-only: Liger-Kernel's Triton kernels need CUDA"
