"""The Liger step: generation loss (CE) and InfoNCE of one fixed batch on the GPU in fp32, with
transformers' own LLaMA modules (the reference) and with Liger-Kernel's (``model.liger_kernels=true``),
the same LoRA weights.

Liger patches transformers' LLaMA classes and its rotary-embedding function for the whole process:
every model built afterwards, and the rotary embedding of models built before. Both losses are
therefore computed in a child process (``python -m experiments.gpu_check.liger OUT.json MODEL``), the
reference first, before anything applies Liger; the check's own process never applies it.
Tolerances: CE within relative :data:`CE_REL_TOL`, InfoNCE within absolute :data:`INFO_NCE_ABS_TOL`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

CE_REL_TOL = 1e-3
"""Relative difference of the generation loss, Liger vs transformers' modules (fp32)."""
INFO_NCE_ABS_TOL = 1e-2
"""Absolute difference of InfoNCE (temperature 0.05 amplifies small differences of the pooled states)."""


def liger_modules(model) -> int:
    """Number of sub-modules whose class is one of Liger-Kernel's (``Liger*``)."""
    return sum(type(m).__name__.startswith("Liger") for m in model.modules())


def _losses(model_group: str, liger: bool, lora: dict | None) -> tuple[dict[str, Any], dict]:
    """CE and InfoNCE of the first training batch of the embedded data, GPU fp32, eval mode (no
    dropout); with ``lora`` None the LoRA B matrices get seeded non-zero values, else ``lora`` is loaded."""
    import lightning as L
    import torch

    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule
    from coin_lightning.download import compose_config
    from coin_lightning.model.loading import load_model
    from coin_lightning.model.lora import apply_lora
    from coin_lightning.model.module import CoinModule

    cfg = compose_config("train", [f"model={model_group}", f"model.liger_kernels={str(liger).lower()}", "output_dir=unused"])
    L.seed_everything(0)
    base, tokenizer = load_model(cfg.model)
    model = apply_lora(base, cfg.model)
    with torch.no_grad():
        if lora is None:
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02)
            lora = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
        else:
            model.load_state_dict(lora, strict=False)
    datamodule = CoinDataModule(DataArgs.from_config(cfg.data), tokenizer=tokenizer, seed=cfg.seed)
    datamodule.setup("fit")
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in next(iter(datamodule.train_dataloader())).items()}
    module = CoinModule(model, loss=cfg.loss).eval().cuda()
    with torch.no_grad():
        out = module.compute(batch)
    return {"ce": float(out.ce), "info_nce": float(out.info_nce), "liger_modules": liger_modules(model)}, lora


def child(path: Path, model_group: str) -> None:
    """The child process: the reference, then Liger; writes both to ``path`` (JSON)."""
    reference, lora = _losses(model_group, liger=False, lora=None)
    liger, _ = _losses(model_group, liger=True, lora=lora)
    path.write_text(json.dumps({"reference": reference, "liger": liger}))


def compare(model_group: str, out: Path) -> dict[str, Any]:
    """Run :func:`child` and check its losses (see the module docstring).

    Returns:
        Both losses, their differences and tolerances, the count of Liger modules in each model; ``ok``
        when the differences are within the tolerances, the reference has no Liger module and the
        Liger model has some.

    Raises:
        RuntimeError: the child process failed (its last output line).
    """
    from experiments.gpu_check.processes import run_module

    out.mkdir(parents=True, exist_ok=True)
    path = out / "losses.json"
    run_module("experiments.gpu_check.liger", str(path), model_group)
    data = json.loads(path.read_text())
    ref, lig = data["reference"], data["liger"]
    ce_rel = abs(lig["ce"] - ref["ce"]) / abs(ref["ce"])
    nce_abs = abs(lig["info_nce"] - ref["info_nce"])
    return {
        "ce": ref["ce"], "ce_liger": lig["ce"], "ce_rel_diff": ce_rel, "ce_rel_tol": CE_REL_TOL,
        "info_nce": ref["info_nce"], "info_nce_liger": lig["info_nce"], "info_nce_abs_diff": nce_abs,
        "info_nce_abs_tol": INFO_NCE_ABS_TOL,
        "reference_liger_modules": ref["liger_modules"], "liger_modules": lig["liger_modules"],
        "ok": (ce_rel <= CE_REL_TOL and nce_abs <= INFO_NCE_ABS_TOL and ref["liger_modules"] == 0
               and lig["liger_modules"] > 0),
    }


if __name__ == "__main__":
    child(Path(sys.argv[1]), sys.argv[2])
