"""model.liger_kernels: refused in one line, before any model loads, without CUDA or without the package."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from coin_lightning.errors import ConfigError
from coin_lightning.model.loading import load_model
from coin_lightning.speedups import PACKAGE, check_liger
from tests.conftest import TINY_CFG


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for hosts without CUDA")
def test_liger_kernels_without_cuda_are_refused_before_loading(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the tokenizer or model was loaded")

    monkeypatch.setattr("coin_lightning.model.loading.load_tokenizer", no_loading)
    with pytest.raises(ConfigError, match=r"^model\.liger_kernels=true needs a CUDA GPU") as exc:
        load_model(dict(TINY_CFG, liger_kernels=True))
    assert "\n" not in str(exc.value)
    check_liger(False)  # off: nothing to check


@pytest.mark.skipif(importlib.util.find_spec(PACKAGE) is not None, reason="liger-kernel is installed here")
def test_liger_kernels_without_the_package_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU host without the extra
    with pytest.raises(ConfigError, match=r"model\.liger_kernels=true needs the liger-kernel package"):
        check_liger(True)
