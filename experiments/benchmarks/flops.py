"""Matmul FLOPs of one LoRA training step of a LLaMA-style decoder, counted from shapes.

The formula (``docs/PERFORMANCE.md``, "Useful FLOPs"): every matmul ``[m, k] x [k, n]`` costs
``2 m n k``. Forward: the decoder's linear layers and attention (scores ``Q K^T`` and ``A V``) for
the tokens of each row, the LoRA matrices, the LM head for the positions whose next token is a label,
and the InfoNCE cosine matrix. Backward: the same product once more for every matmul input that
requires a gradient (activation gradients; frozen base weights get none) plus the weight gradients of
the LoRA matrices (the only trainable weights). Inputs that need no gradient are the embeddings and
everything computed from them alone, e.g. the inputs of layer 0's query/key/value projections.

``useful`` counting (:func:`batch_flops`): real tokens only and causal attention
(``n (n + 1) / 2`` score pairs per row of ``n`` real tokens), LM head on labelled positions only.
``computed`` counting: every padded position and the full ``T x T`` score matrix, as a dense kernel
(and ``torch.utils.flop_counter.FlopCounterMode``) counts them; ``tests/benchmarks`` checks this mode
against ``FlopCounterMode`` on the tiny LLaMA with eager attention.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Linear layers of one LLaMA decoder layer, in data-flow order."""


@dataclass(frozen=True)
class DecoderShape:
    """Sizes of a LLaMA-style decoder that fix its matmul FLOPs."""

    hidden: int
    """Residual width ``H``."""
    intermediate: int
    """MLP width ``I``."""
    layers: int
    """Decoder layers ``L``."""
    heads: int
    """Query heads."""
    kv_heads: int
    """Key/value heads (grouped-query attention)."""
    head_dim: int
    """Width of one head."""
    vocab: int
    """Vocabulary size ``V`` (LM-head outputs)."""

    @classmethod
    def from_config(cls, config) -> DecoderShape:
        """From a ``transformers`` ``LlamaConfig`` (or any config with the same attribute names)."""
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            hidden=int(config.hidden_size),
            intermediate=int(config.intermediate_size),
            layers=int(config.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            vocab=int(config.vocab_size),
        )

    def projection(self, name: str) -> tuple[int, int]:
        """``(in_features, out_features)`` of one of :data:`PROJECTIONS`.

        Raises:
            KeyError: unknown projection name.
        """
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }[name]


@dataclass(frozen=True)
class LoraShape:
    """The LoRA adapters that change the FLOPs: rank and wrapped projections."""

    r: int
    """Rank (0 = no adapters: then nothing is trainable and there is no backward)."""
    targets: frozenset[str] = field(default_factory=frozenset)
    """Wrapped projections, a subset of :data:`PROJECTIONS`."""

    @classmethod
    def from_peft(cls, model) -> LoraShape:
        """Read rank and target modules from a peft model's active config (``r=0`` without peft)."""
        cfg = getattr(model, "peft_config", {}).get("default") if hasattr(model, "peft_config") else None
        if cfg is None:
            return cls(0, frozenset())
        targets = {t.split(".")[-1] for t in cfg.target_modules}
        return cls(int(cfg.r), frozenset(targets & set(PROJECTIONS)))


@dataclass
class FlopCount:
    """FLOPs of one step by part (floats, FLOP = one multiply or one add)."""

    forward: dict[str, float]
    """Forward matmul FLOPs: ``linear``, ``lora``, ``attention``, ``lm_head``, ``contrastive``."""
    backward: dict[str, float]
    """Backward matmul FLOPs, same keys (activation gradients, LoRA weight gradients)."""

    @property
    def total(self) -> float:
        """Forward + backward."""
        return sum(self.forward.values()) + sum(self.backward.values())

    def as_dict(self) -> dict:
        """JSON view with totals."""
        return {
            "forward": self.forward,
            "backward": self.backward,
            "forward_total": sum(self.forward.values()),
            "backward_total": sum(self.backward.values()),
            "total": self.total,
        }


