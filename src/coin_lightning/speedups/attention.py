"""The packed-rows attention function, registered with transformers' ``AttentionInterface``.

A model switched to :data:`PACKED_SDPA` (:func:`enable`) attends as with ``sdpa``, except when the
decoder call carries ``coin_packed=PackedRows`` (the packing mode
:data:`coin_lightning.model.packing.KERNEL`): then attention stays within each packed row, through
:func:`coin_lightning.speedups.kernels.packed_attention` on CPU in fp32 eager mode, else (GPU, autocast,
``torch.compile``) through causal SDPA on the rows laid out right-padded (:func:`packed_rows_sdpa`).
"""
from __future__ import annotations

import torch

from coin_lightning.speedups.kernels import from_grid, packed_attention, packed_prefix_attention, rows_after_prefix

PACKED_SDPA = "coin_packed_sdpa"
"""Name of the attention implementation registered with transformers by :func:`enable`."""


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether the CPU kernels may run on ``x``: on CPU, in eager mode, without autocast."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu")


def packed_rows_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed, scale: float) -> torch.Tensor:
    """Attention within each packed row through causal SDPA (any device, autograd through SDPA).

    The rows are laid out right-padded as ``[R, heads, L, D]`` (``is_causal`` never lets a real token see
    a later, padding, position; grouped-query heads shared through ``enable_gqa``). When ``key`` and
    ``value`` are longer than ``query`` (a cached prefix of ``P`` positions before the packed tokens),
    every row also attends to that prefix (mask ``[L, P + L]``).

    Args:
        query: ``[1, heads, N, D]``.
        key, value: ``[1, kv_heads, P + N, D]`` (``P`` = 0 without a prefix).
        packed: the :class:`~coin_lightning.model.packing.PackedRows` of the packed tokens.
        scale: score scale.

    Returns:
        ``[1, N, heads, D]``.
    """
    R, L = packed.rows, packed.max_len
    prefix = key.shape[2] - query.shape[2]
    mask = None if not prefix else torch.ones(L, prefix + L, dtype=torch.bool, device=query.device).tril_(prefix)
    q, k, v = (rows_after_prefix(x, packed, shared) for x, shared in ((query, 0), (key, prefix), (value, prefix)))
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=not prefix, scale=scale, enable_gqa=query.shape[1] != key.shape[1]
    )  # [R, heads, L, D]
    return from_grid(out.reshape(R * out.shape[1], L, out.shape[3]), packed, 1).unsqueeze(0)


def packed_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention function (transformers ``AttentionInterface``) for packed rows, else plain SDPA.

    With ``coin_packed=PackedRows`` in ``kwargs`` (passed through the decoder call by
    :meth:`coin_lightning.model.module.CoinModule.encode`): ``query`` ``[1, heads, N, D]``, ``key`` and
    ``value`` ``[1, kv_heads, P + N, D]`` attend causally within each row (and to the ``P`` cached prefix
    positions every row shares, the evaluation prefill), output ``[1, N, heads, D]``. On CPU in fp32
    eager mode through the kernels of :mod:`coin_lightning.speedups.kernels`, otherwise through
    :func:`packed_rows_sdpa`. The ``N x N`` mask transformers built for the packed sequence is not used.
    Without ``coin_packed``: transformers' own ``sdpa`` function.

    Raises:
        ValueError: attention dropout > 0 with packed rows (LLaMA uses none).
    """
    from transformers import AttentionInterface

    packed = kwargs.pop("coin_packed", None)
    if packed is None:
        sdpa = AttentionInterface()["sdpa"]
        return sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                    is_causal=is_causal, **kwargs)
    if dropout:
        raise ValueError("packed_sdpa_attention: attention dropout is not supported")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if query.dtype == torch.float32 and eager_cpu(query):
        kernel = packed_prefix_attention if key.shape[2] > query.shape[2] else packed_attention
        return kernel(query, key, value, packed, scale), None
    return packed_rows_sdpa(query, key, value, packed, scale), None


def enable(model) -> None:
    """Switch a transformers model (loaded with ``attn_implementation="sdpa"``) to :data:`PACKED_SDPA`,
    through ``set_attn_implementation``: the same results on every unpacked call.

    :data:`PACKED_SDPA` is first registered (idempotent) with transformers' attention and mask interfaces;
    masks are built as for ``sdpa`` (used on the unpacked path; the packed path ignores them).
    """
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, AttentionMaskInterface()["sdpa"])
    model.set_attn_implementation(PACKED_SDPA)

