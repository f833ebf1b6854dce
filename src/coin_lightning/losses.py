"""The CoIN objective as pure tensor functions: pooling, symmetric InfoNCE, the cap rule, response CE;
and its config, :class:`LossArgs` (the ``loss`` group), checked before any model loads.

References: Yan et al., "Contrastive Instruction Tuning", Findings of ACL 2024 (arXiv 2402.11138),
Sec. 3 (Eq. 1-3), and the reference implementation (luka-group/CoIN, ``ContrastiveLlama``:
``ContrastiveLoss.forward``, ``scale_contrastive_loss``, ``get_entropy_loss_for_token_prediction``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from coin_lightning.config_types import build, check_choice, check_range
from coin_lightning.errors import ConfigError

Pooling = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``(hidden [N, T, H], attention_mask [N, T], response_start Long [N] or None) -> [N, H]``."""

POOLINGS: dict[str, Pooling] = {}
"""The values of ``loss.pooling``: name -> pooling function (:func:`register_pooling`; docs/EXTENDING.md)."""


def register_pooling(name: str) -> Callable[[Pooling], Pooling]:
    """Decorator: make a :data:`Pooling` function the value ``loss.pooling=name`` (training, and analyze).

    The function gets the hidden states of whole sequences (prompt and response, either padding side) and
    must return one vector per row, differentiable in ``hidden``.
    """

    def add(fn: Pooling) -> Pooling:
        POOLINGS[name] = fn
        return fn

    return add


@dataclass
class LossArgs:
    """The ``loss`` config group (``conf/loss/*.yaml``); defaults are the paper's (Sec. 4.1).

    Its schema in Hydra's ConfigStore is :func:`coin_lightning.config_types.schema_node` of this class
    (the key ``lambda`` is a Python keyword, so the field is ``lambda_``)."""

    lambda_: float = 1000.0
    """Weight of the contrastive term (config key ``loss.lambda``); 0 = continual instruction tuning."""
    temperature: float = 0.05
    """InfoNCE temperature tau (> 0)."""
    cap_to_generation: bool = True
    """Rescale ``lambda * L_ctr`` to the generation loss when larger (reference ``scale_contrastive_loss``)."""
    pooling: str = "last"
    """``last`` (paper), ``mean`` or ``last_prompt``; see :func:`coin_lightning.losses.pool_hidden`."""
    hidden_layer: int = -1
    """-1 = the final (normed) hidden state as in the reference; else ``hidden_states[i]`` (0 = embeddings)."""
    gather_across_ranks: bool = False
    """Under DDP, gather pooled states from all ranks (with gradients) so all ranks' items are negatives."""

    def __post_init__(self) -> None:
        if not (self.lambda_ >= 0 and math.isfinite(self.lambda_)):
            raise ConfigError(f"loss.lambda must be a finite number >= 0, got {self.lambda_}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"loss.temperature must be a finite number > 0, got {self.temperature}")
        check_choice("loss.pooling", self.pooling, tuple(POOLINGS))

    @classmethod
    def from_config(cls, cfg: Any) -> LossArgs:
        """Build from a Hydra node, a mapping (key ``lambda`` is field ``lambda_``) or a ``LossArgs``.

        Raises:
            ConfigError: an unknown key, a value of the wrong type, ``loss.lambda`` not a finite
                number >= 0, ``loss.temperature`` not a finite number > 0, or unknown pooling.
        """
        return build(cls, cfg, "loss")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-padding token of each row, for left or right padding alike.

    Args:
        attention_mask: ``[N, T]``, 1 on real tokens.

    Returns:
        Long ``[N]``.
    """
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.flip(1).long().argmax(dim=1)


def pool_hidden(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    method: str = "last",
    response_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool token hidden states into one vector per sequence with the pooling ``method`` (:data:`POOLINGS`).

    Args:
        hidden: ``[N, T, H]`` hidden states.
        attention_mask: ``[N, T]``, 1 on real tokens.
        method: ``last`` — the last non-padding token (the paper's last-token pooling, Sec. 3; found
            from the mask, so the result does not depend on the padding side); ``mean`` — mean over
            real tokens; ``last_prompt`` — the token just before the response (needs
            ``response_start``); or a registered one.
        response_start: Long ``[N]``, index of the first response token (``last_prompt`` only).

    Returns:
        ``[N, H]``, same dtype as ``hidden``.

    Raises:
        ValueError: unknown method, or ``last_prompt`` without ``response_start``.
    """
    check_choice("loss.pooling", method, tuple(POOLINGS))
    return POOLINGS[method](hidden, attention_mask, response_start)


@register_pooling("last")
def _last(hidden: torch.Tensor, attention_mask: torch.Tensor, response_start=None) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]


