"""``docs/EXTENDING.md`` followed with a toy source: a handful of in-memory sentiment records,
three templates in an own-layout YAML file, registered as ``data.source=toy``, then used through the
public path (the ``data`` config check, ``CoinDataModule``, the evaluation task loader)."""
from __future__ import annotations

import pytest

from coin_lightning.data.config import DataArgs
from coin_lightning.data.datamodule import CoinDataModule
from coin_lightning.data.records import DataError, Record
from coin_lightning.data.sources import SOURCES, register
from coin_lightning.data.sources.base import EvalSpec, Source
from coin_lightning.eval.engine.tasks import load_task
from coin_lightning.eval.settings import expand_tasks

REVIEWS = [("I loved this film", 1), ("A dull and tiring plot", 0), ("Great acting from everyone", 1),
           ("The worst meal of my life", 0), ("What a lovely little book", 1), ("I regret buying it", 0)]

TEMPLATES = """\
toy_sentiment:
  - "{text}\\nIs this review {choices}?"
  - "Review: {text}\\nAnswer {choices}."
  - "Classify the sentiment of the review below as {choices}.\\n{text}"
"""


class Toy(Source):
    """Step 1: one class, its ``data.source`` name, its records (and, optionally, evaluation tasks)."""

    name = "toy"
    label_words = {"toy_sentiment": ("negative", "positive")}
    eval_tasks = {"toy_sentiment": EvalSpec("toy_sentiment", "sentiment", ("negative", "positive"))}

    def records(self, dm, stats):
        return [Record(task="toy_sentiment", fields={"text": text}, label=label, uid=f"toy/{dm.split}/{i}")
                for i, (text, label) in enumerate(REVIEWS)]

    def eval_records(self, name, root, samples, seed):
        return [Record(task=name, fields={"text": text}, label=label, uid=f"toy/test/{i}")
                for i, (text, label) in enumerate(REVIEWS)]


@pytest.fixture
def toy_templates(tmp_path):
    """Steps 2 and 3: the templates file, and the source registered (removed again afterwards)."""
    path = tmp_path / "toy.yaml"
    path.write_text(TEMPLATES, encoding="utf-8")
    register(Toy)
    yield str(path)
    SOURCES.pop("toy")


def test_the_config_check_accepts_the_registered_source(toy_templates):
    DataArgs.from_config({"source": "toy", "templates": toy_templates})
    with pytest.raises(DataError, match="data.source='tyo' is not one of embedded, glue, flan, coin_csv, toy$"):
        DataArgs.from_config({"source": "tyo"})
    with pytest.raises(DataError, match="data.templates=/no/toy.yaml: no such file"):
        DataArgs(source="toy", templates="/no/toy.yaml")
    with pytest.raises(DataError, match="'toy': already registered"):
        register(Toy)


def test_the_datamodule_builds_coin_groups_from_it(toy_templates):
    args = DataArgs(source="toy", templates=toy_templates, group="hard_negative_column", batch_size=1, val_size=0)
    dm = CoinDataModule(args, seed=3)
    dm.setup()
    groups = dm.train_dataset.groups
    assert len(groups) == len(REVIEWS) and dm.stats["records_per_task"] == {"toy_sentiment": 6}
    assert dm.stats["templates"] == toy_templates and dm.stats["same_target_negatives"] == 0
    words = {text: ("negative", "positive")[label] for text, label in REVIEWS}
    for group in groups:
        (pair,), (negative,) = group.pairs, group.negatives
        original, positive = pair.original, pair.paraphrase
        text = next(t for t in words if t in original.input)
        assert original.target == positive.target == words[text]  # the answer word of the record's label
        assert positive.uid == original.uid and text in positive.input  # same input ...
        assert positive.template != original.template and positive.input != original.input  # ... another template
        assert negative.uid != original.uid and negative.template == original.template  # another record, same template
        assert negative.target != original.target  # a different output
    assert sorted(g.pairs[0].original.uid for g in groups) == [f"toy/train/{i}" for i in range(6)]


def test_its_evaluation_tasks_are_found_through_the_registry(toy_templates):
    assert expand_tasks(["toy"]) == ["toy_sentiment"]
    task = load_task("toy_sentiment", None, 4, seed=0)
    assert task.category == "sentiment" and task.label_words == ("negative", "positive")
    assert len(task.records) == 4 and task.contents == [r.fields["text"] for r in task.records]
    assert task.golds == [r.label for r in task.records]
