"""A catalogue of bad inputs, each run through the real command line as a new user would.

Every case must exit non-zero with exactly one ``error:`` line that names the key, file or row at
fault, print no traceback, and leave every file that was in its (existing) run directory in place.
Most fail before any model loads. ``python tests/test_bad_inputs.py`` prints the catalogue as a
table with the message and the seconds to fail of each case.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GLUE = SHARED / "glue"
TINY = ["model=tiny_llama", "data.n_per_task=8", "data.val_size=8", "data.batch_size=4", "~callbacks.progress"]
"""Overrides every training case starts from: the tiny random LLaMA and a small embedded data set."""
USER_FILE = "my_notes.txt"


@dataclass
class Case:
    """One bad input: the command after ``python -m``, and what its one-line message must name."""

    id: str
    """Test id."""
    module: str
    """``coin_lightning.train`` / ``.evaluate`` / ``.analyze`` / ``.compare`` / ``.data``."""
    args: Callable[[Path], list[str]]
    """Arguments given the case's scratch directory (files the case needs are written there)."""
    needles: tuple[str, ...]
    """Substrings the ``error:`` line must contain (the culprit's key, file or row)."""
    needs_shared: bool = False
    """Uses ../shared/data (skipped without it)."""
    hydra: bool = True
    """A Hydra entry point: runs into an existing run directory holding the user's files."""
    env: dict = field(default_factory=dict)
    """Extra environment variables."""
    run_dir: str | None = None
    """``hydra.run.dir`` relative to the scratch directory the command runs in (default: ``run``)."""


def _bad_utf8_glue(d: Path) -> Path:
    root = d / "glue"
    (root / "rte").mkdir(parents=True, exist_ok=True)
    good = [json.dumps({"sentence1": f"A man walks {i}.", "sentence2": "A man moves.", "label": i % 2, "idx": i}) for i in range(12)]
    rows = [line.encode() for line in good[:3]] + [b'{"sentence1": "caf\xe9", "sentence2": "x", "label": 0, "idx": 99}'] + [line.encode() for line in good[3:]]
    (root / "rte" / "train.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    return root


def _bad_utf8_csv(d: Path) -> Path:
    path = d / "coin.csv"
    head = b"original_instruction,paraphrased_instruction,targets,task_name,keyword_data\n"
    rows = [f"Is {i} even?,Tell me if {i} is even.,{'yes' if i % 2 == 0 else 'no'},parity,{{}}\n".encode() for i in range(8)]
    rows[5] = b"Is \xff even?,Tell me.,no,parity,{}\n"
    path.write_bytes(head + b"".join(rows))
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _no_input_templates(d: Path) -> Path:
    path = d / "templates.yaml"
    path.write_text('rte:\n  - "Does the second sentence follow from the first? {options_}"\n'
                    '  - "Is this an entailment? {options_}"\n', encoding="utf-8")
    return path


def _lora_state(rank: int, width: int, prefix: str = "model.base_model.model.") -> dict:
    import torch

    state = {}
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            base = f"{prefix}model.layers.{layer}.self_attn.{proj}"
            state[f"{base}.lora_A.default.weight"] = torch.zeros(rank, width)
            state[f"{base}.lora_B.default.weight"] = torch.zeros(width, rank)
    return state


def _ckpt(d: Path, rank: int = 8, width: int = 64) -> Path:
    import torch

    path = d / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": _lora_state(rank, width), "pytorch-lightning_version": "2.6.6", "global_step": 2}, path)
    return path


def _truncated_ckpt(d: Path) -> Path:
    full = _ckpt(d)
    path = d / "truncated.ckpt"
    path.write_bytes(full.read_bytes()[:300])
    return path


class Foreign:
    """A pickled object of a class torch's weights-only loader refuses."""


def _foreign_ckpt(d: Path) -> Path:
    import torch

    path = d / "foreign.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.6", "extra": Foreign()}, path)
    return path


