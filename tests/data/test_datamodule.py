"""CoinDataModule end to end: Hydra configs, stats, batches, padding efficiency, bad rows."""
from __future__ import annotations

import csv

import pytest
import torch

from coin_lightning.data.__main__ import compose, main
from coin_lightning.data.config import DataArgs
from coin_lightning.data.datamodule import CoinDataModule
from coin_lightning.data.records import DataError
from tests.data.test_sources_coin_csv import HEADER, paper_rows


def padding_efficiency(loader) -> float:
    """Real tokens / tokens computed (R x T summed over batches)."""
    real = computed = 0
    for b in loader:
        real += int(b["attention_mask"].sum())
        computed += b["input_ids"].numel()
    return real / computed


def test_embedded_default_end_to_end(tiny_tokenizer):
    dm = CoinDataModule(DataArgs(n_per_task=40, val_size=36, batch_size=4), tokenizer=tiny_tokenizer, seed=7)
    dm.setup("fit")
    st = dm.stats
    for key in ("records_per_task", "train_records_per_task", "val_records", "train_groups", "val_groups", "skipped", "truncated", "same_target_negatives"):
        assert key in st
    assert len(st["records_per_task"]) >= 8 and st["skipped"] == 0 and st["val_records"] == 36
    batch = next(iter(dm.train_dataloader()))
    assert batch["num_pairs"] == 4 and batch["input_ids"].shape[0] == 8
    val = next(iter(dm.val_dataloader()))
    assert val["num_pairs"] == 4
    # same seed, same data and batches
    again = CoinDataModule(DataArgs(n_per_task=40, val_size=36, batch_size=4), tokenizer=tiny_tokenizer, seed=7)
    again.setup("fit")
    assert again.train_dataset.groups == dm.train_dataset.groups
    assert torch.equal(next(iter(again.train_dataloader()))["input_ids"], batch["input_ids"])


def test_invalid_settings_are_rejected():
    with pytest.raises(DataError, match="batch_size=3 must be a positive multiple of 2"):
        CoinDataModule(DataArgs(batch_size=3))
    with pytest.raises(DataError, match="eval_batch_size=1"):
        CoinDataModule(DataArgs(batch_size=2, eval_batch_size=1))
    CoinDataModule(DataArgs(group="hard_negative_column", batch_size=3))
    with pytest.raises(DataError, match="data.source='hub'"):
        CoinDataModule(DataArgs(source="hub"))
    with pytest.raises(DataError, match="data.group="):
        CoinDataModule(DataArgs(group="triples"))
    with pytest.raises(DataError, match="needs data.path"):
        CoinDataModule(DataArgs(source="coin_csv"))
    dm = CoinDataModule(DataArgs(n_per_task=10, val_size=0))
    dm.setup()
    with pytest.raises(DataError, match="no tokenizer"):
        dm.train_dataloader()


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=embedded", "data.n_per_task=20", "data.val_size=18"],
        ["data=glue", "data.root={glue}", "data.max_per_task=30", "data.val_size=16"],
        ["data=glue", "data.root={glue}", "data.templates={flan}", "data.max_per_task=30", "data.group=hard_negative_column"],
        ["data=coin_csv", "data.path={csv}", "data.val_size=4"],
    ],
)
def test_hydra_configs_build_with_tokenizer_and_seed(overrides, tmp_path, tiny_tokenizer, request):
    path = tmp_path / "coin.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([HEADER] + paper_rows(8))
    subst = {"csv": path}
    if any("{glue}" in o or "{flan}" in o for o in overrides):  # only these need ../shared (skipped without it)
        shared_data = request.getfixturevalue("shared_data")
        subst |= {"glue": shared_data / "glue", "flan": shared_data / "flan" / "templates.json"}
    cfg = compose([o.format(**subst) for o in overrides])
    dm = CoinDataModule(DataArgs.from_config(cfg.data), tokenizer=tiny_tokenizer, seed=cfg.seed)
    assert isinstance(dm, CoinDataModule) and dm.seed == cfg.seed
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    P = batch["num_pairs"]
    assert P == cfg.data.batch_size and batch["input_ids"].shape[0] in (2 * P, 3 * P)


def test_flan_templates_do_not_cover_embedded_tasks(flan_json):
    dm = CoinDataModule(DataArgs(templates=str(flan_json), n_per_task=10))
    with pytest.raises(DataError, match="unknown task 'embedded_"):
        dm.setup()


def test_bad_rows_raise_or_are_skipped_and_counted(tmp_path):
    for task, rows in {
        "rte": [f'{{"sentence1": "a b", "sentence2": "c", "label": {i % 2}, "idx": {i}}}' for i in range(12)],
        "cola": [f'{{"sentence": "s {i}", "label": {i % 2}, "idx": {i}}}' for i in range(12)],
    }.items():
        (tmp_path / task).mkdir()
        (tmp_path / task / "train.jsonl").write_text("\n".join(rows + ["{broken", '{"sentence": "x", "label": 9}']) + "\n")
    with pytest.raises(DataError, match=r"cola/train\.jsonl:13: malformed JSONL row"):
        CoinDataModule(DataArgs(source="glue", root=str(tmp_path), tasks=["cola", "rte"], val_size=4)).setup()
    dm = CoinDataModule(DataArgs(source="glue", root=str(tmp_path), tasks=["cola", "rte"], val_size=4, on_error="skip"))
    dm.setup()
    assert dm.stats["skipped"] == 4 and dm.stats["records_per_task"] == {"cola": 12, "rte": 12}


def test_padding_efficiency_on_glue_with_length_grouping(glue_root, flan_json, realistic_tokenizer):
    """Real tokens / computed tokens >= 0.9 on GLUE training data with FLAN templates, batches of 8
    pairs (4 pair-of-pairs groups) grouped by length; random batches stay far below."""
    args = DataArgs(source="glue", root=str(glue_root), templates=str(flan_json), max_per_task=1000, val_size=0,
                    batch_size=8, group_by_length=True)
    dm = CoinDataModule(args, tokenizer=realistic_tokenizer, seed=0)
    dm.setup()
    grouped = padding_efficiency(dm.train_dataloader())
    dm.args.group_by_length = False
    shuffled = padding_efficiency(dm.train_dataloader())
    assert grouped >= 0.9, grouped
    assert shuffled < grouped - 0.2


def test_show_command_prints_counts_and_groups(capsys, glue_root):
    assert main(["show", "--n", "2", "data=glue", f"data.root={glue_root}", "data.max_per_task=20", "data.val_size=8", "data.tasks=[rte,cola]"]) == 0
    out = capsys.readouterr().out
    assert "rte" in out and "cola" in out and "train groups" in out
    assert out.count("anchor pair: original") == 2 and out.count("hard-negative pair: paraphrase") == 2
    assert "### Response:" in out
    with pytest.raises(SystemExit, match=r"^2$") as err:  # the status; the message goes to stderr
        main(["show", "data=coin_csv"])  # data.path is required
    assert err.value.code == 2