def step_flops(
    shape: DecoderShape,
    lora: LoraShape,
    seq_lens: Sequence[int],
    lm_positions: int,
    num_pairs: int = 0,
    causal: bool = True,
    backward: bool = True,
    attn_lens: Sequence[int] | None = None,
    attn_pairs: float | None = None,
) -> FlopCount:
    """Matmul FLOPs of one training step (forward, and backward when ``backward``).

    Args:
        shape: decoder sizes.
        lora: adapter rank and targets (trainable weights = the LoRA matrices only).
        seq_lens: tokens each row runs through the decoder (``[R]``).
        lm_positions: positions the LM head is applied to (``M``).
        num_pairs: ``P`` of the InfoNCE cosine matrix ``[P, H] x [H, P]`` (0 = no contrastive matmul).
        causal: count ``n (n + 1) / 2`` attention score pairs per row (what causal attention needs)
            instead of ``n^2`` (what a dense kernel computes).
        backward: include the backward pass.
        attn_lens: widths of the attention score matrices when they differ from ``seq_lens`` (packed
            rows: projections run on the real tokens, attention on ``[L, L]`` right-padded rows).
        attn_pairs: score pairs per head and layer over the batch, when given (overrides ``causal``
            and ``attn_lens``; the block-causal packed kernel).

    Returns:
        :class:`FlopCount` by part.

    Raises:
        ValueError: a LoRA target outside :data:`PROJECTIONS` or negative sizes.
    """
    unknown = set(lora.targets) - set(PROJECTIONS)
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {sorted(unknown)}; the formula knows {', '.join(PROJECTIONS)}")
    if lm_positions < 0 or num_pairs < 0 or any(n < 0 for n in seq_lens):
        raise ValueError("sizes must be non-negative")
    N = float(sum(seq_lens))
    pairs = float(sum(n * (n + 1) / 2 if causal else n * n for n in (seq_lens if attn_lens is None else attn_lens)))
    if attn_pairs is not None:
        pairs = float(attn_pairs)
    H, r = shape.hidden, lora.r
    fwd = dict.fromkeys(("linear", "lora", "attention", "lm_head", "contrastive"), 0.0)
    bwd = dict.fromkeys(fwd, 0.0)
    attn_unit = 2.0 * shape.heads * shape.head_dim * pairs  # one of the two attention matmuls
    trainable = r > 0 and bool(lora.targets)
    stream = False  # does the residual stream require a gradient?

    def linear(name: str, x_grad: bool) -> bool:
        """Count one projection; return whether its output requires a gradient."""
        fin, fout = shape.projection(name)
        fwd["linear"] += 2 * N * fin * fout
        if x_grad:
            bwd["linear"] += 2 * N * fin * fout
        adapted = trainable and name in lora.targets
        if adapted:
            fwd["lora"] += 2 * N * r * (fin + fout)
            bwd["lora"] += 2 * N * fin * r + 2 * N * r * fout  # weight gradients of A and B
            bwd["lora"] += 2 * N * r * fout  # gradient of B's input (A's output)
            if x_grad:
                bwd["lora"] += 2 * N * fin * r  # gradient of A's input
        return x_grad or adapted

    for _ in range(shape.layers):
        q, k, v = (linear(n, stream) for n in ("q_proj", "k_proj", "v_proj"))
        fwd["attention"] += 2 * attn_unit
        scores = q or k
        bwd["attention"] += attn_unit * (q + k)  # Q K^T: gradients of Q and of K
        bwd["attention"] += attn_unit * (scores + v)  # A V: gradients of A and of V
        stream = linear("o_proj", scores or v) or stream
        gate, up = linear("gate_proj", stream), linear("up_proj", stream)
        stream = linear("down_proj", gate or up) or stream

    M = float(lm_positions)
    fwd["lm_head"] = 2 * M * H * shape.vocab
    bwd["lm_head"] = fwd["lm_head"] if stream else 0.0
    P = float(num_pairs)
    fwd["contrastive"] = 2 * P * P * H
    bwd["contrastive"] = 2 * fwd["contrastive"] if stream else 0.0
    if not backward:
        bwd = dict.fromkeys(bwd, 0.0)
    return FlopCount(fwd, bwd)