def _adapter(d: Path, width: int, base: str | None = None, config: bool = True) -> Path:
    from safetensors.torch import save_file

    path = d / "adapter"
    path.mkdir(exist_ok=True)
    if config:
        (path / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "base_model_name_or_path": base, "task_type": "CAUSAL_LM"}), encoding="utf-8")
    save_file(_lora_state(8, width, prefix="base_model.model."), str(path / "adapter_model.safetensors"))
    return path


def _eval_run(d: Path) -> Path:
    run = d / "eval_run"
    run.mkdir(exist_ok=True)
    (run / "metrics.json").write_text("{not json", encoding="utf-8")
    return run


T = "coin_lightning.train"
E = "coin_lightning.evaluate"
CASES = [
    # ---- config values: types, ranges, names (checked before Lightning and the model are imported)
    Case("loss-lambda-text", T, lambda d: ["loss.lambda=abc"], ("loss.lambda",)),
    Case("loss-temperature-negative", T, lambda d: ["loss.temperature=-0.5"], ("loss.temperature",)),
    Case("loss-pooling-unknown", T, lambda d: ["loss.pooling=cls"], ("loss.pooling",)),
    Case("lora-rank-zero", T, lambda d: ["model.lora.r=0"], ("model.lora.r",)),
    Case("lora-dropout-above-one", T, lambda d: ["model.lora.dropout=1.5"], ("model.lora.dropout",)),
    Case("lora-targets-empty", T, lambda d: ["model.lora.target_modules=[]"], ("model.lora.target_modules",)),
    Case("model-dtype-unknown", T, lambda d: ["model.dtype=float8"], ("model.dtype",)),
    Case("hidden-layer-beyond-model", T, lambda d: ["loss.hidden_layer=7"], ("loss.hidden_layer=7", "2 layers")),
    Case("cutoff-beyond-positions", T, lambda d: ["data.cutoff_len=4096"], ("data.cutoff_len=4096", "2048")),
    Case("pad-token-outside-vocabulary", T, lambda d: ["model.pad_token_id=60000"], ("model.pad_token_id=60000", "vocabulary")),
    Case("truncation-unknown", T, lambda d: ["data.truncation=middle"], ("data.truncation",)),
    Case("val-fraction-above-one", T, lambda d: ["data.val_every_epoch_fraction=2"], ("data.val_every_epoch_fraction",)),
    Case("model-required-missing", T, lambda d: ["model.name_or_path=???"], ("model.name_or_path", "required")),
    Case("max-steps-zero", T, lambda d: ["trainer.max_steps=0"], ("trainer.max_steps",)),
    Case("accumulate-zero", T, lambda d: ["trainer.accumulate_grad_batches=0"], ("trainer.accumulate_grad_batches",)),
    Case("bf16-on-cpu", T, lambda d: ["trainer.precision=bf16-mixed"], ("trainer.accelerator=cpu", "bf16")),
    Case("warmup-ratio-above-one", T, lambda d: ["warmup_ratio=2"], ("warmup_ratio",)),
    Case("lr-negative", T, lambda d: ["optimizer.lr=-1"], ("optimizer.lr",)),
    Case("scheduler-unknown", T, lambda d: ["scheduler=cosine"], ("scheduler=cosine", "constant, hf_linear, linear")),
    Case("model-option-unknown", T, lambda d: ["model=llama3"], ("model=llama3", "tiny_llama")),
    # ---- unknown keys and wrong types in the typed groups: refused by Hydra while composing (an override
    # of a key the schema lacks, a value that does not convert) or when the node is built (a key added with +)
    Case("model-key-unknown", T, lambda d: ["+model.fused=true"], ("model.fused", "unknown key")),
    Case("model-flag-text", T, lambda d: ["model.packed_sequences=maybe"], ("model.packed_sequences",)),
    Case("lora-key-typo", T, lambda d: ["model.lora.rnak=4"], ("model.lora.rnak", "unknown key")),
    Case("lora-key-added", T, lambda d: ["+model.lora.rnak=4"], ("model.lora.rnak", "unknown key")),
    Case("lora-rank-text", T, lambda d: ["model.lora.r=abc"], ("model.lora.r", "abc")),
    Case("loss-key-unknown", T, lambda d: ["+loss.tau=0.1"], ("loss.tau", "unknown key")),
    Case("loss-key-typo", T, lambda d: ["loss.lamda=0"], ("loss.lamda",)),
    Case("eval-key-unknown", E, lambda d: ["model=tiny_llama", "+eval.samples=40"], ("eval.samples", "unknown key")),
    Case("eval-samples-text", E, lambda d: ["model=tiny_llama", "eval.samples_per_task=many"], ("eval.samples_per_task", "many")),
    Case("perturb-key-unknown", E, lambda d: ["model=tiny_llama", "+eval.perturb.character.max_word=2"],
         ("eval.perturb.character.max_word", "unknown key")),
    Case("perturb-strength-text", E, lambda d: ["model=tiny_llama", "eval.perturb.word.candidates=ten"],
         ("eval.perturb.word.candidates", "ten")),
    Case("after-train-perturb-key", T, lambda d: ["eval_after_train=true", "+evaluation.eval.perturb.seeds=1"],
         ("evaluation.eval.perturb.seeds", "unknown key")),
    Case("liger-without-gpu-or-package", T, lambda d: ["model.liger_kernels=true"], ("model.liger_kernels",)),
    # ---- never delete what the run did not create
    Case("earlier-run-dir", T, lambda d: [f"ckpt_path={d}/run/checkpoints/last.ckpt", "loss.temperature=0"], ("loss.temperature",)),
    Case("run-dir-is-cwd", T, lambda d: ["loss.temperature=0"], ("loss.temperature",), run_dir="."),
    # ---- checkpoints and adapters (read cheaply, before the model loads)
    Case("ckpt-missing", T, lambda d: [f"ckpt_path={d}/nope.ckpt"], ("ckpt_path", "nope.ckpt")),
    Case("ckpt-truncated", T, lambda d: [f"ckpt_path={_truncated_ckpt(d)}"], ("ckpt_path", "truncated.ckpt")),
    Case("ckpt-foreign", T, lambda d: [f"ckpt_path={_foreign_ckpt(d)}"], ("ckpt_path", "foreign.ckpt")),
    Case("ckpt-other-rank", T, lambda d: [f"ckpt_path={_ckpt(d, rank=4)}"], ("ckpt_path", "model.lora.r=8")),
    Case("adapter-no-config", T, lambda d: [f"model.adapter={_adapter(d, 64, config=False)}"], ("model.adapter", "adapter_config.json")),
    Case("lora-target-unknown", T, lambda d: ["model.lora.target_modules=[nope_proj]"], ("model.lora", "nope_proj")),
    Case("adapter-other-name", T, lambda d: ["model=smollm2_135m", f"model.adapter={_adapter(d, 576, base='yahma/llama-7b-hf')}"],
         ("model.adapter", "yahma/llama-7b-hf")),
    Case("adapter-other-base", T, lambda d: [f"model.adapter={_adapter(d, 576)}"], ("model.adapter", "width 576")),
    # ---- data: paths, keys, files, rows (read and checked before the model loads)
    Case("csv-path-missing", T, lambda d: ["data=coin_csv", "data.path=/nonexistent.csv"], ("data.path",)),
    Case("csv-path-unset", T, lambda d: ["data=coin_csv"], ("data.path",)),
    Case("paper-csv-missing", T, lambda d: ["model=alpaca", "trainer=gpu", "experiment=coin_alpaca", "data=coin_csv",
                                              "data.path=/nonexistent.csv"], ("data.path",)),
    Case("csv-not-utf8", T, lambda d: ["data=coin_csv", f"data.path={_bad_utf8_csv(d)}"], ("coin.csv:7", "UTF-8")),
    Case("jsonl-not-utf8", T, lambda d: ["data=glue", f"data.root={_bad_utf8_glue(d)}", "data.tasks=[rte]"],
         ("train.jsonl:4", "not UTF-8")),
    Case("glue-root-missing", T, lambda d: ["data=glue", "data.root=/no/such/glue"], ("data.root",)),
    Case("glue-no-root-offline", T, lambda d: ["data=glue"], ("data.root",), env={"HF_HUB_OFFLINE": "1"}),
    Case("templates-without-input", T, lambda d: ["data=glue", f"data.root={GLUE}", "data.tasks=[rte]",
                                                   f"data.templates={_no_input_templates(d)}"],
         ("templates.yaml", "rte", "input"), needs_shared=True),
    Case("templates-missing", T, lambda d: ["data=glue", f"data.root={_mkdir(d / 'glue')}", "data.templates=/no/templates.json"],
         ("data.templates",)),  # refused before any row is read: an empty data.root will do
    Case("embedded-task-unknown", T, lambda d: ["data.tasks=[nope]"], ("nope",)),
    Case("batch-size-odd", T, lambda d: ["data.batch_size=3"], ("data.batch_size",)),
    Case("prompt-format-unknown", T, lambda d: ["data.prompt_format=bogus"], ("data.prompt_format",)),
    Case("val-size-too-large", T, lambda d: ["data.val_size=100000"], ("data.val_size",)),
    # ---- evaluation, analysis, comparison, data show
    Case("eval-prompt-format", E, lambda d: ["model=tiny_llama", "prompt_format=bogus"], ("prompt_format",)),
    Case("eval-task-unknown", E, lambda d: ["model=tiny_llama", "eval.tasks=[nope]"], ("eval.tasks",)),
    Case("eval-no-root-offline", E, lambda d: ["model=tiny_llama", "eval.tasks=[rte]"], ("data.root",),
         env={"HF_HUB_OFFLINE": "1"}),
    Case("eval-adapter-missing", E, lambda d: ["model=tiny_llama", f"adapter={d}/no_adapter"], ("adapter=", "no_adapter")),
    Case("analyze-projection", "coin_lightning.analyze", lambda d: ["model=tiny_llama", "analyze.projection=tsne"],
         ("analyze.projection",)),
    Case("compare-negative-bootstrap", "coin_lightning.compare", lambda d: ["a", "b", "--bootstrap", "-5"],
         ("--bootstrap", "-5"), hydra=False),
    Case("compare-bad-run", "coin_lightning.compare", lambda d: [str(_eval_run(d)), str(_eval_run(d)), "--out", str(d / "cmp")],
         ("eval_run",), hydra=False),
    Case("data-show-not-utf8", "coin_lightning.data", lambda d: ["show", "data=glue", f"data.root={_bad_utf8_glue(d)}", "data.tasks=[rte]"],
         ("train.jsonl:4",), hydra=False),
]