@register_pooling("mean")
def _mean(hidden: torch.Tensor, attention_mask: torch.Tensor, response_start=None) -> torch.Tensor:
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


@register_pooling("last_prompt")
def _last_prompt(hidden: torch.Tensor, attention_mask: torch.Tensor, response_start=None) -> torch.Tensor:
    if response_start is None:
        raise ValueError("loss.pooling=last_prompt needs the batch's response_start")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), response_start.to(hidden.device) - 1]


@dataclass
class InfoNCEOutput:
    """Result of :func:`info_nce`."""

    loss: torch.Tensor
    """Scalar: mean of the two directions' cross-entropies."""
    pos_sim: torch.Tensor
    """Scalar: mean cosine similarity of matched (original, paraphrase) pairs, without temperature."""
    neg_sim: torch.Tensor
    """Scalar: mean cosine similarity of all unmatched pairs (hard-negative column included)."""


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    temperature: float,
    negatives: torch.Tensor | None = None,
) -> InfoNCEOutput:
    """Symmetric InfoNCE over cosine similarities (CoIN Eq. 2; reference ``ContrastiveLoss.forward``).

    ``S[i, j] = cos(anchors[i], positives[j]) / temperature``; the loss is
    ``(CE(S, arange) + CE(S^T, arange)) / 2``: each original must pick its own paraphrase among all
    paraphrases of the batch and vice versa. Hard negatives that are full pairs (``pair_of_pairs``)
    are simply rows of ``anchors``/``positives``. With ``negatives`` (``hard_negative_column``), each
    row ``i`` of both directions gets one extra logit ``cos(x_i, negatives[i]) / temperature``.

    Args:
        anchors: ``[P, H]`` pooled originals.
        positives: ``[P, H]`` pooled paraphrases, row ``i`` matching ``anchors[i]``.
        temperature: tau > 0 (paper: 0.05).
        negatives: optional ``[P, H]``, the hard negative of each anchor.

    Returns:
        :class:`InfoNCEOutput` (loss, mean positive and negative cosine similarity).

    Raises:
        ValueError: ``temperature <= 0`` or mismatched shapes.
    """
    check_range("loss.temperature", temperature, low=0, low_open=True)
    if anchors.shape != positives.shape or (negatives is not None and negatives.shape != anchors.shape):
        raise ValueError(f"shape mismatch: anchors {tuple(anchors.shape)}, positives {tuple(positives.shape)}")
    a = F.normalize(anchors.float(), dim=-1)
    p = F.normalize(positives.float(), dim=-1)
    cos = a @ p.T  # [P, P]
    P = cos.shape[0]
    target = torch.arange(P, device=cos.device)
    o2p, p2o = cos, cos.T
    off_diag = cos[~torch.eye(P, dtype=torch.bool, device=cos.device)]
    neg_parts = [off_diag]
    if negatives is not None:
        n = F.normalize(negatives.float(), dim=-1)
        a_n = (a * n).sum(-1, keepdim=True)  # [P, 1]
        p_n = (p * n).sum(-1, keepdim=True)
        o2p = torch.cat([o2p, a_n], dim=1)
        p2o = torch.cat([p2o, p_n], dim=1)
        neg_parts += [a_n.flatten(), p_n.flatten()]
    loss = 0.5 * (F.cross_entropy(o2p / temperature, target) + F.cross_entropy(p2o / temperature, target))
    negs = torch.cat(neg_parts)
    neg_sim = negs.mean() if negs.numel() else cos.new_zeros(())
    return InfoNCEOutput(loss=loss, pos_sim=cos.diagonal().mean(), neg_sim=neg_sim)


