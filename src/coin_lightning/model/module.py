"""The CoIN LightningModule: one forward pass over originals and paraphrases, CE + lambda * InfoNCE.

Reference: Yan et al. 2024 (arXiv 2402.11138) Sec. 3, Eq. 3 (``L = L_gen + lambda * L_ctr``), and the
reference implementation luka-group/CoIN ``ContrastiveLlama.forward``, which runs two forward
passes (originals, paraphrases) and projects every position onto the vocabulary; here both halves go
through the model as one batch and the LM head runs only on response positions.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from transformers.modeling_outputs import BaseModelOutput

from coin_lightning.errors import ConfigError
from coin_lightning.losses import (  # LossArgs is re-exported: the loss config of CoinModule
    LossArgs,
    cap_to_generation,
    info_nce,
    pool_hidden,
    response_cross_entropies,
)
from coin_lightning.model import packing
from coin_lightning.model.schedule import training_steps


@dataclass
class StepOutput:
    """Losses and statistics of one forward pass (all scalars)."""

    loss: torch.Tensor
    """Total: ``ce + contrastive`` (what is back-propagated)."""
    ce: torch.Tensor
    """Generation loss: CE(originals) + CE(paraphrases), each a token mean (reference: their sum)."""
    contrastive: torch.Tensor | None
    """``lambda * InfoNCE`` after the cap rule; ``None`` when lambda = 0."""
    info_nce: torch.Tensor | None
    """Raw InfoNCE before lambda and the cap."""
    pos_sim: torch.Tensor | None
    """Mean cosine similarity of (original, paraphrase) pairs."""
    neg_sim: torch.Tensor | None
    """Mean cosine similarity of non-matching pairs (hard negatives included)."""


class CoinModule(L.LightningModule):
    """Contrastive Instruction Tuning of a peft LoRA causal LM.

    Args:
        model: a peft ``PeftModel`` wrapping a causal LM (only adapter parameters trainable).
        loss: the loss settings (:class:`LossArgs`, or a mapping of its keys; ``None`` = defaults).
        optimizer: a partial optimizer factory ``params -> Optimizer`` (Hydra ``_partial_: true``);
            default AdamW(lr=1e-4).
        scheduler: a partial scheduler factory ``(optimizer, num_training_steps) -> LRScheduler``
            (the ``scheduler`` group, :mod:`coin_lightning.model.schedule`), stepped every optimizer
            step; ``None`` keeps the optimizer's learning rate.
        position_ids: ``mask`` (default) or ``padded`` (``model.position_ids``; see :meth:`encode`).

    Batches follow ``docs/CONTRACTS.md``: ``input_ids``/``attention_mask``/``labels`` ``[R, T]``,
    ``response_start`` ``[R]``, ``num_pairs`` P; rows ``[0, P)`` originals, ``[P, 2P)`` paraphrases,
    optional ``[2P, 3P)`` hard negatives (extra InfoNCE column).

    Checkpoints hold only trainable (adapter) tensors and the optimizer state, never the frozen base.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss: LossArgs | Mapping | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        position_ids: str = "mask",
    ) -> None:
        super().__init__()
        self.position_ids = position_ids
        self.model = model.train()  # from_pretrained returns eval mode; LoRA dropout needs train mode
        self.flops_per_batch: float | None = None  # ThroughputMonitor reads it; None = no FLOP/s estimate
        self.loss_args = LossArgs.from_config(loss if loss is not None else {})
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.strict_loading = False  # checkpoints carry the adapter only; the base comes from the hub/cache
        hp = asdict(self.loss_args)
        hp["lambda"] = hp.pop("lambda_")
        self.save_hyperparameters({"loss": hp})

    # ----------------------------------------------------------------------------- forward / loss
    def _base(self):
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def compute(self, batch: dict[str, Any]) -> StepOutput:
        """Run one forward pass over all rows and compute the CoIN objective (Eq. 3)."""
        args = self.loss_args
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        P = int(batch["num_pairs"])
        R = ids.shape[0]
        if R not in (2 * P, 3 * P):
            raise ValueError(f"batch has {R} rows for num_pairs={P}; expected 2P or 3P (docs/CONTRACTS.md)")
        use_cl = args.lambda_ > 0
        out = self.encode(ids, mask, output_hidden_states=use_cl and args.hidden_layer != -1)
        hidden = out.last_hidden_state  # [R, T, H]
        head = self._base().get_output_embeddings()

        gathered = args.gather_across_ranks and self._world_size() > 1
        norm_o = norm_p = None
        if gathered:  # make DDP's average of per-rank losses equal the global token mean
            counts = (labels[:, 1:] != -100).sum(1)
            glob = torch.stack([counts[:P].sum(), counts[P : 2 * P].sum()]).float()
            torch.distributed.all_reduce(glob)
            norm_o, norm_p = (glob / self._world_size()).clamp_min(1e-6).unbind()
        ce_o, ce_p = response_cross_entropies(hidden, labels, head, [slice(0, P), slice(P, 2 * P)], [norm_o, norm_p])
        ce = ce_o + ce_p
        if not use_cl:
            return StepOutput(ce, ce, None, None, None, None)

        pooled = self._pool_output(out, batch)
        anchors, positives = pooled[:P], pooled[P : 2 * P]
        negatives = pooled[2 * P :] if R == 3 * P else None
        if gathered:
            anchors, positives = self._gather(anchors), self._gather(positives)
            negatives = self._gather(negatives) if negatives is not None else None
        nce = info_nce(anchors, positives, args.temperature, negatives)
        weighted = args.lambda_ * nce.loss
        if args.cap_to_generation:
            gen_value = ce.detach()
            if gathered:
                gen_value = gen_value.clone()
                torch.distributed.all_reduce(gen_value)
                gen_value = gen_value / self._world_size()
            weighted = cap_to_generation(weighted, gen_value)
        return StepOutput(ce + weighted, ce, weighted, nce.loss, nce.pos_sim, nce.neg_sim)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False):
        """Run the decoder (no LM head) with position ids derived from the mask.

        Position ids count real tokens only (``cumsum(mask) - 1``), so a row's hidden states do not
        depend on how much padding it has or on which side (``position_ids="padded"``: every column
        ``0..T-1``, as the reference, which passes none to transformers' LLaMA; no packing). When the base model packs rows
        (``model.packed_sequences``, :func:`coin_lightning.model.packing.packing_mode`), the rows' real
        tokens run as one sequence ``[1, N]`` with position ids restarting at each row (no compute on
        padding): transformers splits them at the restarts (flash-attention's varlen kernels), or the
        project's attention gets the :class:`~coin_lightning.model.packing.PackedRows` as ``coin_packed``;
        the states are scattered back to ``[N, T, H]``.

        Args:
            input_ids: Long ``[N, T]``.
            attention_mask: ``[N, T]``.

        Returns:
            The decoder output: ``last_hidden_state`` ``[N, T, H]`` (final norm applied; zeros at
            padding when packed) and, if asked, ``hidden_states`` (``num_layers + 1`` tensors ``[N, T, H]``).
        """
        decoder = self._base().get_decoder()
        mode = packing.packing_mode(self._base())
        if mode is not None:
            packed = packing.pack_rows(input_ids, attention_mask)
            extra = {"coin_packed": packed} if mode == packing.KERNEL else {}
            out = decoder(
                input_ids=packed.input_ids,
                position_ids=packed.position_ids,
                use_cache=False,
                output_hidden_states=output_hidden_states,
                **extra,
            )
            states = tuple(packing.unpack(h, packed) for h in out.hidden_states) if output_hidden_states else None
            return BaseModelOutput(last_hidden_state=packing.unpack(out.last_hidden_state, packed), hidden_states=states)
        position_ids = (torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
                        if self.position_ids == "padded" else (attention_mask.long().cumsum(-1) - 1).clamp_min(0))
        return decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=output_hidden_states,
        )

    def pool(self, batch: dict[str, Any]) -> torch.Tensor:
        """Pooled representations ``[R, H]`` of every row of a batch, as the contrastive loss sees them."""
        out = self.encode(batch["input_ids"], batch["attention_mask"], output_hidden_states=self.loss_args.hidden_layer != -1)
        return self._pool_output(out, batch)

    def _pool_output(self, out, batch: dict[str, Any]) -> torch.Tensor:
        """Pool the ``loss.hidden_layer`` states of a decoder output as ``loss.pooling`` says: ``[R, H]``."""
        args = self.loss_args
        states = out.hidden_states[args.hidden_layer] if args.hidden_layer != -1 else out.last_hidden_state
        return pool_hidden(states, batch["attention_mask"], args.pooling, batch.get("response_start"))

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_gather(x, sync_grads=True).flatten(0, 1)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:  # noqa: D102 - Lightning convention
        return self.compute(batch).loss

    # ----------------------------------------------------------------------------- Lightning hooks
    def _step(self, stage: str, batch: dict[str, Any]) -> torch.Tensor:
        """:meth:`compute` on ``batch``, its losses logged under ``<stage>/``; returns the total loss."""
        out = self.compute(batch)
        on_step = stage == "train"
        for name, value in vars(out).items():  # loss, ce and, with lambda > 0, the contrastive statistics
            if value is None:
                continue
            self.log(
                f"{stage}/{name}",
                value.detach(),
                on_step=on_step,
                on_epoch=not on_step,
                prog_bar=name == "loss",
                batch_size=int(batch["num_pairs"]),
                sync_dist=not on_step,
            )
        return out.loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:  # noqa: D102
        return self._step("train", batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # noqa: D102
        self._step("val", batch)

    def configure_optimizers(self):
        """The optimizer over the trainable (LoRA) parameters and, with a ``scheduler``, its schedule
        over the run's optimizer steps (:func:`coin_lightning.model.schedule.training_steps`), stepped
        every step. A resumed run restores the scheduler's step from the checkpoint.

        Raises:
            ConfigError: no trainable parameters.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("model has no trainable parameters (LoRA not applied?)")
        factory = self.optimizer_factory or (lambda ps: torch.optim.AdamW(ps, lr=1e-4))
        optimizer = factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, num_training_steps=training_steps(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def trainable_names(self) -> set[str]:
        """``state_dict`` keys of the trainable (adapter) tensors.

        Under FSDP ``named_parameters`` contains wrapper prefixes (``_fsdp_wrapped_module.``,
        ``_checkpoint_wrapped_module.``) that FSDP's state dicts do not; they are removed here.
        """
        return {re.sub(r"_(fsdp|checkpoint)_wrapped_module\.", "", n) for n, p in self.named_parameters() if p.requires_grad}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, except norm clipping under FSDP: ``FSDP.clip_grad_norm_`` on the sharded root.

        Lightning's FSDP precision plugin refuses ``gradient_clip_algorithm="norm"``; the global norm of
        sharded gradients needs FSDP's own method (it all-reduces the shards' squared norms).
        """
        fsdp = isinstance(self.trainer.strategy, FSDPStrategy)
        if fsdp and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable tensors (LoRA adapters) in the checkpoint's ``state_dict``."""
        trainable = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check that the checkpoint holds every trainable tensor of this module.

        Under FSDP, Lightning loads the adapter itself and removes ``state_dict`` before this hook (the
        config was compared with it before the model loaded: :func:`~coin_lightning.model.checks.check_checkpoint`).

        Raises:
            ConfigError: adapter tensors are missing (e.g. a checkpoint of a different LoRA config).
        """
        missing = sorted(self.trainable_names() - set(checkpoint["state_dict"])) if "state_dict" in checkpoint else []
        if missing:
            raise ConfigError(
                f"checkpoint lacks {len(missing)} trainable tensor(s) of this model, e.g. {missing[0]!r}: "
                "was it written with different model.lora settings?"
            )
