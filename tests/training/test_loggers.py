"""Every logger receives the resolved run config (``coin_lightning.training.loggers.log_config``)."""
from __future__ import annotations

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.training.loggers import log_config


def _cfg(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"output_dir={tmp_path}", "model=tiny_llama", "seed=7", *overrides])


def test_csv_and_tensorboard_write_the_resolved_config(tmp_path):
    cfg = _cfg(tmp_path, "logger=many")
    loggers = [instantiate(node) for node in cfg.logger.values()]
    log_config(loggers, cfg)
    for logger in loggers:
        logger.save()
        hparams = yaml.safe_load((tmp_path / logger.name / "hparams.yaml").read_text())
        assert "${" not in (tmp_path / logger.name / "hparams.yaml").read_text()
        # interpolated values arrive resolved: logger save dirs, trainer root, the relative probe size
        assert hparams["logger"]["csv"]["save_dir"] == str(tmp_path)
        assert hparams["trainer"]["default_root_dir"] == str(tmp_path)
        assert hparams["callbacks"]["adapter"]["dirpath"] == f"{tmp_path}/adapter"
        ev = hparams["evaluation"]["eval"]
        assert ev["probe_size"] == ev["perturb"]["adversarial"]["probe_size"] == cfg.evaluation.eval.probe_size
        assert hparams["data"]["batch_size"] == cfg.data.batch_size
        assert hparams["seed"] == 7
        assert hparams["model"]["name_or_path"] == "tiny:llama" and hparams["model"]["lora"]["r"] == 8
        assert hparams["loss"]["lambda"] == cfg.loss["lambda"]


def test_wandb_offline_run_config_is_the_nested_resolved_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _cfg(tmp_path, "logger=wandb")
    logger = instantiate(cfg.logger.wandb)
    try:
        log_config([logger], cfg)
        config = logger.experiment.config
        assert config["model"]["lora"]["r"] == 8 and config["seed"] == 7
        assert config["logger"]["wandb"]["save_dir"] == str(tmp_path)
    finally:
        logger.experiment.finish()