def _merge(base: list[str], extra: list[str]) -> list[str]:
    """``base`` overrides with those of ``extra`` replacing any of the same key (Hydra refuses duplicates)."""
    keys = {a.split("=", 1)[0] for a in extra}
    return [a for a in base if a.split("=", 1)[0] not in keys] + extra


def run_case(case: Case, scratch: Path) -> tuple[subprocess.CompletedProcess, float, Path, set]:
    """Run ``case`` from ``scratch`` into an existing run directory that holds a user file and a
    checkpoint of an earlier run. Returns the finished process, its wall time in seconds, the run
    directory and the paths that were in it before."""
    run = scratch / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / USER_FILE).write_text("mine\n", encoding="utf-8")
    _ckpt(scratch)
    args = case.args(scratch)
    if case.module == T:
        args = _merge(TINY, args)
    if case.hydra:
        args = [*args, f"hydra.run.dir={case.run_dir or run}"]
    before = {p.relative_to(run) for p in run.rglob("*")}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **case.env}
    env.pop("HYDRA_FULL_ERROR", None)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", case.module, *args], cwd=scratch, env=env, capture_output=True,
                          text=True, timeout=300)
    return done, time.perf_counter() - t0, run, before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line(case, tmp_path):
    if case.needs_shared and not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    done, seconds, run, before = run_case(case, tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith(("error:", "python -m coin_lightning"))]
    assert done.returncode != 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1, done.stderr[-3000:]
    for needle in case.needles:
        assert needle in errors[0], errors[0]
    assert (run / USER_FILE).read_text(encoding="utf-8") == "mine\n"  # the user's file is untouched
    assert before <= {p.relative_to(run) for p in run.rglob("*")}  # nothing that was there is gone
    assert seconds < 60, f"{case.id} took {seconds:.1f} s"


