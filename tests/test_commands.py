"""The commands' help (usage, examples, only the groups each uses), the ``+`` hint for keys that are
not in the config, and the third-party noise filter (coin_lightning.commands)."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from coin_lightning.commands import NOISY_LOG_MESSAGES, DropMessages, quiet_third_party
from coin_lightning.conf import CONFIG_DIR

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
GROUPS = {  # the config groups each Hydra command composes (its primary config's defaults list)
    "train": {"model", "data", "loss", "scheduler", "trainer", "logger", "callbacks", "experiment", "hydra/launcher"},
    "evaluate": {"model", "trainer", "logger", "hydra/launcher"},
    "analyze": {"model", "trainer", "logger"},
    "export": {"model"},
}


def _help(module: str, tmp_path: Path) -> str:
    out = subprocess.run([sys.executable, "-m", f"coin_lightning.{module}", "--help"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("module", sorted(GROUPS))
def test_hydra_help_is_usage_examples_and_the_groups_the_command_uses(module, tmp_path):
    text = _help(module, tmp_path)
    command = f"coin-{module}"
    assert text.startswith(f"Usage: {command} ")
    examples = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 3 <= len(examples) <= 5 and all(line.strip().startswith(command) for line in examples)
    listed = text.split("Config groups (group=option):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    groups = {line.split()[0] for line in listed}
    assert groups == GROUPS[module]
    for line in listed:  # every option file of the group, from the config directory
        group, options = line.split(maxsplit=1)
        assert options.split(", ") == sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))
    assert "schema" not in text and len(text.splitlines()) < 45


@pytest.mark.parametrize("module", ["compare", "download"])
def test_argparse_help_starts_with_usage_then_examples(module, tmp_path):
    text = _help(module, tmp_path)
    assert text.startswith(f"usage: coin-{module} ")
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 3 <= len(examples) <= 5 and all(line.strip().startswith(f"coin-{module}") for line in examples)
    assert "python -m" not in text


def test_a_key_missing_from_the_config_gets_the_plus_hint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "coin_lightning.train", "model=tiny_llama", "trainer.fast_dev_run=true"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: trainer.fast_dev_run: unknown key; a key that is not in the config file (e.g. any lightning.Trainer "
        "argument) is added with +: +trainer.fast_dev_run=true")


def test_noise_is_filtered_by_exact_message_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=1)
        warnings.warn("'set_vital' is deprecated, please do not call", UserWarning, stacklevel=1)
        warnings.warn("coin_lightning: some other deprecation", FutureWarning, stacklevel=1)
        warnings.warn("some other user warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["coin_lightning: some other deprecation", "some other user warning"]

    name, (advert,) = next(iter(NOISY_LOG_MESSAGES.items()))
    logger = logging.getLogger(name)
    assert sum(isinstance(f, DropMessages) for f in logger.filters) == 1
    quiet_third_party()  # idempotent
    assert sum(isinstance(f, DropMessages) for f in logger.filters) == 1
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        logger.warning(advert + " to enable LitLogger.")
        logger.warning("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["GPU available: False, used: False"]


def test_lightning_messages_go_to_the_console_once(tmp_path):
    out = subprocess.run([sys.executable, "-m", "coin_lightning.train", "model=tiny_llama", "+trainer.fast_dev_run=true",
                          "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    console = out.stdout + out.stderr
    assert console.count("GPU available: False, used: False") == 1
    assert "litlogger" not in console and "Warning" not in console
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")  # the job's log file still has it
    assert re.search(r"\]\[lightning\.pytorch\.utilities\.rank_zero\]\[INFO\] - GPU available", log)
