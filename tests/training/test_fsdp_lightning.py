"""``trainer=fsdp`` through Lightning's own FSDP wrapping, on two CPU ranks (gloo).

The job is the entry point's (``training/run.py``): validation before fit, fit, checkpoints, the peft
adapter export, then a resume with ``ckpt_path=auto``. The strategy is the class
``conf/trainer/fsdp.yaml`` names, with its auto-wrap and mixed-precision policies and its precision
(``bf16-mixed``), on a bf16 frozen base with fp32 LoRA tensors as ``model=alpaca`` loads it; only the
CUDA assumptions are lifted (``tests/training/_fsdp_cpu.py``). Lightning's strategy alone wraps the
module again at fit after the validation and crashes (Lightning issue #19015).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from coin_lightning.model.loading import load_model
from coin_lightning.model.lora import apply_lora
from coin_lightning.training.fsdp import LoraWrapRule
from tests.conftest import TINY_CFG
from tests.training._fsdp_train import FSDP_CPU

REPO = Path(__file__).resolve().parents[2]


def _train(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tests.training._fsdp_train", str(out), *FSDP_CPU, *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _fresh_lora():
    """The tiny LLaMA with the LoRA adapter of ``conf/model/tiny_llama.yaml`` (rank 8, q/k/v/o)."""
    return apply_lora(load_model(TINY_CFG)[0], TINY_CFG)


def _peft_file_key(ckpt_key: str) -> str:
    """A checkpoint key (``model.<peft name>``) as peft's adapter file names it (no ``model.``, no adapter name)."""
    return ckpt_key.removeprefix("model.").replace(".default.", ".")


def test_validation_first_fit_checkpoint_export_and_resume_bf16_base(tmp_path):
    out = tmp_path / "job"
    bf16 = ["trainer.max_steps=3", "+callbacks.bf16._target_=tests.training._fsdp_train.FrozenBaseIn",
            "+callbacks.wrapping._target_=tests.training._fsdp_train.RecordWrapping",
            f"+callbacks.wrapping.path={tmp_path}/wrapping.json"]
    stop = ["+callbacks.stop._target_=tests.training.test_train_entry.StopAt", "+callbacks.stop.step=2"]
    first = _train(out, *bf16, *stop)  # validate (step 0) -> fit, stopped after step 2 (validated there)
    assert first.returncode == 0, first.stderr[-4000:]

    # one FSDP root around the LightningModule serves the validation and fit, with the config's units
    model = _fresh_lora()
    rule = LoraWrapRule(["LlamaDecoderLayer"], "bf16-mixed")
    units = 1 + sum(bool(rule(m)) for m in model.modules())  # the root + decoder layers + LoRA A/B Linears
    stages = json.loads((tmp_path / "wrapping.json").read_text())
    assert [s["fn"] for s in stages] == ["validate", "fit", "fit"]  # before fit, fit start, validation at step 2
    assert all(s["fsdp_root"] and s["units"] == units for s in stages), stages
    assert len({s["root"] for s in stages}) == 1
    assert all(s["frozen"] == ["bfloat16"] and s["trainable"] == ["float32"] for s in stages), stages

    # the checkpoint: every adapter tensor (fp32, trained), nothing of the frozen base
    adapter_names = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad}
    ckpt = torch.load(out / "checkpoints" / "step000002.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 and set(ckpt["state_dict"]) == adapter_names
    assert {v.dtype for v in ckpt["state_dict"].values()} == {torch.float32}
    assert all(ckpt["state_dict"][n].abs().sum() > 0 for n in adapter_names if "lora_B" in n)  # LoRA B starts at 0
    # the peft export (gathered from the shards) holds the same tensors
    exported = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert set(exported) == {_peft_file_key(k) for k in adapter_names}
    for key, value in ckpt["state_dict"].items():
        torch.testing.assert_close(exported[_peft_file_key(key)], value, rtol=0, atol=0)
    learned = json.loads((out / "summary.json").read_text())["learning"]["curve"]
    assert set(learned) == {"0", "2"}

    # resume in the same job directory: validation of the restored adapter, fit to step 3, validation after
    second = _train(out, *bf16, "ckpt_path=auto")
    assert second.returncode == 0, second.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 3 and set(summary["learning"]["curve"]) == {"2", "3"}
    assert summary["learning"]["curve"]["2"] == pytest.approx(learned["2"], rel=1e-6)  # the same adapter, restored
    stages = json.loads((tmp_path / "wrapping.json").read_text())
    assert [s["fn"] for s in stages] == ["validate", "fit", "validate"] and len({s["root"] for s in stages}) == 1
    last = torch.load(out / "checkpoints" / "step000003.ckpt", weights_only=False)
    moments = last["optimizer_states"][0]["state"]  # AdamW continued from the checkpoint's state: its 3rd step
    assert len(moments) == len(adapter_names) and {float(s["step"]) for s in moments.values()} == {3.0}
    assert any(not torch.equal(last["state_dict"][n], ckpt["state_dict"][n]) for n in adapter_names)


def test_fsdp_on_one_device_is_refused_before_the_model_loads():
    """torch runs NO_SHARD on one device, where the frozen base's full state dict fails after a forward:
    refused when a callback would write it; without those callbacks the run may go on (gpu-check)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from coin_lightning.conf import CONFIG_DIR
    from coin_lightning.errors import ConfigError
    from coin_lightning.training.checks import check_launch
    from coin_lightning.training.loggers import instantiate_group

    def trainer(devices: int, *extra: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[*FSDP_CPU, f"trainer.devices={devices}", "output_dir=unused", *extra])
        return instantiate(cfg.trainer, logger=False, callbacks=instantiate_group(cfg.callbacks))

    with pytest.raises(ConfigError, match="trainer=fsdp with one device"):
        check_launch(trainer(1))
    check_launch(trainer(2))
    check_launch(trainer(1, "~callbacks.model_checkpoint", "~callbacks.adapter", "~callbacks.interrupt",
                         "+trainer.enable_checkpointing=false"))
