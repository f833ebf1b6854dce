"""Fused autograd functions for the CPU training path: LoRA projections, RMSNorm, packed attention.

In eager PyTorch every small operation of a layer is its own kernel and its own autograd node. On a
CPU the element-wise ones are memory passes over ``[tokens, hidden]`` tensors, and on two cores they
scale worse than the matmuls (``docs/PERFORMANCE.md``). Three layers of a LoRA-wrapped LLaMA are
made of many of them:

- **LoRA projection** (Hu et al. 2021, Eq. 3; peft ``lora.Linear.forward``):
  ``y = base(x) + s * B(A(dropout(x)))``, in peft seven operations forward (base matmul, dropout, two
  matmuls, the scaling multiply, the add) and about a dozen backward, whose input gradients autograd
  then sums. :func:`lora_linear` is one autograd function for all of it: the dropout's
  ``1 / (1 - p)`` and ``s`` are folded into the rank-``r`` tensors, the LoRA product is accumulated
  into the base output by the matmul (``addmm_``), and the backward returns one input gradient. It
  is installed as the forward of each peft ``lora.Linear`` (same parameters, state dict, adapter
  files and merging; peft's own forward wherever the fused one does not apply), and its dropout masks
  are the very positions :class:`~coin_lightning.model.dropout.LoraDropout` would draw.
- **RMSNorm** (Zhang and Sennrich 2019, Eq. 4; transformers ``LlamaRMSNorm``):
  ``y = w * x / sqrt(mean(x^2) + eps)``, eight operations forward and backward in eager mode;
  :func:`rms_norm` computes the backward in closed form, ``dx = r (g w - x r^2 mean(g w x))``.
- **Attention over packed rows**: :func:`coin_lightning.model.packing.packed_attention`, batched
  matmuls instead of the tiled SDPA kernel (marked per attention layer by :data:`FUSED_ATTENTION`).

All fall back to the unfused operations off the CPU, under ``torch.compile`` and under autocast, where
kernels are fused by other means. :func:`use_fused_kernels` installs them on a model (``model.fused_kernels``),
:func:`remove_fused_kernels` takes them off again.
"""
from __future__ import annotations

import torch
from torch import nn

from coin_lightning.model.dropout import LoraDropout
from coin_lightning.model.packing import FUSED_ATTENTION, eager_cpu

RMS_NORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"})
"""transformers RMSNorm classes with exactly ``weight * x * rsqrt(mean(x^2) + eps)`` (not Gemma's ``1 + w``)."""
ATTENTION_CLASSES = frozenset({"LlamaAttention", "MistralAttention", "Qwen2Attention"})
"""transformers attention layers whose packed-row attention may use the batched-matmul kernel."""


class _LoraLinear(torch.autograd.Function):
    """``x W^T + b + scale * (x_d A^T) B^T`` with a frozen ``W``; see :func:`lora_linear`."""

    @staticmethod
    def forward(ctx, x, x_lora, weight, bias, weight_a, weight_b, positions, scale):
        x2 = x.reshape(-1, x.shape[-1])
        out = torch.nn.functional.linear(x2, weight, bias)  # [N, out], a new tensor
        src = x2 if x_lora is None else x_lora.reshape(-1, x_lora.shape[-1])
        if positions is not None:
            src = src.clone(memory_format=torch.contiguous_format)
            src.view(-1).index_fill_(0, positions, 0.0)
        h = torch.mm(src, weight_a.t())  # [N, r]
        out.addmm_(h, weight_b.t(), alpha=scale)
        ctx.save_for_backward(src, h, weight, weight_a, weight_b, positions)
        ctx.scale, ctx.x_shape, ctx.separate = scale, x.shape, x_lora is not None
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        src, h, weight, weight_a, weight_b, positions = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_h = torch.mm(g2, weight_b).mul_(ctx.scale)  # [N, r]
        grad_x = grad_x_lora = grad_a = grad_b = None
        if ctx.separate:
            if ctx.needs_input_grad[0]:
                grad_x = torch.mm(g2, weight).view(ctx.x_shape)
            if ctx.needs_input_grad[1]:
                grad_x_lora = torch.mm(grad_h, weight_a).view(ctx.x_shape)
        elif ctx.needs_input_grad[0]:
            grad_x = torch.mm(g2, weight)  # the frozen projection's input gradient, plus LoRA's below
            if positions is None:
                grad_x.addmm_(grad_h, weight_a)
            else:
                lora = torch.mm(grad_h, weight_a)
                lora.view(-1).index_fill_(0, positions, 0.0)
                grad_x.add_(lora)
            grad_x = grad_x.view(ctx.x_shape)
        if ctx.needs_input_grad[4]:
            grad_a = torch.mm(grad_h.t(), src)
        if ctx.needs_input_grad[5]:
            grad_b = torch.mm(g2.t(), h).mul_(ctx.scale)
        return grad_x, grad_x_lora, None, None, grad_a, grad_b, None, None