def test_library_errors_are_restated_with_their_key():
    """Hydra's and OmegaConf's errors name their key; an unknown error (a bug) is not restated."""
    from hydra.errors import InstantiationException
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    from coin_lightning.errors import ConfigError, one_line

    cfg = OmegaConf.create({"data": {"path": "???"}})
    with pytest.raises(MissingMandatoryValue, match=r"^Missing mandatory value: data\.path") as missing:
        _ = cfg.data.path
    assert one_line(missing.value) == "data.path is required (its value is ???): set data.path=..."
    wrapped = InstantiationException("Error in call to target 'x.Y':\nTypeError('bad')\nfull_key: trainer")
    wrapped.__cause__ = TypeError("bad\nsecond line")
    assert one_line(wrapped) == "trainer: TypeError: bad; second line"
    user = InstantiationException("Error in call to target 'x.Y'\nfull_key: data")
    user.__cause__ = ConfigError("data.batch_size=3 must be even")
    assert one_line(user) == "data.batch_size=3 must be even"
    assert one_line(FileNotFoundError(2, "No such file or directory", "/x.csv")) == "/x.csv: No such file or directory"
    assert one_line(KeyError("x")) is None and one_line(ZeroDivisionError()) is None


def test_verbose_keeps_the_traceback(tmp_path):
    done, _, _, _ = run_case(Case("verbose", T, lambda d: ["loss.lambda=abc", "--verbose"], ()), tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr and "loss.lambda" in done.stderr


def test_failed_job_removes_only_what_it_wrote(tmp_path, monkeypatch):
    from coin_lightning.outputs import JobDir

    monkeypatch.chdir(tmp_path)
    new = tmp_path / "new"  # as Hydra leaves a fresh job directory: its records only
    (new / ".hydra").mkdir(parents=True)
    (new / "train.log").write_text("log\n")
    job = JobDir(new)
    (new / "csv").mkdir()  # written by the failed job
    job.discard()
    assert not new.exists()

    old = tmp_path / "old"  # an earlier run: a checkpoint and the user's notes
    (old / ".hydra").mkdir(parents=True)
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (old / USER_FILE).write_text("mine\n")
    job = JobDir(old)
    (old / "csv").mkdir()
    (old / "summary.json").write_text("{}")
    job.discard()
    assert sorted(p.name for p in old.iterdir()) == sorted([".hydra", "checkpoints", USER_FILE])
    assert (old / "checkpoints" / "last.ckpt").read_bytes() == b"x"

    JobDir(tmp_path).discard()  # the working directory itself is never removed
    assert tmp_path.is_dir() and old.is_dir()


def test_a_directory_named_on_the_command_line_keeps_what_it_held_when_the_command_started(tmp_path, monkeypatch):
    from coin_lightning import outputs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(outputs, "_SNAPSHOT", None)
    named = tmp_path / "runs" / "mine"
    named.mkdir(parents=True)
    (named / USER_FILE).write_text("mine\n")
    snap = outputs.take_snapshot(["-m", "coin_lightning.train", f"hydra.run.dir={named}", "loss.lambda=0"])
    assert snap.named == (named.resolve(),) and snap.entries == {named.resolve(): {USER_FILE}}
    (named / ".hydra").mkdir()  # Hydra's records, written after the snapshot: the failed job's too
    (named / "train.log").write_text("log\n")
    (named / "csv").mkdir()
    outputs.JobDir(named).discard()
    assert sorted(p.name for p in named.iterdir()) == [USER_FILE]  # kept, and so is the directory


def _fail(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([sys.executable, "-m", T, "loss.temperature=0", *args], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["error: loss.temperature must be a finite number > 0, got 0.0"]
    return done


def test_failed_job_leaves_the_tree_as_it_found_it(tmp_path):
    """A failed first run removes the ``outputs/<task>/runs`` parents it created; parents that were
    there stay; with ``hydra.run.dir=.`` Hydra's records written into the working directory go too."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _fail(fresh)
    assert list(fresh.iterdir()) == []

    used = tmp_path / "used"
    (used / "outputs" / "train" / "runs").mkdir(parents=True)
    _fail(used)
    assert [p.relative_to(used).as_posix() for p in sorted(used.rglob("*"))] == ["outputs", "outputs/train",
                                                                                  "outputs/train/runs"]
    here = tmp_path / "here"
    here.mkdir()
    (here / USER_FILE).write_text("mine\n", encoding="utf-8")
    _fail(here, "hydra.run.dir=.")
    assert [p.name for p in here.iterdir()] == [USER_FILE]


def test_small_dataset_validates_within_its_epoch(tmp_path):
    """A data set with fewer training batches than ``trainer.val_check_interval`` trains (validating
    once per epoch) instead of stopping in Lightning's check."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from coin_lightning.conf import CONFIG_DIR, train_run
    from coin_lightning.training.run import train

    overrides = _merge(TINY, ["data.tasks=[embedded_parity,embedded_sign]", "trainer.val_check_interval=50",
                              "trainer.max_steps=50", "trainer.limit_val_batches=1", "logger=csv"])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    summary = train(train_run(cfg))
    groups = summary["data"]["train_groups"]
    assert 0 < summary["global_step"] < 50 and summary["global_step"] == -(-groups // 2)  # one epoch of 2-group batches
    assert "val/loss" in summary["metrics"]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_on_error_skip_skips_undecodable_rows(tmp_path, kind):
    from coin_lightning.data.sources.coin_csv import load_coin_csv
    from coin_lightning.data.sources.glue import load_glue

    if kind == "jsonl":
        stats: dict = {}
        records = load_glue("rte", "train", _bad_utf8_glue(tmp_path), on_error="skip", stats=stats)
        assert len(records) == 12 and 99 not in {int(r.uid.rsplit("/", 1)[1]) for r in records}
    else:
        stats = {}
        pairs = load_coin_csv(_bad_utf8_csv(tmp_path), on_error="skip", stats=stats)
        assert len(pairs) == 3 and stats["skipped"] == 2  # the bad row's whole pair goes, pairing never shifts
        assert all(a.uid != "coin_csv/4" and b.uid != "coin_csv/5" for a, b in pairs)


if __name__ == "__main__":  # the catalogue as a Markdown table: command | message | seconds
    import tempfile

    print("| case | command | message | seconds |\n|---|---|---|---|")
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            done, seconds, _, _ = run_case(case, Path(tmp))
            line = next((ln for ln in done.stderr.splitlines() if ln.startswith(("error:", "python -m"))), done.stderr.strip()[-200:])
            shown = " ".join(case.args(Path(tmp))).replace(tmp, "D")  # D: the scratch directory
            print(f"| {case.id} | `python -m {case.module} {shown}` | {line.replace('|', '/')} | {seconds:.1f} |", flush=True)
