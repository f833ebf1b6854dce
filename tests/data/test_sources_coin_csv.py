"""CoIN CSV: rows 2k and 2k+1 pair as (example, hard negative), as in the paper's released data."""
from __future__ import annotations

import csv

import pytest

from coin_lightning.data.grouping import groups_from_pairs
from coin_lightning.data.records import DataError
from coin_lightning.data.sources.coin_csv import load_coin_csv

HEADER = ["original_instruction", "paraphrased_instruction", "targets", "task_name", "keyword_data"]


def write_csv(path, rows, header=HEADER):
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def paper_rows(n_pairs: int = 3):
    """Rows as the paper's CSV lays them out: row 2k+1 = same original template, another input."""
    rows = []
    for k in range(n_pairs):
        for text, answer in [(f"movie {k} was great", "positive"), (f"movie {k} was awful,\nreally", "negative")]:
            rows.append([
                f"Review:\n{text}\nIs this movie review sentence negative or positive?\nOPTIONS:\n- negative\n- positive",
                f"What is the sentiment of the following movie review sentence?\n{text}\nOPTIONS:\n- negative\n- positive",
                answer,
                "sst2_10templates",
                repr({"sentence": text, "options_": "OPTIONS:\n- negative\n- positive", "answer": answer}),
            ])
    return rows


def test_rows_pair_as_in_the_paper(tmp_path):
    rows = paper_rows(3)
    pairs = load_coin_csv(write_csv(tmp_path / "coin.csv", rows))
    assert len(pairs) == 3
    for k, (a, b) in enumerate(pairs):
        assert (a.uid, b.uid) == (f"coin_csv/{2 * k}", f"coin_csv/{2 * k + 1}")
        assert a.meta["original"] == rows[2 * k][0] and b.meta["original"] == rows[2 * k + 1][0]
        assert a.meta["paraphrased"] == rows[2 * k][1] and b.target == rows[2 * k + 1][2]
        assert a.fields["sentence"] == f"movie {k} was great"  # keyword_data parsed
    # multi-line quoted cells: meta["row"] is the file line where the row starts
    text = (tmp_path / "coin.csv").read_text()
    for a, _ in pairs:
        assert a.meta["row"] == text[: text.index('"' + a.meta["original"])].count("\n") + 1

    (g,) = groups_from_pairs(pairs[:1], "pair_of_pairs")
    assert [e.input for e in g.examples] == [rows[0][0], rows[1][0], rows[0][1], rows[1][1]]
    assert [e.target for e in g.examples] == ["positive", "negative", "positive", "negative"]
    g1, g2 = groups_from_pairs(pairs[:1], "hard_negative_column")
    assert (g1.pairs[0].original.input, g1.pairs[0].paraphrase.input, g1.negatives[0].input) == (rows[0][0], rows[0][1], rows[1][0])
    assert (g2.pairs[0].original.input, g2.negatives[0].input) == (rows[1][0], rows[0][0])


def test_bad_rows_name_the_line_or_drop_their_whole_pair(tmp_path):
    rows = paper_rows(3)
    rows[3][2] = ""  # empty target in data row 3 -> pair (2, 3) is spoiled
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"bad\.csv:\d+ \(data row 3\): empty targets"):
        load_coin_csv(path)
    stats = {}
    pairs = load_coin_csv(path, on_error="skip", stats=stats)
    assert [(a.uid, b.uid) for a, b in pairs] == [("coin_csv/0", "coin_csv/1"), ("coin_csv/4", "coin_csv/5")]
    assert stats["skipped"] == 2


def test_odd_rows_task_mismatch_and_missing_columns(tmp_path):
    rows = paper_rows(2)
    with pytest.raises(DataError, match="data row 2 has no hard-negative row"):
        load_coin_csv(write_csv(tmp_path / "odd.csv", rows[:3]))
    stats = {}
    assert len(load_coin_csv(write_csv(tmp_path / "odd.csv", rows[:3]), on_error="skip", stats=stats)) == 1
    assert stats["skipped"] == 1
    rows[1][3] = "cola_10templates"
    with pytest.raises(DataError, match="data rows 0 and 1 .* different tasks"):
        load_coin_csv(write_csv(tmp_path / "mix.csv", rows))
    with pytest.raises(DataError, match="missing column.*keyword_data"):
        load_coin_csv(write_csv(tmp_path / "cols.csv", [r[:4] for r in rows], HEADER[:4]))
    rows = paper_rows(1)
    rows[0][4] = "not a dict"
    stats = {}
    (a, _), = load_coin_csv(write_csv(tmp_path / "kw.csv", rows), stats=stats)
    assert a.fields == {} and stats["keyword_data_unparsed"] == 1


def test_datamodule_on_coin_csv_keeps_row_pairs(tmp_path, tiny_tokenizer):
    from coin_lightning.data.config import DataArgs
    from coin_lightning.data.datamodule import CoinDataModule

    path = write_csv(tmp_path / "coin.csv", paper_rows(10))
    dm = CoinDataModule(DataArgs(source="coin_csv", path=str(path), val_size=4), tokenizer=tiny_tokenizer, seed=0)
    dm.setup()
    assert dm.stats["train_groups"] == 8 and dm.stats["val_groups"] == 2 and dm.stats["val_records"] == 4
    for g in dm.train_dataset.groups:
        a, b = g.pairs
        assert int(b.original.uid.split("/")[1]) == int(a.original.uid.split("/")[1]) + 1
        assert int(a.original.uid.split("/")[1]) % 2 == 0
