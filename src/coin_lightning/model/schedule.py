"""Learning-rate schedules of the ``scheduler`` config group (``conf/scheduler/*.yaml``).

Each option is a factory ``(optimizer, num_training_steps) -> LRScheduler`` that Hydra builds with
``_partial_: true``; :meth:`coin_lightning.model.module.CoinModule.configure_optimizers` calls it once
with the run's optimizer steps (:func:`training_steps`) and hands the scheduler to Lightning, stepped
every optimizer step. The schedule is a pure function of the step, so a checkpoint's scheduler state
(its step count) resumes it exactly.
"""
from __future__ import annotations

import functools
import math

import torch


def _linear_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, num_training_steps: int, warmup_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``round(warmup_ratio * num_training_steps)`` steps, then linear decay to 0.

    The learning rate at optimizer step ``s`` (0-based) is ``lr * (s + 1) / (w + 1)`` for ``s < w``
    and ``lr * (T - s) / (T - w)`` after, with ``T = num_training_steps`` and ``w`` the warm-up
    steps. The decay is the HF Trainer's ``linear`` one; the warm-up differs from it on purpose: no
    optimizer step runs at rate 0 (the HF schedule's first step does, so its gradients are spent).
    :func:`hf_linear` is the reference's schedule exactly.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is scaled.
        num_training_steps: optimizer steps of the whole run (>= 1).
        warmup_ratio: share of the steps spent warming up, in [0, 1).
    """
    total = max(1, int(num_training_steps))
    warmup = int(round(warmup_ratio * total))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_linear_factor, warmup=warmup, total=total))


def hf_linear(
    optimizer: torch.optim.Optimizer, num_training_steps: int, warmup_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """The reference's schedule: ``transformers.get_linear_schedule_with_warmup`` with
    ``int(warmup_ratio * num_training_steps)`` warm-up steps.

    The learning rate at optimizer step ``s`` (0-based) is ``lr * s / w`` for ``s < w`` (0 at the
    first step) and ``lr * (T - s) / (T - w)`` after. Source: luka-group/CoIN
    ``run_contrastive_llama.py`` L425 (``warmup_steps = int(len(train_data) / batch_size * 0.1)``,
    the HF Trainer's default ``linear`` scheduler).

    Args:
        optimizer: the optimizer whose groups' ``lr`` is scaled.
        num_training_steps: optimizer steps of the whole run (>= 1).
        warmup_ratio: share of the steps spent warming up, in [0, 1).
    """
    from transformers import get_linear_schedule_with_warmup

    total = max(1, int(num_training_steps))
    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total), total)


def constant(optimizer: torch.optim.Optimizer, num_training_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The optimizer's learning rate at every step (``num_training_steps`` is unused)."""
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def training_steps(trainer) -> int:
    """The optimizer steps ``trainer.fit`` will take, counted as Lightning's ``estimated_stepping_batches``.

    The train loader's length comes from a loader of the DataModule's own (rank-aware samplers), not
    from Lightning's: asking Lightning builds its train loader inside ``configure_optimizers``, before
    a checkpoint's loader position is restored, and a mid-epoch resume would then start the epoch over.

    Returns:
        ``min(max_steps, ceil(batches / accumulate_grad_batches) * max_epochs)`` (either bound
        absent when it is -1), at least 1.
    """
    if trainer.max_epochs == -1:
        return max(1, trainer.max_steps)
    batches = len(trainer.datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    total = math.ceil(batches / trainer.accumulate_grad_batches) * max(1, trainer.max_epochs)
    return max(1, min(total, trainer.max_steps) if trainer.max_steps != -1 else total)