def lm_positions_of(batch: dict) -> int:
    """Positions the project's step applies the LM head to: labelled next tokens of the LM rows."""
    P = int(batch["num_pairs"])
    return int((batch["labels"][: 2 * P, 1:] != -100).sum())


def batch_flops(
    batch: dict,
    shape: DecoderShape,
    lora: LoraShape,
    mode: str = "useful",
    contrastive: bool = True,
    full_logits: bool = False,
    packed: bool = False,
    kernel: bool = True,
) -> FlopCount:
    """FLOPs of one step on a CONTRACTS.md batch.

    Args:
        batch: ``input_ids``/``attention_mask``/``labels`` ``[R, T]``, ``num_pairs``.
        mode: ``useful`` (real tokens, causal pairs, labelled LM positions) or ``computed`` (all
            ``R x T`` positions, full score matrices).
        contrastive: count the InfoNCE cosine matmul (``lambda > 0`` in the project's step).
        full_logits: the LM head runs on every position of the LM rows (the reference-style step);
            only meaningful with ``mode="computed"``.
        packed: the step packs rows (``model.packed_sequences``): in ``computed`` mode the layers run
            on the real tokens and attention on ``R`` right-padded rows of ``L`` (longest row) positions:
            with ``kernel`` (the CPU kernel :func:`coin_lightning.speedups.kernels.packed_attention`) each
            block of query positions ``[s, e)`` against keys ``[0, e)``, else dense ``[L, L]`` (SDPA).

    Raises:
        ValueError: unknown mode.
    """
    if mode not in ("useful", "computed"):
        raise ValueError(f"mode={mode!r}; choose useful or computed")
    mask = batch["attention_mask"]
    R, T = mask.shape
    P = int(batch["num_pairs"])
    if mode == "useful":
        lens: Iterable[int] = mask.sum(1).tolist()
        m = lm_positions_of(batch)
        attn = None
    elif packed:
        lens = mask.sum(1).tolist()
        attn = [max(lens)] * R
        m = 2 * P * T if full_logits else lm_positions_of(batch)
    else:
        lens = [T] * R
        attn = None
        m = 2 * P * T if full_logits else lm_positions_of(batch)
    pairs = None
    if mode == "computed" and packed and kernel:
        from coin_lightning.speedups.kernels import attention_blocks

        pairs = R * sum((end - start) * end for start, end in attention_blocks(max(lens)))
    return step_flops(shape, lora, list(lens), m, P if contrastive else 0, causal=mode == "useful", attn_lens=attn,
                      attn_pairs=pairs)


def count_with_torch(fn) -> float:
    """Total matmul FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` sees while ``fn()`` runs,
    in-place accumulates (``addmm_``, ``baddbmm_``: the packed attention kernel) included.

    (Fused CPU SDPA kernels are not counted by it; use eager attention to compare.)
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def addmm_(self_shape, a_shape, b_shape, *args, **kwargs) -> int:  # [m, k] x [k, n] accumulated
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    def baddbmm_(self_shape, a_shape, b_shape, *args, **kwargs) -> int:  # [b, m, k] x [b, k, n] accumulated
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]

    inplace = {torch.ops.aten.addmm_: addmm_, torch.ops.aten.baddbmm_: baddbmm_}
    with FlopCounterMode(display=False, custom_mapping=inplace) as counter:
        fn()
    return float(counter.get_total_flops())


def parameters_flops_per_token(shape: DecoderShape) -> float:
    """Forward matmul FLOPs per token of the decoder's linear layers (``2 x`` their weight count)."""
    per_layer = sum(a * b for a, b in (shape.projection(n) for n in PROJECTIONS))
    return 2.0 * per_layer * shape.layers


__all__ = [
    "PROJECTIONS", "DecoderShape", "LoraShape", "FlopCount", "step_flops", "batch_flops",
    "lm_positions_of", "count_with_torch", "parameters_flops_per_token",
]
