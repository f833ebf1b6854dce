"""The training steps the benchmark times: the project's CoIN step and a reference-style step.

Project step: ``CoinModule.compute`` (one decoder pass over originals and paraphrases together, LM
head on labelled positions only), backward, AdamW update of the LoRA weights.

Reference-style step (:func:`reference_loss`, written here only, for comparison; run on padded rows
with peft's ``nn.Dropout``): what the CoIN
reference code (luka-group/CoIN, ``ContrastiveLlama.forward``) does per batch: split the batch into
its original and paraphrase halves, run the decoder on each half separately, project *every* position
onto the vocabulary (fp32 logits ``[P, T, V]``), shifted cross-entropy over the full logits of each
half, last-position pooling, cosine-similarity InfoNCE in both directions, the cap rule; then the same
backward and update as the project's step.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def reference_loss(model, batch: dict, lambda_: float = 1000.0, temperature: float = 0.05) -> torch.Tensor:
    """The reference code's training loss on a CONTRACTS.md batch (rows ``[0, P)`` and ``[P, 2P)``).

    Args:
        model: the peft-wrapped causal LM.
        batch: ``input_ids``/``attention_mask``/``labels`` ``[2P, T]``, ``num_pairs`` ``P``.
        lambda_: contrastive weight (0 = generation loss only).
        temperature: InfoNCE temperature.

    Returns:
        Scalar loss: CE(originals) + CE(paraphrases) + capped ``lambda * InfoNCE``.
    """
    base = _base(model)
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    P = int(batch["num_pairs"])
    generation = torch.zeros((), device=batch["input_ids"].device)
    last = []
    for rows in (slice(0, P), slice(P, 2 * P)):
        hidden = decoder(
            input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], use_cache=False
        ).last_hidden_state  # [P, T, H]
        logits = head(hidden).float()  # [P, T, V]: every position
        V = logits.shape[-1]
        shifted = logits[:, :-1, :].contiguous().view(-1, V)
        target = batch["labels"][rows][:, 1:].contiguous().view(-1)
        generation = generation + F.cross_entropy(shifted, target)
        last.append(hidden[:, -1])  # the last position (left padding: the last real token)
    if lambda_ <= 0:
        return generation
    sim = F.cosine_similarity(last[0].unsqueeze(1), last[1].unsqueeze(0), dim=2) / temperature  # [P, P]
    arange = torch.arange(P, device=sim.device)
    contrastive = lambda_ * 0.5 * (F.cross_entropy(sim, arange) + F.cross_entropy(sim.T, arange))
    if contrastive != 0 and contrastive > generation:
        contrastive = contrastive * min(lambda_, float(generation.detach() / contrastive.detach()))
    return generation + contrastive


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``bf16`` (GPU mixed precision), else a no-op context (fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(
    loss_fn: Callable[[dict], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    precision: str = "fp32",
) -> Callable[[dict], float]:
    """One training step: loss under the precision's autocast, backward, optimizer step, zero grads.

    Returns:
        ``step(batch) -> loss value``.
    """

    def step(batch: dict) -> float:
        with autocast(device, precision):
            loss = loss_fn(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


@contextlib.contextmanager
def compiled_decoder(model, enabled: bool = True) -> Iterator[None]:
    """Temporarily compile the decoder of ``model`` in place (``nn.Module.compile``), so every call of
    it, through ``get_decoder()`` or the LM's own forward, runs the compiled code; on exit the module is
    eager again (evaluation's many cache shapes would otherwise recompile again and again).
    """
    if not enabled:
        yield
        return
    decoder = _base(model).get_decoder()
    decoder.compile()
    try:
        yield
    finally:
        decoder._compiled_call_impl = None  # what nn.Module.compile set; None = eager __call__


@contextlib.contextmanager
def swapped_lora_dropout(model, make: Callable[[torch.nn.Module], torch.nn.Module]) -> Iterator[int]:
    """Temporarily replace every LoRA dropout module ``d`` of ``model`` (any ``nn.Dropout``) by ``make(d)``.

    Yields:
        The number of dropout modules swapped; all are restored on exit.
    """
    from coin_lightning.speedups.dropout import lora_dropout_slots

    swapped = []
    for holder, key, drop in lora_dropout_slots(model):
        if isinstance(drop, torch.nn.Dropout):
            swapped.append((holder, key, drop))
            new = make(drop)
            new.train(drop.training)
            holder[key] = new
    try:
        yield len(swapped)
    finally:
        for holder, key, drop in swapped:
            holder[key] = drop


def torch_lora_dropout(model):
    """:func:`swapped_lora_dropout` with peft's own ``nn.Dropout(p)`` (what the reference code runs),
    in place of the project's :class:`coin_lightning.speedups.dropout.LoraDropout`."""
    return swapped_lora_dropout(model, lambda d: torch.nn.Dropout(d.p))


@contextlib.contextmanager
def padded_rows(model) -> Iterator[bool]:
    """Temporarily run ``model`` without packed rows, so ``CoinModule.encode`` computes on the padded
    ``[R, T]`` batch (what the reference code does); its attention is then transformers' ``sdpa``.

    Yields:
        Whether packing was on (its mode is restored on exit).
    """
    from coin_lightning.model import packing

    base = _base(model)
    mode = packing.packing_mode(base)
    packing.set_packing_mode(base, None)
    try:
        yield mode is not None
    finally:
        packing.set_packing_mode(base, mode)
