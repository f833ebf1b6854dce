"""Evaluation through Lightning Fabric: the CPU path predicts exactly what the predictor does, shards
of the rows add up to the whole, several processes (gloo) give the single-process results, a GPU
trainer on a machine without CUDA fails in one line before any model loads, and the evaluated model
is built as training builds it (``model.adapter``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

from coin_lightning.data.sources.glue import LABEL_WORDS
from coin_lightning.eval.engine.distributed import (
    ShardedPredictor,
    fabric_from_trainer,
    fabric_strategy,
    trainer_fields,
)
from coin_lightning.eval.engine.predict import Predictor
from coin_lightning.eval.scoring.metrics import FILES
from coin_lightning.eval.settings import EvalConfigError
from tests.eval.engine.test_predict import CONTENTS, INSTRUCTION
from tests.eval.eval_helpers import tiny
from tests.eval.test_evaluate import _cfg

REPO = Path(__file__).resolve().parents[3]


def _cpu_fabric():
    fabric = fabric_from_trainer({"accelerator": "cpu", "devices": 1, "precision": "32-true"})
    fabric.launch()
    return fabric


@pytest.mark.parametrize("method", ["generate", "rank"])
@pytest.mark.parametrize("prefix_cache", [True, False])
def test_cpu_fabric_predicts_exactly_as_the_predictor(method, prefix_cache):
    model, tok = tiny()
    kw = dict(method=method, batch_size=3, max_new_tokens=5, prefix_cache=prefix_cache)
    words = LABEL_WORDS["rte"]
    plain = Predictor(model, tok, **kw).predict(INSTRUCTION, CONTENTS, words)
    fabric = _cpu_fabric()
    sharded = ShardedPredictor(fabric, Predictor(model, tok, **kw)).predict(INSTRUCTION, CONTENTS, words)
    assert [astuple(p) for p in sharded] == [astuple(p) for p in plain]  # bitwise, scores included
    assert fabric.device == torch.device("cpu") and fabric.world_size == 1


@pytest.mark.parametrize("method", ["generate", "rank"])
def test_row_shards_add_up_to_all_rows(method):
    """Each of W processes predicts the batches r, r + W, ...: together every row once, as one process."""
    model, tok = tiny()
    p = Predictor(model, tok, method=method, batch_size=2, max_new_tokens=4)
    words = LABEL_WORDS["rte"]
    whole = p.predict(INSTRUCTION, CONTENTS, words)
    shards = [p.predict(INSTRUCTION, CONTENTS, words, shard=(r, 3)) for r in range(3)]
    for i, ref in enumerate(whole):
        owners = [s[i] for s in shards if s[i] is not None]
        assert len(owners) == 1
        assert (owners[0].answer, owners[0].pred) == (ref.answer, ref.pred)
        if method == "rank":
            assert owners[0].scores == pytest.approx(ref.scores, abs=1e-5)
    hidden = torch.empty(len(CONTENTS), model.config.hidden_size)
    for r in range(3):
        for rows, states in p.hidden_rows(INSTRUCTION, CONTENTS, shard=(r, 3)):
            hidden[rows] = states
    torch.testing.assert_close(hidden, p.last_hidden(INSTRUCTION, CONTENTS), atol=1e-5, rtol=0)


def test_trainer_configs_map_to_fabric():
    from hydra import compose, initialize_config_dir

    from coin_lightning.conf import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=["trainer=ddp_cpu"])
    fields = trainer_fields(cfg.trainer)
    assert set(fields) == {"accelerator", "devices", "precision", "strategy"} | ({"num_nodes"} & set(cfg.trainer))
    fabric = fabric_from_trainer(cfg.trainer)  # not launched: no processes started
    assert fabric.world_size == 2 and type(fabric.strategy).__name__ == "DDPStrategy"
    assert fabric.strategy.process_group_backend == "gloo"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        fsdp = compose(config_name="eval", overrides=["trainer=fsdp"])
    strategy = fabric_strategy(trainer_fields(fsdp.trainer)["strategy"], "gpu")  # evaluates as DDP on NCCL
    assert type(strategy).__name__ == "DDPStrategy" and strategy.process_group_backend == "nccl"
    with pytest.raises(EvalConfigError, match="evaluation runs with a DDP or FSDP strategy"):
        fabric_strategy({"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy"}, "gpu")
    with pytest.raises(EvalConfigError, match="trainer.precision=bf16-mixed: CPU evaluation runs in fp32"):
        fabric_from_trainer({"accelerator": "cpu", "precision": "bf16-mixed"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("trainer", ["gpu", "ddp", "fsdp"])
def test_gpu_trainer_without_cuda_fails_in_one_line_before_the_model_loads(tmp_path, monkeypatch, trainer):
    """Refused before the rows are read too: no data.root is needed (null = the hub, offline here)."""
    import coin_lightning.eval.cli as cli
    from coin_lightning.evaluate import run as evaluate

    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(cli, "load_for_inference", no_load)
    with pytest.raises(SystemExit, match=r"^error: trainer\.accelerator=gpu: this machine has no CUDA GPU") as err:
        evaluate(_cfg(tmp_path / "run", ["model=tiny_llama", f"trainer={trainer}", "eval.tasks=[rte]",
                                         "eval.samples_per_task=2"]))
    text = str(err.value)
    assert text.startswith("error: trainer.accelerator=gpu: this machine has no CUDA GPU") and "\n" not in text


def test_two_gloo_processes_give_the_single_process_results(tmp_path, shared_data):
    """``trainer=ddp_cpu`` from the command line: 2 processes share the rows, rank 0 writes; predictions
    and metrics equal the single-process run's."""
    from coin_lightning.evaluate import run as evaluate

    args = ["model=tiny_llama", "eval.tasks=[sst2]", f"data.root={shared_data / 'glue'}", "eval.samples_per_task=8",
            "eval.levels=[clean,sentence]", "eval.perturb.perturbations=[checklist]", "eval.batch_size=2"]
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "coin_lightning.evaluate", *args, "trainer=ddp_cpu",
                           f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = evaluate(_cfg(tmp_path / "single", args))
    ddp = json.loads((run / FILES["metrics"]).read_text())
    assert ddp["run"]["devices"] == 2 and single["run"]["devices"] == 1
    for key in ("per_task_level", "per_level", "overall", "fingerprint"):
        assert ddp[key] == single[key]
    def read(d):
        return [json.loads(x) for x in (d / FILES["predictions"]).read_text().splitlines()]
    assert read(run) == read(tmp_path / "single")
    assert not list(run.glob("*.tmp")) and (run / "csv" / "metrics.csv").is_file()