def lora_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    weight_a: torch.Tensor,
    weight_b: torch.Tensor,
    positions: torch.Tensor | None = None,
    scale: float = 1.0,
    x_lora: torch.Tensor | None = None,
) -> torch.Tensor:
    """A LoRA-wrapped linear layer with a frozen base weight, as one autograd node (Hu et al. 2021, Eq. 3;
    peft ``lora.Linear.forward``).

    Computes ``x W^T + b + scale * (x_d A^T) B^T`` where ``x_d`` is ``x_lora`` (default ``x``) with its
    flat ``positions`` zeroed (LoRA dropout without its ``1 / (1 - p)``, which the caller folds into
    ``scale``). The LoRA product is accumulated into the base output by the matmul (``addmm_``); in
    the backward the input gradient ``g W + (scale g B A) * mask`` is one tensor (two when ``x_lora``
    is given) and every scaling touches ``[N, r]`` or ``[r, *]`` tensors only. ``W`` and ``b`` get
    no gradient.

    Args:
        x: ``[..., in]`` input.
        weight: ``[out, in]`` frozen base weight ``W``.
        bias: ``[out]`` frozen base bias, or ``None``.
        weight_a: ``[r, in]`` LoRA A.
        weight_b: ``[out, r]`` LoRA B.
        positions: ``int64 [k]`` flat positions of the LoRA input to drop, or ``None``.
        scale: ``alpha / r``, times ``1 / (1 - p)`` when dropping.
        x_lora: ``[..., in]`` a separate LoRA input (e.g. already passed through ``nn.Dropout``).

    Returns:
        ``[..., out]``.
    """
    return _LoraLinear.apply(x, x_lora, weight, bias, weight_a, weight_b, positions, scale)


def _plain_weights(x: torch.Tensor, weight: torch.Tensor, weight_a: torch.Tensor, weight_b: torch.Tensor) -> bool:
    """Whole matrices of ``x``'s dtype that chain (not FSDP's flattened shards), on a fusable input."""
    shapes_ok = weight.dim() == weight_a.dim() == weight_b.dim() == 2 and x.shape[-1] == weight.shape[1] \
        == weight_a.shape[1] and weight_a.shape[0] == weight_b.shape[1] and weight_b.shape[0] == weight.shape[0]
    return shapes_ok and x.dtype == weight.dtype == weight_a.dtype == weight_b.dtype and eager_cpu(x)


def _fused_lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Forward installed on a peft ``lora.Linear`` by :func:`use_fused_kernels`: :func:`lora_linear`
    for one active vanilla adapter on a frozen, unmerged base layer on CPU; else peft's own forward."""
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    base = self.get_base_layer()
    if (args or kwargs or name not in self.lora_A or self.disable_adapters or self.merged
            or name in self.lora_variant or self.lora_B[name].bias is not None or self.fan_in_fan_out
            or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad)
            or not _plain_weights(x, base.weight, self.lora_A[name].weight, self.lora_B[name].weight)):
        return type(self).forward(self, x, *args, **kwargs)
    dropout, scale, positions, x_lora = self.lora_dropout[name], float(self.scaling[name]), None, None
    if isinstance(dropout, LoraDropout):
        positions = dropout.positions(x)
        if positions is not None:
            scale /= 1.0 - dropout.p
    elif not isinstance(dropout, nn.Identity):  # another dropout module (e.g. peft's nn.Dropout): as is
        x_lora = dropout(x)
    return lora_linear(x, base.weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, positions,
                       scale, x_lora=x_lora)


