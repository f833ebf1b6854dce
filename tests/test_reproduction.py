"""``experiment=coin_alpaca`` is the reference's setting, row by row (docs/REPRODUCTION.md).

``REFERENCE`` is written here from the reference code itself, luka-group/CoIN at commit 79a5748
(``run_contrastive_llama.py``, ``ContrastiveTrainer.py``, ``scripts/run_contrastive.sh``) and the HF
Trainer defaults it relies on (transformers 4.30 ``TrainingArguments``); each row names its source.
The first test checks the composed experiment against it; the second trains the paper's dry run with
the tiny LLaMA on a CSV written here and checks what those settings do: the pooled token, the row
order, which rows validate, the first learning rates, the cut of a long row, the position ids, and
the checkpoint cadence.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from coin_lightning.conf import CONFIG_DIR

RC = "run_contrastive_llama.py"
REFERENCE = [
    # (config key, reference value, source)
    ("model.name_or_path", "yahma/llama-7b-hf", "scripts/run_contrastive.sh --base_model"),
    ("model.adapter", "tloen/alpaca-lora-7b", "scripts/run_contrastive.sh --lora_weight"),
    ("model.lora.r", 16, f"{RC} L76-78 lora_r"),
    ("model.lora.alpha", 16, f"{RC} L79-81 lora_alpha"),
    ("model.lora.dropout", 0.05, f"{RC} L82-84 lora_dropout"),
    ("model.lora.target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"], "scripts/run_contrastive.sh L1"),
    ("model.position_ids", "padded", f"{RC} L429-435: no position_ids; transformers 4.30 LLaMA numbers every column"),
    ("model.pad_token_id", 0, f"{RC} L254-256 tokenizer.pad_token_id = 0 (unk)"),
    ("loss.lambda", 1000.0, f"{RC} L155-159 contrastive_loss_ratio"),
    ("loss.temperature", 0.05, f"{RC} L151-154 temperature"),
    ("loss.pooling", "last", f"{RC} L160-164 pooling_method='last'"),
    ("loss.cap_to_generation", True, "ContrastiveLlama.py: contrastive loss capped at the generation loss"),
    ("loss.gather_across_ranks", False, "ContrastiveLlama.py: in-batch InfoNCE on each process"),
    ("optimizer.lr", 1.0e-4, f"{RC} L135-137 learning_rate"),
    ("optimizer.weight_decay", 0.0, "TrainingArguments weight_decay default; optim=adamw_torch"),
    ("optimizer._target_", "torch.optim.AdamW", f"{RC} L396 optim='adamw_torch'"),
    ("scheduler._target_", "coin_lightning.model.schedule.hf_linear", "Trainer lr_scheduler_type='linear' default"),
    ("warmup_ratio", 0.1, f"{RC} L425 warmup_steps = int(len(train_data) / batch_size * 0.1)"),
    ("seed", 42, f"{RC} L115-117 seed"),
    ("data.source", "coin_csv", f"{RC} L94-96 data_path dataset/contrastive_flan_data.csv"),
    ("data.batch_size", 2, f"{RC} L125-127 micro_batch_size"),
    ("data.global_batch_size", 64, "scripts/run_contrastive.sh --batch_size 64"),
    ("data.cutoff_len", 256, "scripts/run_contrastive.sh --cutoff_len 256"),
    ("data.truncation", "sequence", f"{RC} L261-266 tokenizer(truncation=True, max_length=cutoff_len)"),
    ("data.append_eos", False, f"{RC} L97-99 add_eos_token=False"),
    ("data.order", "sequential", "ContrastiveTrainer.py L59-71 sampler=None, shuffle=False"),
    ("data.val_size", 2000, "scripts/run_contrastive.sh --val_set_size 2000"),
    ("data.val_rows", "last", f"{RC} L415 train_test_split(test_size=val_set_size, shuffle=False)"),
    ("data.val_every_epoch_fraction", 0.125, f"{RC} L426-428 eval_steps = save_steps = int(len / batch_size / 8)"),
    ("data.prompt_format", "alpaca", "utils/common_utils.py generate_flan_input"),
    ("trainer.max_epochs", 1, f"{RC} L128-130 num_epochs"),
    ("trainer.gradient_clip_val", 1.0, "TrainingArguments max_grad_norm default"),
    ("callbacks.model_checkpoint.save_top_k", 3, f"{RC} L400 save_total_limit=3"),
    ("callbacks.model_checkpoint.monitor", "step", f"{RC} L400 save_total_limit keeps the newest checkpoints"),
    ("callbacks.model_checkpoint.every_n_train_steps", "${data.val_every_n_steps}", f"{RC} L428 save_steps = eval_steps"),
]
PRECISION = [  # experiment=coin_alpaca_int8: the reference's precision
    ("model.quantization", "8bit", f"{RC} L328-336 load_in_8bit=True"),
    ("model.dtype", "float16", f"{RC} L333 torch_dtype=torch.float16"),
    ("trainer.precision", "16-mixed", f"{RC} L394 fp16=True"),
    ("model.gradient_checkpointing", True, f"{RC} L338 prepare_model_for_int8_training (enables checkpointing)"),
]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def _get(cfg, key: str):
    node = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(("experiment", "table"), [("coin_alpaca", REFERENCE), ("coin_alpaca_int8", REFERENCE + PRECISION)])
def test_experiment_sets_every_reference_value(experiment, table):
    cfg = _compose([f"experiment={experiment}", "data.path=/x.csv"])
    wrong = [f"{key}: {_get(cfg, key)!r}, reference {want!r} ({source})"
             for key, want, source in table if _get(cfg, key) != want]
    assert not wrong, "\n".join(wrong)
    if experiment == "coin_alpaca":  # bf16 by choice (docs/REPRODUCTION.md); no quantization
        assert _get(cfg, "model.dtype") == "bfloat16" and _get(cfg, "model.quantization") is None


def test_the_project_defaults_differ_where_the_switches_say():
    """The switches exist because the defaults are the project's own choices, not the reference's."""
    cfg = _compose(["model=alpaca"])
    assert (cfg.data.append_eos, cfg.data.order, cfg.data.truncation) == (True, "shuffled", "input")
    assert (cfg.model.position_ids, cfg.model.pad_token_id, cfg.scheduler._target_) == (
        "mask", None, "coin_lightning.model.schedule.linear_warmup_decay")
    assert _compose(["data=coin_csv", "data.path=/x.csv"]).data.val_rows == "seeded"


# --------------------------------------------------------------------------- the dry run
TRAIN_ROWS, VAL_ROWS, GLOBAL = 160, 8, 8  # 20 optimizer steps of 8 examples (the paper's 64, scaled down for
# time: accumulation 4 instead of 32): warm-up int(0.1 x 20) = 2 steps
LONG_ROW = 11  # a row whose input alone is longer than cutoff_len (256 tokens)
HEADER = ["original_instruction", "paraphrased_instruction", "targets", "task_name", "keyword_data"]
WORDS = ["calm", "bright", "slow", "quick", "dark", "soft", "loud", "warm", "cold", "tall"]


def _rows(n: int) -> list[list[str]]:
    """CoIN-CSV rows: pairs (2k, 2k+1) under one original template with different answers."""
    rows = []
    for i in range(n):
        word, answer = WORDS[(i // 2) % len(WORDS)], ["yes", "no"][i % 2]
        text = f"Row {i}: is the word '{word}' about sound? {'Think about it. ' * (120 if i == LONG_ROW else 0)}"
        rows.append([f"{text}Answer yes or no.", f"Question {i}: does '{word}' describe a sound? Say yes or no.",
                     answer, "dry_run", json.dumps({"row": i})])
    return rows


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Train experiment=coin_alpaca with the tiny LLaMA on a CSV written here; returns (csv rows, run dir)."""
    tmp = tmp_path_factory.mktemp("paper")
    rows = _rows(TRAIN_ROWS + VAL_ROWS)
    data = tmp / "coin.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([HEADER, *rows])
    run_dir = tmp / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "coin_lightning.train", "experiment=coin_alpaca", "model=tiny_llama", f"data.path={data}",
         f"data.val_size={VAL_ROWS}", f"data.global_batch_size={GLOBAL}", "trainer=cpu", "~callbacks.progress", f"hydra.run.dir={run_dir}"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rows, data, run_dir