def cap_to_generation(weighted_contrastive: torch.Tensor, generation: torch.Tensor) -> torch.Tensor:
    """The cap rule: rescale ``lambda * L_cl`` to the generation loss's magnitude when it exceeds it.

    Returns ``weighted_contrastive * (generation / weighted_contrastive)`` with the ratio detached when
    ``weighted_contrastive > generation`` (so its value equals ``generation`` while its gradient keeps
    the contrastive direction), else ``weighted_contrastive`` unchanged. Reference:
    ``ContrastiveLlama.scale_contrastive_loss``, which also caps the ratio at lambda; that extra
    ``min(lambda, ·)`` only differs when lambda < 1 and is not reproduced.

    Args:
        weighted_contrastive: scalar ``lambda * L_cl``.
        generation: scalar generation loss.
    """
    if weighted_contrastive > generation and weighted_contrastive != 0:
        return weighted_contrastive * (generation.detach() / weighted_contrastive.detach())
    return weighted_contrastive


def response_cross_entropy(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    lm_head: torch.nn.Module,
    rows: slice,
    normalizer: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy on response tokens, with LM-head logits computed only where needed.

    Equals the reference's ``get_entropy_loss_for_token_prediction`` (shift by one, mean over all
    labelled tokens of the rows) but applies ``lm_head`` to the ``M`` labelled positions only instead
    of all ``N * T`` (the vocabulary projection is the largest matmul of a small model).

    Args:
        hidden: ``[N, T, H]`` final hidden states.
        labels: Long ``[N, T]``, ``-100`` where no loss is taken (unshifted: ``labels[:, t]`` is
            predicted from position ``t - 1``).
        lm_head: the vocabulary projection ``H -> V``.
        rows: the rows to include (e.g. ``slice(0, P)`` for the originals).
        normalizer: divide the summed token losses by this instead of the local token count (used to
            make DDP's gradient average equal the global token mean).

    Returns:
        Scalar loss (0 with a gradient path if no row has a response token).
    """
    return response_cross_entropies(hidden, labels, lm_head, [rows], [normalizer])[0]


def response_cross_entropies(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    lm_head: torch.nn.Module,
    groups: list[slice],
    normalizers: list[torch.Tensor | float | None] | None = None,
) -> list[torch.Tensor]:
    """:func:`response_cross_entropy` of several row groups with one LM-head matmul.

    The labelled positions of all groups go through ``lm_head`` together (``[M_1 + M_2 + ..., V]``),
    so the ``V x H`` vocabulary matrix is read once in the forward and once in the backward instead of
    once per group (on a CPU that read, not the arithmetic, dominates a few-row projection).

    Args:
        hidden, labels, lm_head: as :func:`response_cross_entropy`.
        groups: row slices, e.g. ``[slice(0, P), slice(P, 2P)]`` (originals, paraphrases).
        normalizers: per group, as :func:`response_cross_entropy`'s ``normalizer`` (default: token counts).

    Returns:
        One scalar loss per group.
    """
    normalizers = normalizers or [None] * len(groups)
    hs, ys, counts = [], [], []
    for rows in groups:
        y = labels[rows, 1:]
        keep = y != -100
        hs.append(hidden[rows, :-1][keep])
        ys.append(y[keep])
        counts.append(keep.sum())
    losses = F.cross_entropy(lm_head(torch.cat(hs)).float(), torch.cat(ys), reduction="none")  # [M]
    return [part.sum() / (normalizer if normalizer is not None else count.clamp_min(1))
            for part, count, normalizer in zip(losses.split([len(y) for y in ys]), counts, normalizers)]
