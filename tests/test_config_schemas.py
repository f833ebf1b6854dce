"""The typed config groups (model, model.lora, model.tiny, loss, data, eval, eval.perturb): Hydra composes them
against their dataclass schemas, refuses unknown keys and wrong types in one line naming the key, and
the dataclasses built from a node check the values types cannot express."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.data.config import DataArgs
from coin_lightning.errors import ConfigError, UserError, one_line
from coin_lightning.eval.instructions.perturb.config import PerturbConfig
from coin_lightning.eval.settings import EvalSettings
from coin_lightning.losses import LossArgs
from coin_lightning.model.config import LoraArgs, ModelArgs, TinyArgs


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config, overrides=overrides)


def _refusal(config: str, override: str) -> str:
    key = re.escape(override.partition("=")[0])
    with pytest.raises(ConfigCompositionException, match=rf"^(Could not override '{key}'|Error merging override {key}=)") as err:
        _compose(config, [override])
    msg = one_line(err.value)
    assert msg is not None and "\n" not in msg, err.value
    return msg


@pytest.mark.parametrize("config,override,message", [
    ("train", "model.revison=main", "model.revison: unknown key; known: name_or_path, revision,"),
    ("train", "model.gradient_checkpointing=sometimes", "model.gradient_checkpointing: Value 'sometimes'"),
    ("train", "model.lora.rnak=4", "model.lora.rnak: unknown key; known: r, alpha, dropout, target_modules"),
    ("train", "model.lora.r=four", "model.lora.r: Value 'four' of type 'str' could not be converted to Integer"),
    ("train", "model.tiny.hidden_size=wide", "model.tiny.hidden_size: Value 'wide'"),
    ("train", "loss.temprature=0.1", "loss.temprature: unknown key"),
    ("train", "data.batchsize=4", "data.batchsize: unknown key; known: source, tasks, n_per_task,"),
    ("train", "data.batch_size=four", "data.batch_size: Value 'four' of type 'str' could not be converted to Integer"),
    ("train", "loss.lambda=abc", "loss.lambda: Value 'abc' of type 'str' could not be converted to Float"),
    ("eval", "eval.sample_per_task=40", "eval.sample_per_task: unknown key; known: tasks, task_files, levels,"),
    ("eval", "eval.samples_per_task=all", "eval.samples_per_task: Value 'all'"),
    ("eval", "eval.perturb.character.max_word=2", "eval.perturb.character.max_word: unknown key; known: max_words,"),
    ("eval", "eval.perturb.seed=x", "eval.perturb.seed: Value 'x'"),
    ("train", "evaluation.eval.perturb.word.candidates=ten", "evaluation.eval.perturb.word.candidates: Value 'ten'"),
    ("train", "evaluation.eval.methd=rank", "evaluation.eval.methd: unknown key"),
])
def test_composition_refuses_unknown_keys_and_wrong_types_naming_the_key(config, override, message):
    assert _refusal(config, override).startswith(message)


def test_the_documented_overrides_still_compose():
    cfg = _compose("train", ["model=smollm2_135m", "loss.lambda=0", "evaluation.eval.samples_per_task=40",
                             "evaluation.eval.tasks=[sst2,rte]", "model.lora.r=8", "warmup_ratio=0.2"])
    assert cfg.loss["lambda"] == 0.0 and cfg.evaluation.eval.samples_per_task == 40 and cfg.model.lora.r == 8
    assert LossArgs.from_config(cfg.loss).lambda_ == 0.0
    assert EvalSettings.from_config(cfg.evaluation.eval).tasks == ["sst2", "rte"]
    paper = _compose("train", ["experiment=coin_alpaca", "data.path=/x.csv", "loss.temperature=0.1"])
    assert ModelArgs.from_config(paper.model).adapter == "tloen/alpaca-lora-7b"
    assert LossArgs.from_config(paper.loss) == LossArgs(temperature=0.1)
    assert LossArgs.from_config(_compose("train", ["loss=continual"]).loss).lambda_ == 0.0
    ev = _compose("eval", ["eval.samples_per_task=40", "eval.perturb.character.max_words=4", "model=tiny_llama"])
    settings = EvalSettings.from_config(ev.eval)
    assert settings.samples_per_task == 40 and settings.perturb.character.max_words == 4
    assert settings.probe_size == settings.perturb.adversarial.probe_size == 32  # the interpolation resolves


def test_group_files_equal_their_dataclass_defaults_where_they_do_not_override():
    cfg = _compose("train", ["model=smollm2_135m"])
    assert ModelArgs.from_config(cfg.model) == ModelArgs()
    assert LossArgs.from_config(cfg.loss) == LossArgs()
    assert DataArgs.from_config(cfg.data) == DataArgs()
    assert EvalSettings.from_config(cfg.evaluation.eval) == EvalSettings(tasks=list(cfg.evaluation.eval.tasks))
    assert PerturbConfig.from_cfg(cfg.evaluation.eval.perturb) == PerturbConfig()


@pytest.mark.parametrize("build,node,message", [
    (ModelArgs.from_config, {"lora": {"rnak": 4}}, "model.lora.rnak: unknown key"),  # added with +model.lora.rnak
    (ModelArgs.from_config, {"tiny": {"layers": 1}}, "model.tiny.layers: unknown key"),
    (ModelArgs.from_config, {"fused_kernels": False}, "model.fused_kernels: unknown key"),
    (ModelArgs.from_config, {"lora": {"r": 0}}, "model.lora.r must be >= 1, got 0"),
    (ModelArgs.from_config, {"lora": {"dropout": 1.5}}, "model.lora.dropout must be >= 0 and < 1"),
    (ModelArgs.from_config, {"lora": {"target_modules": []}}, "model.lora.target_modules=[] must be a non-empty"),
    (ModelArgs.from_config, {"dtype": "float8"}, "model.dtype='float8' is not one of float32"),
    (ModelArgs.from_config, {"tiny": {"hidden_size": 30}}, "model.tiny: hidden_size=30 must be a multiple"),
    (ModelArgs.from_config, {"name_or_path": "???"}, "model.name_or_path is required"),
    (LossArgs.from_config, {"tau": 0.1}, "loss.tau: unknown key"),
    (DataArgs.from_config, {"batchsize": 4}, "data.batchsize: unknown key"),
    (DataArgs.from_config, {"batch_size": 3}, "data.batch_size=3 must be a positive multiple of 2"),
    (LossArgs.from_config, {"lambda": "abc"}, "loss.lambda: Value 'abc'"),
    (LossArgs.from_config, {"lambda": -1}, "loss.lambda must be a finite number >= 0"),
    (LossArgs.from_config, {"temperature": 0}, "loss.temperature must be a finite number > 0"),
    (LossArgs.from_config, {"pooling": "cls"}, "loss.pooling='cls' is not one of last, mean, last_prompt"),
    (EvalSettings.from_config, {"foo": 1}, "eval.foo: unknown key"),
    (EvalSettings.from_config, {"levels": ["typo"]}, "eval.levels: unknown level 'typo'"),
    (EvalSettings.from_config, {"method": "vote"}, "eval.method='vote' is not one of"),
    (EvalSettings.from_config, {"batch_size": 0}, "eval.batch_size=0: must be >= 1"),
    (EvalSettings.from_config, {"perturb": {"word": {"candidates": 0}}}, "eval.perturb.word.candidates must be >= 1"),
    (PerturbConfig.from_cfg, {"levels": {"deepwordbug": "typo"}}, "eval.perturb.levels.deepwordbug: unknown level"),
])
def test_built_nodes_are_checked_in_one_line(build, node, message):
    with pytest.raises(UserError, match="^" + re.escape(message)) as err:  # ConfigError, EvalConfigError
        build(node)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_an_added_key_passes_composition_but_not_the_build():
    cfg = _compose("train", ["+model.lora.rnak=4", "+loss.tau=0.1"])
    assert OmegaConf.select(cfg, "model.lora.rnak") == 4  # Hydra's + adds it ...
    with pytest.raises(ConfigError, match=r"^model\.lora\.rnak: unknown key"):  # ... the build refuses it
        ModelArgs.from_config(cfg.model)
    with pytest.raises(ConfigError, match=r"^loss\.tau: unknown key"):
        LossArgs.from_config(cfg.loss)


@pytest.mark.parametrize("cls", [ModelArgs, LoraArgs, TinyArgs, LossArgs, DataArgs, EvalSettings,
                                 PerturbConfig])
def test_every_field_has_a_docstring(cls):
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    documented = {stmt.target.id for stmt, nxt in zip(body, body[1:])
                  if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}
    assert {f.name for f in dataclasses.fields(cls)} <= documented
