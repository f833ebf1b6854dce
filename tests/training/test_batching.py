"""The global batch -> gradient accumulation, and validation in optimizer steps (training/batching.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.model.module import ConfigError
from coin_lightning.training.batching import apply_batch_plan, apply_epoch_fraction, plan_batches, resolve_devices


@pytest.mark.parametrize(
    "micro,devices,nodes,accumulate",
    [(2, 1, 1, 32), (2, 4, 1, 8), (2, 8, 1, 4), (2, 8, 2, 2), (2, 8, 4, 1), (4, 2, 1, 8), (8, 8, 1, 1)],
)
def test_accumulation_keeps_the_global_batch(micro, devices, nodes, accumulate):
    plan = plan_batches(batch_size=micro, devices=devices, num_nodes=nodes, global_batch_size=64)
    assert plan.accumulate_grad_batches == accumulate
    assert plan.world_size == devices * nodes
    assert micro * plan.accumulate_grad_batches * devices * nodes == plan.global_batch_size == 64


@pytest.mark.parametrize("micro,devices,nodes", [(2, 3, 1), (2, 8, 8), (6, 1, 1), (2, 5, 2)])
def test_global_batch_that_does_not_divide_is_refused_with_the_numbers(micro, devices, nodes):
    with pytest.raises(ConfigError, match=r"data\.global_batch_size=64") as err:
        plan_batches(batch_size=micro, devices=devices, num_nodes=nodes, global_batch_size=64)
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("data.global_batch_size=64", f"data.batch_size={micro}", f"trainer.devices={devices}",
                 f"trainer.num_nodes={nodes}", f"= {micro * devices * nodes}"):
        assert part in msg


def test_without_a_global_batch_the_accumulation_is_kept():
    plan = plan_batches(batch_size=2, devices=8, accumulate_grad_batches=32)
    assert plan.accumulate_grad_batches == 32 and plan.global_batch_size == 2 * 32 * 8


def test_validation_interval_is_counted_in_optimizer_steps():
    plan = plan_batches(batch_size=2, devices=8, global_batch_size=64, val_every_n_steps=200, val_batches=50)
    assert plan.val_check_interval == 200 * 4  # micro-batches: 200 optimizer steps x 4 accumulation
    assert plan.limit_val_batches == 50
    kept = plan_batches(batch_size=2, devices=1, val_check_interval=0.5, limit_val_batches=0.25)
    assert kept.val_check_interval == 0.5 and kept.limit_val_batches == 0.25


@pytest.mark.parametrize("key,kw", [("data.global_batch_size", {"global_batch_size": 0}),
                                    ("data.val_every_n_steps", {"val_every_n_steps": -2}),
                                    ("data.batch_size", {"batch_size": 0})])
def test_bad_values_name_their_key(key, kw):
    args = {"batch_size": 2, "devices": 1, **kw}
    with pytest.raises(ConfigError, match=key):
        plan_batches(**args)


def test_devices_resolve_without_starting_processes(monkeypatch):
    from lightning.pytorch.accelerators import CUDAAccelerator

    assert resolve_devices(4) == 4
    assert resolve_devices([0, 2, 5]) == 3
    assert resolve_devices("0,1") == 2
    assert resolve_devices("3") == 3
    assert resolve_devices("auto", "cpu") == 1 and resolve_devices(-1, "cpu") == 1
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: 8))
    assert resolve_devices("auto", "gpu") == 8 and resolve_devices(-1, "cuda") == 8 and resolve_devices("-1", "auto") == 8
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    with pytest.raises(ConfigError, match="trainer.devices=auto"):
        resolve_devices("auto", "gpu")
    for bad in ("many", 0, True):
        with pytest.raises(ConfigError, match="trainer.devices"):
            resolve_devices(bad, "cpu")


def _compose(overrides):
    """A composed ``train.yaml``'s ``data`` and ``trainer``, resolved (as :class:`TrainRun` holds them)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=[*overrides, "output_dir=unused"]), resolve=True)
    return SimpleNamespace(**cfg["data"]), cfg["trainer"]  # the DataArgs fields, without reading data.path


def test_paper_experiment_on_8_gpus_accumulates_4_and_3_gpus_are_refused():
    data, trainer = _compose(["experiment=coin_alpaca", "trainer=ddp", "trainer.devices=8", "data.path=/x.csv"])
    plan = apply_batch_plan(data, trainer)
    assert trainer["accumulate_grad_batches"] == 4 and plan.global_batch_size == 64
    # validation every 1/8 of the epoch, as the reference: int(64,000 examples / 64 / 8) = 125 steps of 4 micro-batches
    assert apply_epoch_fraction(data, trainer, train_examples=64_000, global_batch_size=plan.global_batch_size) == 125
    assert data.val_every_n_steps == 125 and trainer["val_check_interval"] == 125 * 4
    data, trainer = _compose(["experiment=coin_alpaca", "trainer=gpu", "data.path=/x.csv"])
    apply_batch_plan(data, trainer)
    assert trainer["accumulate_grad_batches"] == 32
    data, trainer = _compose(["experiment=coin_alpaca", "trainer=ddp", "trainer.devices=3", "data.path=/x.csv"])
    with pytest.raises(ConfigError, match=r"data.global_batch_size=64 .* data.batch_size=2 x trainer.devices=3 x "
                                          r"trainer.num_nodes=1 = 6"):
        apply_batch_plan(data, trainer)
    assert data.source == "coin_csv"


def test_more_gpus_than_the_machine_has_are_refused_before_anything_loads(monkeypatch):
    from lightning.pytorch.accelerators import CUDAAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: 4))
    data, trainer = _compose(["experiment=coin_alpaca", "trainer=ddp", "data.path=/x.csv"])  # ddp's default: 8 per node
    with pytest.raises(ConfigError, match=r"^trainer.devices=8 but this machine has 4 GPU\(s\)"):
        apply_batch_plan(data, trainer)
    data, trainer = _compose(["experiment=coin_alpaca", "trainer=ddp", "trainer.devices=4", "data.path=/x.csv"])
    assert apply_batch_plan(data, trainer).accumulate_grad_batches == 8


def test_integer_validation_interval_is_counted_across_epochs_and_fractions_per_epoch():
    data, trainer = _compose(["data.val_every_n_steps=500", "data.global_batch_size=8"])
    apply_batch_plan(data, trainer)
    assert trainer["val_check_interval"] == 500 * 4 and trainer["check_val_every_n_epoch"] is None
    data, trainer = _compose(["trainer.val_check_interval=0.5"])
    apply_batch_plan(data, trainer)
    assert trainer["check_val_every_n_epoch"] == 1