class _RMSNorm(torch.autograd.Function):
    """``w * x * rsqrt(mean(x^2) + eps)`` over the last dimension; see :func:`rms_norm`."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        x2 = x.reshape(-1, x.shape[-1])
        rstd = torch.rsqrt(x2.pow(2).mean(-1, keepdim=True).add_(eps))  # [N, 1]
        out = torch.mul(x2, rstd).mul_(weight)
        ctx.save_for_backward(x2, rstd, weight)
        ctx.x_shape = x.shape
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, rstd, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (g2 * x2).mul_(rstd).sum(0)
        if ctx.needs_input_grad[0]:
            gw = g2 * weight  # [N, H]
            dot = torch.linalg.vecdot(gw, x2).unsqueeze(-1)  # [N, 1]: sum_j g_j w_j x_j
            coef = dot.mul_(rstd.pow(3)).div_(-x2.shape[-1])  # -r^3 mean(g w x)
            grad_x = gw.mul_(rstd).addcmul_(x2, coef).view(ctx.x_shape)
        return grad_x, grad_w, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm (Zhang and Sennrich 2019, Eq. 4) as one autograd node with a closed-form backward.

    Args:
        x: ``[..., H]`` float32 input.
        weight: ``[H]`` gain ``w``.
        eps: added to the mean square.

    Returns:
        ``[..., H]``: ``w * x / sqrt(mean(x^2, -1) + eps)``. Backward:
        ``dx = r (g w) - x r^3 mean(g w x)`` with ``r = rsqrt(mean(x^2) + eps)``; ``dw = sum(g x r)``.
    """
    return _RMSNorm.apply(x, weight, eps)


def _fused_rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """Forward installed on an RMSNorm module by :func:`use_fused_kernels`."""
    if (hidden_states.dtype != torch.float32 or self.weight.dtype != torch.float32
            or self.weight.shape != hidden_states.shape[-1:] or not eager_cpu(hidden_states)):
        return type(self).forward(self, hidden_states)
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


class _InstalledForward:
    """``module.forward`` replaced by ``fn(module, ...)``; unlike a bound method it survives pickling."""

    def __init__(self, fn, module: nn.Module):
        self.fn, self.module = fn, module

    def __call__(self, *args, **kwargs):
        return self.fn(self.module, *args, **kwargs)


_FORWARDS = {_fused_lora_forward: "lora", _fused_rms_norm_forward: "rms_norm"}


def _installed(module: nn.Module) -> str | None:
    """``"lora"``/``"rms_norm"`` when ``module`` runs a fused forward, else ``None``."""
    forward = vars(module).get("forward")
    return _FORWARDS.get(forward.fn) if isinstance(forward, _InstalledForward) else None


def use_fused_kernels(model: nn.Module) -> dict[str, int]:
    """Install the fused kernels on ``model`` in place (idempotent): :func:`lora_linear` as the forward of
    every peft ``lora.Linear``, :func:`rms_norm` on every RMSNorm of :data:`RMS_NORM_CLASSES`, and
    :data:`FUSED_ATTENTION` on every attention layer of :data:`ATTENTION_CLASSES` (packed rows then use
    :func:`coin_lightning.model.packing.packed_attention`).

    A LoRA layer falls back to peft's forward at each call that the kernel does not cover (several or
    disabled adapters, merged weights, DoRA and other variants, a LoRA bias, a trainable base layer,
    ``adapter_names``). Parameters, state dict and saved adapters are unchanged.

    Returns:
        ``{"lora": LoRA layers, "rms_norm": norms, "attention": attention layers}`` switched.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    counts = {"lora": 0, "rms_norm": 0, "attention": 0}
    for module in model.modules():
        kind = type(module).__name__
        if "forward" in vars(module):
            continue  # already replaced (by us or by someone else)
        if isinstance(module, LoraLinear):
            module.forward = _InstalledForward(_fused_lora_forward, module)
            counts["lora"] += 1
        elif kind in RMS_NORM_CLASSES:
            module.forward = _InstalledForward(_fused_rms_norm_forward, module)
            counts["rms_norm"] += 1
        elif kind in ATTENTION_CLASSES and not getattr(module, FUSED_ATTENTION, False):
            setattr(module, FUSED_ATTENTION, True)
            counts["attention"] += 1
    return counts


def installed_kernels(model: nn.Module) -> dict[str, int]:
    """The fused kernels currently on ``model``, counted as :func:`use_fused_kernels` counts them."""
    counts = {"lora": 0, "rms_norm": 0, "attention": 0}
    for module in model.modules():
        kind = _installed(module)
        if kind:
            counts[kind] += 1
        counts["attention"] += bool(vars(module).get(FUSED_ATTENTION, False))
    return counts


def remove_fused_kernels(model: nn.Module) -> dict[str, int]:
    """Undo :func:`use_fused_kernels`: peft's own LoRA forward, transformers' RMSNorm and SDPA again.

    Returns:
        The counts removed, keyed as :func:`use_fused_kernels`'s.
    """
    counts = installed_kernels(model)
    for module in model.modules():
        if _installed(module):
            del module.forward
        vars(module).pop(FUSED_ATTENTION, None)
    return counts


__all__ = ["ATTENTION_CLASSES", "RMS_NORM_CLASSES", "installed_kernels", "lora_linear", "remove_fused_kernels",
           "rms_norm", "use_fused_kernels"]