def test_model_adapter_is_loaded_and_the_evaluated_adapter_takes_its_place(tmp_path):
    """``model.adapter`` (alpaca-lora for ``model=alpaca``) is part of the evaluated model, as in training;
    an adapter trained from it (:func:`apply_lora` continues it) replaces it. Logits equal independent
    peft constructions."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from coin_lightning.model.loading import load_model
    from coin_lightning.model.lora import apply_lora, load_for_inference

    base_cfg = {"name_or_path": "tiny:llama", "packed_sequences": False, "cpu_speedups": False}
    base, tok = load_model(base_cfg)
    start = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    start.save_pretrained(tmp_path / "start")
    cfg = {**base_cfg, "adapter": str(tmp_path / "start")}
    trained = apply_lora(load_model(cfg)[0], cfg)  # as training builds it: the starting adapter, trainable
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)
    trained.save_pretrained(tmp_path / "trained")
    ids = torch.tensor([tok("Is the sky blue? Answer yes or no.")["input_ids"]])

    def logits(model):
        with torch.inference_mode():
            return model.eval()(ids).logits

    plain = logits(load_model(base_cfg)[0])
    alpaca_like = logits(PeftModel.from_pretrained(load_model(base_cfg)[0], str(tmp_path / "start")))
    continued = logits(PeftModel.from_pretrained(load_model(base_cfg)[0], str(tmp_path / "trained")))
    assert (alpaca_like - plain).abs().max() > 1e-3 and (continued - alpaca_like).abs().max() > 1e-3
    torch.testing.assert_close(logits(load_for_inference(cfg)[0]), alpaca_like, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits(load_for_inference(cfg, str(tmp_path / "trained"))[0]), continued, atol=1e-5, rtol=0)


def test_analyze_on_two_gloo_processes_matches_one(tmp_path, shared_data):
    """The representation pass shares the rows too: the same similarities as one process."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from coin_lightning.analyze import run as analyze
    from coin_lightning.conf import CONFIG_DIR

    args = ["model=tiny_llama", "eval.tasks=[rte]", f"data.root={shared_data / 'glue'}", "eval.samples_per_task=6",
            "analyze.rows=6", "eval.batch_size=2", "analyze.projection=pca", "eval.levels=[clean,sentence]"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "coin_lightning.analyze", *args, "trainer=ddp_cpu",
                           f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="analyze", overrides=args)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "single")
    single = analyze(cfg)
    ddp = json.loads((tmp_path / "ddp" / "analysis.json").read_text())
    assert ddp["n_pairs"] == single["n_pairs"] == 2 * 6
    for key in ("overall", "per_level", "per_perturbation"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)
