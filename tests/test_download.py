"""``python -m coin_lightning.download``: the hub downloads a config plans, with the hub clients mocked (no network)."""
from __future__ import annotations

import io

import pytest

from coin_lightning import download
from coin_lightning.download import Download, compose_config, plan, run

GLUE8 = ["cola", "sst2", "mrpc", "qqp", "mnli", "qnli", "rte", "wnli"]


def _keys(items):
    return [(i.what, i.repo_id, i.revision, i.repo_type, i.config) for i in items]


def test_alpaca_on_glue_plans_model_adapter_and_every_glue_config():
    items = plan(compose_config("train", ["model=alpaca", "data=glue"]))
    assert _keys(items) == [
        ("model", "yahma/llama-7b-hf", "main", "model", None),
        ("adapter", "tloen/alpaca-lora-7b", "main", "model", None),
        *[("dataset", "nyu-mll/glue", None, "dataset", task) for task in GLUE8],
    ]
    assert all(i.cache_dir is None for i in items)


def test_revisions_cache_dir_and_task_subset_are_followed(tmp_path):
    rev = "0123456789abcdef0123456789abcdef01234567"
    overrides = ["model=alpaca", f"model.revision={rev}", "model.adapter_revision=v1", f"model.cache_dir={tmp_path}"]
    items = plan(compose_config("train", [*overrides, "data=glue", "data.tasks=[rte,mrpc]"]))
    assert _keys(items) == [
        ("model", "yahma/llama-7b-hf", rev, "model", None),
        ("adapter", "tloen/alpaca-lora-7b", "v1", "model", None),
        ("dataset", "nyu-mll/glue", None, "dataset", "rte"),
        ("dataset", "nyu-mll/glue", None, "dataset", "mrpc"),
    ]
    assert [i.cache_dir for i in items[:2]] == [str(tmp_path)] * 2


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # embedded model and embedded data
        ["model=tiny_llama", "data=glue", "data.root=../shared/data/glue"],  # local GLUE directory
        ["model=alpaca", "model.name_or_path={tmp}", "model.adapter={tmp}", "data=coin_csv", "data.path=x.csv"],
    ],
)
def test_embedded_model_and_local_paths_are_skipped(tmp_path, overrides):
    cfg = compose_config("train", [o.format(tmp=tmp_path) for o in overrides])
    assert plan(cfg) == []
    out = io.StringIO()
    assert run(cfg, fetcher=pytest.fail, out=out) == 0 and "Nothing to download" in out.getvalue()


def test_flan_hub_source_is_planned_with_its_data_files():
    cfg = compose_config("train", ["data=flan", "data.templates=t.json", "data.data_files=[rte.jsonl]"])
    (item,) = plan(cfg)
    assert (item.repo_id, item.repo_type, item.data_files) == ("Muennighoff/flan", "dataset", ["rte.jsonl"])


def test_eval_config_plans_its_glue_tasks_and_a_hub_adapter(tmp_path):
    cfg = compose_config("eval", ["model=alpaca", "adapter=org/evaluated", "eval.tasks=[rte,mnli_matched,mnli_mismatched]"])
    assert _keys(plan(cfg))[1:] == [
        ("adapter", "tloen/alpaca-lora-7b", "main", "model", None),
        ("adapter", "org/evaluated", None, "model", None),
        ("dataset", "nyu-mll/glue", None, "dataset", "rte"),
        ("dataset", "nyu-mll/glue", None, "dataset", "mnli"),
    ]
    local = compose_config("eval", [f"adapter={tmp_path}", "eval.tasks=[glue]", "data.root=../shared/data/glue"])
    assert plan(local) == []


def test_run_fetches_each_item_then_prints_the_offline_environment():
    cfg = compose_config("train", ["model=alpaca", "data=glue", "data.tasks=[rte]"])
    fetched, out = [], io.StringIO()
    assert run(cfg, fetcher=lambda item: fetched.append(item) or f"/cache/{item.repo_id}", out=out) == 0
    assert fetched == plan(cfg)
    text = out.getvalue()
    assert "fetched model    yahma/llama-7b-hf@main -> /cache/yahma/llama-7b-hf" in text
    assert "export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in text

    def fail_adapter(item):
        if item.what == "adapter":
            raise OSError("401 Client Error: gated repository\nmore detail")
        return "ok"

    out = io.StringIO()
    assert run(cfg, fetcher=fail_adapter, out=out) == 1
    assert "error: adapter  tloen/alpaca-lora-7b@main: 401 Client Error: gated repository\n" in out.getvalue()
    assert "export HF_HUB_OFFLINE" not in out.getvalue()  # not offline-ready


def test_fetch_calls_the_hub_clients_with_revision_and_cache_dir(monkeypatch):
    import datasets
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: calls.append((a, k)) or "/snap")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or {"train": [1, 2]})
    assert download.fetch(Download("model", "org/m", "v1", "model", cache_dir="/c")) == "/snap"
    assert download.fetch(Download("dataset", "nyu-mll/glue", None, "dataset", config="rte")) == "train: 2 rows"
    (args, kwargs), (dargs, dkwargs) = calls
    assert args == ("org/m",) and kwargs["revision"] == "v1" and kwargs["cache_dir"] == "/c"
    assert kwargs["repo_type"] == "model" and "*.h5" in kwargs["ignore_patterns"]
    assert dargs == ("nyu-mll/glue", "rte") and dkwargs == {"data_files": None}


def test_cli_dry_run_and_bad_override(capsys):
    assert download.main(["--dry-run", "model=alpaca", "data=glue", "data.tasks=[wnli]"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "would fetch model    yahma/llama-7b-hf@main",
        "would fetch adapter  tloen/alpaca-lora-7b@main",
        "would fetch dataset  nyu-mll/glue:wnli",
    ]
    with pytest.raises(SystemExit, match=r"^2$") as err:  # the status; the message goes to stderr
        download.main(["model=nope"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip() == "error: model=nope: no such option in conf/model/; options: alpaca, smollm2_135m, tiny_llama"