def _datamodule(data: Path):
    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule
    from coin_lightning.model.loading import load_tokenizer

    cfg = _compose(["experiment=coin_alpaca", "model=tiny_llama", f"data.path={data}", f"data.val_size={VAL_ROWS}"])
    dm = CoinDataModule(DataArgs.from_config(cfg.data), tokenizer=load_tokenizer(cfg.model), seed=cfg.seed)
    dm.setup("fit")
    return cfg, dm


def test_dry_run_order_validation_rows_pooled_token_and_cut(dry_run):
    rows, data, run_dir = dry_run
    cfg, dm = _datamodule(data)
    tok = dm.tokenizer
    assert tok.pad_token_id == 0
    batches = list(dm.train_dataloader())
    assert len(batches) == TRAIN_ROWS // 2
    for k in (0, 1, 2, LONG_ROW // 2, len(batches) - 1):  # micro-batch k = CSV rows 2k, 2k+1, in the file's order
        batch = batches[k]
        for j, row in enumerate(rows[2 * k : 2 * k + 2]):
            prompt = tok.decode(batch["input_ids"][j][batch["attention_mask"][j].bool()], skip_special_tokens=True)
            assert prompt.startswith(row[0][:30]), (k, j)
    val_texts = [p.original.input for g in dm.val_dataset.groups for p in g.pairs]
    assert sorted(val_texts) == sorted(r[0] for r in rows[-VAL_ROWS:])  # the file's last rows validate

    batch = batches[0]  # pooled token: the last real token is the response's last token, no EOS
    for j in range(batch["input_ids"].shape[0]):
        last = batch["input_ids"][j, -1].item()  # left padding: the last column is the row's last token
        answer = rows[j % 2][2]
        assert last == tok(answer, add_special_tokens=False)["input_ids"][-1] and last != tok.eos_token_id

    long_batch = batches[LONG_ROW // 2]  # the long row is cut on the right at 256 tokens: no response left
    j = LONG_ROW % 2
    assert int(long_batch["attention_mask"][j].sum()) == 256
    assert (long_batch["labels"][j] == -100).all()
    full = tok(f"{rows[LONG_ROW][0]}\n\n### Response:\n")["input_ids"]
    assert long_batch["input_ids"][j][-256:].tolist() == full[:256]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"]["val_records"] == VAL_ROWS and summary["data"]["response_cut"] == 1


def test_dry_run_learning_rates_and_checkpoints(dry_run):
    _, _, run_dir = dry_run
    lrs = {}
    with (run_dir / "csv" / "metrics.csv").open() as fh:
        for rec in csv.DictReader(fh):
            if rec.get("lr-AdamW"):
                lrs[int(rec["step"])] = float(rec["lr-AdamW"])
    total, warmup = TRAIN_ROWS // GLOBAL, 2
    want = [1e-4 * s / warmup if s < warmup else 1e-4 * (total - s) / (total - warmup) for s in range(5)]
    assert [lrs[s] for s in range(5)] == pytest.approx(want, abs=1e-12)  # 0, 5e-5, 1e-4, 1e-4 x 17/18, ...
    # validation and checkpoints every int(160 / 8 / 8) = 2 steps; the newest 3 kept
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("step*.ckpt"))
    assert kept == ["step000016.ckpt", "step000018.ckpt", "step000020.ckpt"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["trainer"]["val_check_interval"] == 2 * GLOBAL // 2  # micro-batches
    assert summary["config"]["data"]["val_every_n_steps"] == 2


def test_padded_position_ids_count_across_the_padding(dry_run):
    """``model.position_ids=padded`` runs the decoder at positions 0..T-1 (checked against a direct call)."""
    from coin_lightning.model import packing
    from coin_lightning.model.loading import load_model
    from coin_lightning.model.lora import apply_lora
    from coin_lightning.model.module import CoinModule

    _, data, _ = dry_run
    cfg, dm = _datamodule(data)
    base, _ = load_model(cfg.model)
    model = apply_lora(base, cfg.model)
    assert packing.packing_mode(model.get_base_model()) is None  # packing restarts positions: off
    module = CoinModule(model, loss=cfg.loss, position_ids=cfg.model.position_ids).eval()
    batch = next(iter(dm.train_dataloader()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any()  # some row is left-padded
    with torch.no_grad():
        got = module.encode(ids, mask).last_hidden_state
        decoder = model.get_base_model().get_decoder()
        columns = decoder(input_ids=ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1])[None].expand_as(ids))
        real = decoder(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    keep = mask.bool()
    torch.testing.assert_close(got[keep], columns.last_hidden_state[keep])
    assert not torch.equal(got[keep], real.last_hidden_state[keep])  # the switch changes the call (by rounding, RoPE)
