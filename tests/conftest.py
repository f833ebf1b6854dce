"""Shared fixtures: the tiny random LLaMA with the embedded tokenizer, and the shared data pack."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CFG = {
    "name_or_path": "tiny:llama",
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (skips when absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data pack not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (cached after the first load)."""
    from coin_lightning.model.loading import load_tokenizer

    return load_tokenizer(TINY_CFG)


@pytest.fixture()
def tiny_model():
    """A fresh tiny random LLaMA (fp32) and its tokenizer."""
    from coin_lightning.model.loading import load_model

    return load_model(TINY_CFG)
