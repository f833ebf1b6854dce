"""Hub models and adapters at a pinned ``revision`` from ``model.cache_dir`` (``coin_lightning.model.loading``).

No network: the test writes a Hugging Face hub cache by hand (``models--org--name/snapshots/<commit>``
and ``refs/<branch>``, the layout ``huggingface_hub`` reads) holding two revisions with different
weights, and loads with ``HF_HUB_OFFLINE=1`` (set in ``tests/conftest.py``). A revision that is
passed reaches the weights that are loaded; ``model.cache_dir`` is the only place those files exist.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coin_lightning.model.loading import ModelLoadError, TinyArgs, build_tiny_llama, load_model
from coin_lightning.model.lora import apply_lora
from tests.conftest import TINY_CFG

MAIN, V2 = "a" * 40, "b" * 40  # commit hashes of the two revisions


def _snapshot(cache: Path, repo: str, commit: str, branch: str) -> Path:
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / branch).write_text(commit)
    path = root / "snapshots" / commit
    path.mkdir(parents=True)
    return path


@pytest.fixture()
def hub_cache(tmp_path, tokenizer):
    """A hub cache with ``org/tiny`` (main: seed 0, v2: seed 1) and ``org/adapter`` (main, v2: different B)."""
    cache = tmp_path / "hub"
    for commit, branch, seed in ((MAIN, "main", 0), (V2, "v2", 1)):
        model = build_tiny_llama(len(tokenizer), TinyArgs(seed=seed), pad_token_id=tokenizer.pad_token_id)
        path = _snapshot(cache, "org/tiny", commit, branch)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        peft_model = apply_lora(build_tiny_llama(len(tokenizer), TinyArgs()), TINY_CFG)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.fill_(seed + 1.0)
        peft_model.save_pretrained(_snapshot(cache, "org/adapter", commit, branch))
    return cache


def _first_weight(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def test_hub_model_revision_and_cache_dir(hub_cache, tokenizer):
    cfg = {"name_or_path": "org/tiny", "cache_dir": str(hub_cache)}
    pad = tokenizer.pad_token_id
    build = lambda seed: build_tiny_llama(len(tokenizer), TinyArgs(seed=seed), pad_token_id=pad)  # noqa: E731
    want = {"main": _first_weight(build(0)), "v2": _first_weight(build(1))}
    for revision, key in ((None, "main"), ("main", "main"), ("v2", "v2"), (V2, "v2")):
        model, tok = load_model({**cfg, "revision": revision})
        torch.testing.assert_close(_first_weight(model), want[key], atol=0, rtol=0, msg=f"revision={revision}")
        assert tok.padding_side == "left" and len(tok) == len(tokenizer)
    with pytest.raises(ModelLoadError, match="model.name_or_path='org/tiny'.* at revision 'no-such-branch'"):
        load_model({**cfg, "revision": "no-such-branch"})
    with pytest.raises(ModelLoadError, match="model.name_or_path='org/tiny'"):  # only model.cache_dir holds it
        load_model({"name_or_path": "org/tiny", "cache_dir": str(hub_cache.parent / "elsewhere")})


def test_hub_adapter_revision(hub_cache):
    for revision, value in ((None, 1.0), ("v2", 2.0), (MAIN, 1.0)):
        args = {**TINY_CFG, "adapter": "org/adapter", "adapter_revision": revision, "cache_dir": str(hub_cache)}
        model = apply_lora(load_model(TINY_CFG)[0], args)
        b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert b and all(p.requires_grad and torch.all(p == value) for p in b), f"adapter_revision={revision}"
    with pytest.raises(ModelLoadError, match="adapter='org/adapter'.* at revision 'v3'"):
        missing = {**TINY_CFG, "adapter": "org/adapter", "adapter_revision": "v3", "cache_dir": str(hub_cache)}
        apply_lora(load_model(TINY_CFG)[0], missing)


def test_local_directory_needs_no_revision(tmp_path, tokenizer):
    model = build_tiny_llama(len(tokenizer), TinyArgs(seed=3), pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_model({"name_or_path": str(tmp_path)})
    torch.testing.assert_close(_first_weight(loaded), _first_weight(model), atol=0, rtol=0)
