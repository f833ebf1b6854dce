"""LoRA input dropout that draws only the dropped positions (CPU; part of ``model.cpu_speedups``).

peft applies ``nn.Dropout(p)`` to the input of every LoRA-wrapped projection, one independent mask
per projection (Hu et al. 2021; the CoIN reference code keeps peft's ``lora_dropout=0.05``). On CPU,
torch draws one random number per element for that mask (``bernoulli_``): about 3.3 ms for a
``[920, 576]`` input on one thread, 7% of a LoRA step of SmolLM2-135M (``docs/PERFORMANCE.md``).
:class:`LoraDropout` samples the same i.i.d. Bernoulli(``p``) mask through the gaps between dropped
elements, which are geometric: ``gap = floor(log(U) / log(1 - p)) + 1`` with ``U`` uniform on
``(0, 1]`` (Devroye, *Non-Uniform Random Variate Generation*, 1986, Sec. X.2), so it draws about
``p n`` numbers instead of ``n`` and zeroes those positions: 6x cheaper at ``p = 0.05``. On CUDA it
calls ``torch.nn.functional.dropout`` (masks are already cheap there).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def drop_positions(n: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions of the successes of ``n`` i.i.d. Bernoulli(``p``) trials, from geometric gaps.

    Args:
        n: number of trials (elements of the flattened input).
        p: success (drop) probability in ``(0, 1)``.
        generator: CPU generator (default: torch's global one, so ``seed_everything`` fixes the masks).

    Returns:
        ``int64`` tensor ``[k]`` of increasing positions in ``[0, n)`` (``k ~ Binomial(n, p)``).

    Raises:
        ValueError: ``p`` outside ``(0, 1)`` or negative ``n``.
    """
    if not 0.0 < p < 1.0 or n < 0:
        raise ValueError(f"drop_positions needs 0 < p < 1 and n >= 0, got p={p}, n={n}")
    scale = 1.0 / math.log1p(-p)  # negative
    chunk = _chunk_size(n, p)
    ends, total = [], -1  # total = position of the last success drawn so far
    while total < n - 1:
        u = torch.rand(chunk, dtype=torch.float64, generator=generator)
        gaps = torch.neg(u).log1p_().mul_(scale).floor_().add_(1).to(torch.int64)  # U' = 1 - u in (0, 1]
        cum = gaps.cumsum(0).add_(total)
        ends.append(cum)
        total = int(cum[-1])
    cum = torch.cat(ends) if len(ends) > 1 else ends[0]
    return cum[: int(torch.searchsorted(cum, n))]  # increasing: the first k positions are those < n


def _chunk_size(n: int, p: float) -> int:
    """Gaps drawn at once: the mean count ``n p`` plus 8 standard deviations (more are drawn if short)."""
    mean = n * p
    return int(mean + 8.0 * math.sqrt(mean) + 16)


class _DropPositions(torch.autograd.Function):
    """``y = x / (1 - p)`` with the given flat positions zeroed; the backward does the same to the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, positions: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(positions)
        ctx.scale = scale
        out = x.mul(scale).contiguous()
        out.view(-1).index_fill_(0, positions, 0.0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (positions,) = ctx.saved_tensors
        out = grad.mul(ctx.scale).contiguous()
        out.view(-1).index_fill_(0, positions, 0.0)
        return out, None, None


class LoraDropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` for peft's ``lora_dropout``: the same Bernoulli masks, drawn by :func:`drop_positions`.

    Input and output: any shape, e.g. ``[batch, tokens, in_features]``. In training every element is
    zeroed independently with probability ``p`` and the others are scaled by ``1 / (1 - p)``, so the
    expectation is the input (as ``nn.Dropout``); in evaluation, or with ``p = 0``, the input is
    returned unchanged. Non-CPU inputs use ``torch.nn.functional.dropout``. Saves the dropped
    positions for the backward (``8 p`` bytes per element instead of a 1-byte mask).

    Raises:
        ValueError: ``p`` outside ``[0, 1)``.
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"LoRA dropout probability must be in [0, 1), got {p}")
        super().__init__(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return nn.functional.dropout(x, self.p, True)
        return _DropPositions.apply(x, drop_positions(x.numel(), self.p), 1.0 / (1.0 - self.p))


def lora_dropout_slots(model: nn.Module) -> list[tuple[nn.ModuleDict, str, nn.Module]]:
    """Every LoRA dropout of a peft model: ``(holder, adapter name, module)`` with ``holder[name] is module``
    (peft keeps them in each LoRA layer's ``lora_dropout`` ``ModuleDict``). A list, so callers may replace
    ``holder[name]`` while going through it."""
    holders = [h for module in model.modules() if isinstance(h := getattr(module, "lora_dropout", None), nn.ModuleDict)]
    return [(holder, key, drop) for holder in holders for key, drop in holder.items()]


def use_fast_lora_dropout(model: nn.Module) -> int:
    """Replace peft's ``nn.Dropout`` LoRA dropouts of ``model`` in place by :class:`LoraDropout` (same ``p``).

    Returns:
        The number of dropout modules replaced (``nn.Identity`` ones, peft's ``p = 0``, are left alone).
    """
    replaced = 0
    for holder, key, drop in lora_dropout_slots(model):
        if type(drop) is nn.Dropout:
            holder[key] = LoraDropout(drop.p).train(drop.training)  # train() returns the module
            replaced += 1
    return replaced

