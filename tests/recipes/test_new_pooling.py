"""docs/EXTENDING.md, recipe 1: a new pooling is one function registered with ``register_pooling``.

The toy pooling defined here, ``max``, takes the element-wise maximum over each row's real tokens. The
test follows the recipe and checks that ``loss.pooling=max`` reaches the InfoNCE of CoinModule, against
the pooled states and the InfoNCE computed by hand from each row's unpadded forward pass.
"""
from __future__ import annotations

import pytest
import torch

from coin_lightning.losses import POOLINGS, LossArgs, register_pooling
from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.model.module import CoinModule
from tests.conftest import TINY_CFG
from tests.helpers import make_batch, toy_rows


# --- the recipe: the plug-in ---------------------------------------------------------------------
def max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, response_start=None) -> torch.Tensor:
    """Element-wise maximum over the real tokens: ``[N, T, H] -> [N, H]``."""
    return hidden.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf")).amax(dim=1)


@pytest.fixture
def registered():
    register_pooling("max")(max_pool)
    yield
    del POOLINGS["max"]
# ------------------------------------------------------------------------------------------------


def test_the_config_accepts_the_registered_pooling_only_while_registered(registered):
    assert LossArgs.from_config({"pooling": "max"}).pooling == "max"
    del POOLINGS["max"]
    with pytest.raises(ValueError, match="loss.pooling"):
        LossArgs.from_config({"pooling": "max"})
    POOLINGS["max"] = max_pool


def test_info_nce_pools_with_the_registered_function(registered):
    base, tok = load_model(TINY_CFG)
    torch.manual_seed(0)
    module = CoinModule(apply_lora(base, TINY_CFG), {"lambda": 1.0, "pooling": "max", "temperature": 0.1})
    prompts, targets = toy_rows(2, seed=4)
    batch = make_batch(tok, prompts, targets, 2, side="left", pad_extra=2)
    with torch.no_grad():
        out = module.compute(batch)
        pooled = []
        for i in range(4):  # each row alone, unpadded: the maximum over its tokens' final states
            keep = batch["attention_mask"][i].bool()
            states = module.model(input_ids=batch["input_ids"][i][keep][None], output_hidden_states=True).hidden_states[-1]
            pooled.append(states[0].max(dim=0).values)
    a, p = torch.stack(pooled[:2]), torch.stack(pooled[2:])
    cos = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T / 0.1
    want = (torch.nn.functional.cross_entropy(cos, torch.arange(2)) + torch.nn.functional.cross_entropy(cos.T, torch.arange(2))) / 2
    assert out.info_nce.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    last = CoinModule(module.model, {"lambda": 1.0, "pooling": "last", "temperature": 0.1}).compute(batch)
    assert last.info_nce.item() != pytest.approx(want.item(), rel=1e-3)  # the pooling made the difference
