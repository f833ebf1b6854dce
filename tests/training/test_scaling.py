"""Scale-out plumbing: Hydra launchers (submitit SLURM, joblib), one output directory per job under DDP,
the multirun guard (``coin_lightning.training.checks``) and the FSDP trainer config
(``coin_lightning.training.fsdp``). Equivalence of DDP/FSDP training with one process, checkpoints and
resume on another device count are in ``test_distributed.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from safetensors.torch import load_file

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.model.module import ConfigError
from coin_lightning.training.checks import check_launch

REPO = Path(__file__).resolve().parents[2]
SMALL = [  # a 2-step run of the tiny model on a small slice of the embedded data
    "model=tiny_llama",
    "data.n_per_task=8",
    "data.val_size=4",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "logger=csv",
    "~callbacks.progress",
]


def _train(args: list[str], cwd: Path, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    cmd = [sys.executable, "-m", "coin_lightning.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _compose(overrides: list[str], hydra_cfg: bool = False):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_cfg)


# ------------------------------------------------------------------------------------------- launchers
def test_submitit_slurm_config_composes_with_every_plugin_key(tmp_path):
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from omegaconf import OmegaConf

    args = ["--cfg", "hydra", "hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"]
    proc = _train(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"] == SlurmQueueConf._target_
    # the file replaces the plugin's structured defaults, so it must carry every key of its schema
    assert set(launcher) == set(OmegaConf.structured(SlurmQueueConf))


@pytest.mark.parametrize("nodes", [1, 2])
def test_submitit_slurm_writes_an_sbatch_script_for_n_nodes_of_8_gpus(tmp_path, nodes):
    """The real launcher and submitit up to ``sbatch``, which is a stub here that fails after the script is written."""
    stub = tmp_path / "bin"
    stub.mkdir()
    for tool, body in {"sbatch": 'echo "stub sbatch: no cluster" >&2; exit 1', "srun": "exit 1"}.items():
        (stub / tool).write_text(f"#!/bin/sh\n{body}\n")
        (stub / tool).chmod(0o755)
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=8", f"trainer.num_nodes={nodes}"]
    args += ["hydra.launcher.partition=gpu", f"hydra.sweep.dir={sweep}", "loss.lambda=0,1000"]
    proc = _train(args, tmp_path, path_prefix=stub)
    assert proc.returncode != 0 and "stub sbatch: no cluster" in proc.stderr
    (script,) = (sweep / ".submitit").glob(".submission_file_*.sh")
    lines = set(script.read_text().splitlines())
    for want in (f"#SBATCH --nodes={nodes}", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --job-name=train",
                 "#SBATCH --signal=USR1@120",  # the requeue signal of callbacks.interrupt, not submitit's USR2
                 "export SLURM_KILL_BAD_EXIT=1"):  # srun ends every rank when one exits with an error
        assert want in lines, f"{want!r} missing from {script.name}"
    assert not any("USR2" in line for line in lines)
    assert any(line.startswith("srun ") for line in lines)  # SLURM starts the 8 tasks per node, not Lightning


def test_joblib_multirun_runs_two_jobs_in_separate_directories(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", "seed=1,2", *SMALL]
    proc = _train(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    adapters = []
    for num, seed in (("0", 1), ("1", 2)):
        summary = json.loads((sweep / num / "summary.json").read_text())
        assert summary["config"]["seed"] == seed and summary["global_step"] == 2
        assert Path(summary["paths"]["output_dir"]) == sweep / num
        assert (sweep / num / "adapter" / "adapter_config.json").is_file()
        adapters.append(load_file(sweep / num / "adapter" / "adapter_model.safetensors"))
    assert adapters[0].keys() == adapters[1].keys()
    assert any(not torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])  # two separate trainings


def test_ddp_cpu_run_writes_every_rank_into_one_job_directory(tmp_path):
    """Lightning re-runs the command for rank 1 with the job's hydra.run.dir: no second directory appears."""
    proc = _train(["trainer=ddp_cpu", *SMALL], tmp_path)  # default run dir: outputs/train/runs/<time>
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["train"]
    assert [p.name for p in (tmp_path / "outputs" / "train").iterdir()] == ["runs"]
    (job,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert (job / "train.log").is_file() and (job / "train_ddp_process_1.log").is_file()  # rank 0's and rank 1's Hydra logs
    summary = json.loads((job / "summary.json").read_text())
    assert summary["config"]["trainer"]["devices"] == 2 and summary["global_step"] == 2
    assert Path(summary["paths"]["output_dir"]).resolve() == job.resolve()


# ------------------------------------------------------------------------------------------- multirun guard
def _trainer_under_hydra(overrides: list[str], tmp_path):
    cfg = _compose([*overrides, f"output_dir={tmp_path}"], hydra_cfg=True)
    HydraConfig.instance().set_config(cfg)
    return instantiate(cfg.trainer, callbacks=[], logger=False)


@pytest.fixture()
def hydra_reset():
    yield
    HydraConfig.instance().cfg = None


def test_multirun_refuses_ddp_processes_started_by_rerunning_the_command(tmp_path, hydra_reset):
    trainer = _trainer_under_hydra(["trainer=ddp_cpu", "hydra.mode=MULTIRUN"], tmp_path)
    with pytest.raises(ConfigError, match="multirun"):
        check_launch(trainer)
    check_launch(_trainer_under_hydra(["trainer=ddp_cpu", "hydra.mode=RUN"], tmp_path))  # single run: fine
    check_launch(_trainer_under_hydra(["trainer=cpu", "hydra.mode=MULTIRUN"], tmp_path))  # one process: fine


def test_multirun_allows_ddp_processes_started_by_slurm(tmp_path, hydra_reset, monkeypatch):
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "42",
             "SLURM_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    trainer = _trainer_under_hydra(["trainer=ddp_cpu", "hydra.mode=MULTIRUN"], tmp_path)
    assert type(trainer.strategy.cluster_environment).__name__ == "SLURMEnvironment"
    check_launch(trainer)


# ------------------------------------------------------------------------------------------- trainer configs
@pytest.mark.parametrize("name", ["cpu", "gpu", "ddp", "ddp_cpu", "fsdp"])
def test_trainer_configs_compose_with_accumulation_clipping_and_checkpoints(name):
    cfg = _compose([f"trainer={name}", "output_dir=unused"])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.accumulate_grad_batches >= 1 and cfg.trainer.gradient_clip_val > 0
    assert cfg.callbacks.model_checkpoint.save_last is True


def test_fsdp_config_builds_a_lora_aware_strategy(tiny_model):
    from lightning import Trainer
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from coin_lightning.model.lora import apply_lora
    from tests.conftest import TINY_CFG

    cfg = _compose(["trainer=fsdp", "output_dir=unused"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD and strategy._state_dict_type == "full"

    # the wrap policy on a LoRA model: every decoder layer and every LoRA A/B Linear is its own unit
    model = apply_lora(tiny_model[0], TINY_CFG)
    for p in model.parameters():  # a bf16 base next to fp32 LoRA tensors, as model=alpaca loads it
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    root = {"mixed_precision": strategy.mixed_precision}
    units = strategy.kwargs["auto_wrap_policy"]._run_policy(model, ignored_modules=set(), root_kwargs=root)
    names = {n for n, m in model.named_modules() if m in units}
    lora_leaves = ("lora_A.default", "lora_B.default")
    want = {n for n, m in model.named_modules() if isinstance(m, LlamaDecoderLayer) or n.endswith(lora_leaves)}
    assert names - {""} == want  # "" = the root, always a unit
    # bf16-mixed: decoder layers take the root's policy (stored dtype), LoRA units their own fp32 one
    dtypes = {n: units[m]["mixed_precision"].param_dtype for n, m in model.named_modules() if m in units}
    assert {dtypes[n] for n in want if n.endswith(lora_leaves)} == {torch.float32}
    assert {dtypes[n] for n in want if not n.endswith(lora_leaves)} == {None}
    assert all(units[m]["mixed_precision"].reduce_dtype == torch.float32 for m in units)
    # so no unit mixes frozen and trainable tensors or dtypes (FSDP flattens each unit into one tensor)
    for name, unit in [("", model), *((n, m) for n, m in model.named_modules() if m in units)]:
        nested = [m for n, m in unit.named_modules() if n and m in units]
        inner = {id(p) for m in nested for p in m.parameters()}
        own = [p for p in unit.parameters() if id(p) not in inner]
        assert len({(p.requires_grad, p.dtype) for p in own}) <= 1, f"unit {name!r} mixes frozen/trainable or dtypes"

    with pytest.raises(ValueError, match="requires a GPU"):  # the FSDP run itself needs CUDA devices
        Trainer(accelerator="cpu", devices=2, strategy=strategy)
