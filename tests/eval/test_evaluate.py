"""End to end: ``coin_lightning.evaluate`` on the shared GLUE data with a published-format instruction
file, the embedded tasks, the adversarial mode, the row sample, and bad input."""
from __future__ import annotations

import json
import logging
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.data.sources.embedded import load_embedded
from coin_lightning.eval.run import load_tasks
from coin_lightning.eval.scoring.metrics import FILES, fingerprint
from coin_lightning.eval.settings import EvalSettings
from coin_lightning.evaluate import run as evaluate
from tests.eval.eval_helpers import bars, write_instruction_file, xtick_labels

PNG = b"\x89PNG\r\n\x1a\n"
# Written for this test in the published schema {perturbation: {task: [instruction, ...]}}.
PUBLISHED = {
    "clean": {
        "rte": ["Tell me if the first sentence implies the second. Reply 'entailment' or 'not_entailment'.",
                "Does sentence 2 follow from sentence 1? Answer entailment or not_entailment."],
        "sst2": ["What is the sentiment of this review? Reply 'positive' or 'negative'.",
                 "Classify the feeling of the sentence as positive or negative."],
    },
    "deepwordbug": {
        "rte": ["Tell me if the frist sentence implies the second. Reply 'entailment' or 'not_entailment'.",
                "Does sentence 2 folow from sentence 1? Answer entailment or not_entailment."],
        "sst2": ["What is the sentimnet of this review? Reply 'positive' or 'negative'.",
                 "Classify the feeling of the sentnce as positive or negative."],
    },
}


def _cfg(tmp_path: Path, overrides: list[str], config: str = "eval"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config, overrides=overrides)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path)
    return cfg


def _glue(shared_data: Path) -> str:
    return f"data.root={shared_data / 'glue'}"


def check_outputs(run: Path, n_expected: int, figures: dict) -> tuple[list[dict], dict]:
    """Every output exists and the metrics and figures agree with a recount of predictions.jsonl.

    ``figures``: what the run saved (the ``figures`` fixture, tests/eval/conftest.py); its bars are checked against the recount.
    """
    for key in ("predictions", "metrics", "per_instruction_csv", "per_task_level_csv", "markdown"):
        assert (run / FILES[key]).is_file(), key
    for key in ("accuracy_plot", "clean_vs_perturbed_plot"):
        assert (run / FILES[key]).read_bytes().startswith(PNG)
    rows = [json.loads(line) for line in (run / FILES["predictions"]).read_text().splitlines()]
    metrics = json.loads((run / FILES["metrics"]).read_text())
    assert len(rows) == n_expected == metrics["overall"]["n_examples"]
    counts = defaultdict(lambda: [0, 0, 0])  # correct, rows, unparseable
    level_of = {}
    for r in rows:
        key = (r["task"], r["perturbation"], r["instruction_index"])
        c = counts[key]
        c[0] += r["pred"] == r["gold"]
        c[1] += 1
        c[2] += r["pred"] < 0
        level_of[key] = r["level"]
        assert r["correct"] == (r["pred"] == r["gold"])
    assert len(metrics["per_instruction"]) == len(counts)
    for g in metrics["per_instruction"]:
        ok, n, bad = counts[(g["task"], g["perturbation"], g["instruction_index"])]
        assert g["accuracy"] == pytest.approx(ok / n, abs=1e-9)
        assert g["unparseable"] == pytest.approx(bad / n, abs=1e-9)
    # (task, level) cells: the mean over their instructions; overall: means over the cells
    cells = defaultdict(list)
    for key, (ok, n, _) in counts.items():
        cells[(key[0], level_of[key])].append(ok / n)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    assert metrics["tasks"] == tasks and set(metrics["levels"]) == {lv for _, lv in cells}
    clean = [statistics.fmean(v) for (_, lv), v in cells.items() if lv == "clean"]
    perturbed = [statistics.fmean(v) for (_, lv), v in cells.items() if lv != "clean"]
    o = metrics["overall"]
    assert o["unparseable"] == pytest.approx(sum(r["pred"] < 0 for r in rows) / len(rows), abs=1e-9)
    assert o["clean"] == pytest.approx(statistics.fmean(clean), abs=1e-9)
    assert o["perturbed"] == pytest.approx(statistics.fmean(perturbed), abs=1e-9)
    # the saved figure draws those cells: a group per task (+ average), a bar per level
    fig = figures[run / FILES["accuracy_plot"]]
    assert xtick_labels(fig) == [*tasks, "average"]
    drawn = bars(fig)
    assert list(drawn) == metrics["levels"]
    for lv in metrics["levels"]:
        means = [statistics.fmean(cells[(t, lv)]) for t in tasks if (t, lv) in cells]
        want = [100 * statistics.fmean(cells[(t, lv)]) if (t, lv) in cells else 0.0 for t in tasks]
        assert drawn[lv] == pytest.approx([*want, 100 * statistics.fmean(means)], abs=1e-9)
    fig = figures[run / FILES["clean_vs_perturbed_plot"]]
    assert xtick_labels(fig) == tasks
    assert bars(fig)["clean"] == pytest.approx([100 * statistics.fmean(cells[(t, "clean")]) for t in tasks], abs=1e-9)
    uids = defaultdict(list)
    for r in rows:
        if r["perturbation"] == rows[0]["perturbation"] and r["instruction_index"] == 0:
            uids[r["task"]].append(r["uid"])
    assert metrics["fingerprint"]["rows"] == fingerprint(dict(uids), {})["rows"]
    md = (run / FILES["markdown"]).read_text()
    assert "mean ± std" in md and "Performance Drop Rate" in md
    csv_header = (run / FILES["per_task_level_csv"]).read_text().splitlines()[0]
    assert csv_header.startswith("task,category,level,mean,std")
    return rows, metrics


def test_published_instruction_file_end_to_end(tmp_path, shared_data, figures):
    path = write_instruction_file(tmp_path / "published.json", PUBLISHED)
    run = tmp_path / "run"
    metrics = evaluate(_cfg(run, ["model=tiny_llama", _glue(shared_data), "eval.tasks=[rte,sst2]",
                                  "eval.samples_per_task=4", f"eval.instructions_file={path}", "eval.batch_size=4"]))
    rows, saved = check_outputs(run, 2 * 4 * 4, figures)
    assert saved["levels"] == ["clean", "character"] and saved["tasks"] == ["rte", "sst2"]
    assert metrics["fingerprint"] == saved["fingerprint"]
    assert {r["instruction"] for r in rows if r["perturbation"] == "deepwordbug"} == {
        i for t in PUBLISHED["deepwordbug"].values() for i in t}
    assert {r["gold_word"] for r in rows if r["task"] == "sst2"} <= {"negative", "positive"}
    # the CSV logger got the scalars and the figures
    logged = (run / "csv" / "metrics.csv").read_text()
    assert "eval/rte/clean/acc_mean" in logged and "eval/overall/perturbed" in logged
    assert (run / "csv" / "figures" / "accuracy_by_level.png").read_bytes().startswith(PNG)


def test_rows_are_a_seeded_sample_independent_of_the_model(shared_data):
    def uids(seed, n=5, tasks=("rte", "mnli", "mnli_matched")):
        s = EvalSettings.from_config({"tasks": list(tasks), "levels": ["clean"], "samples_per_task": n, "seed": seed,
                                      "dedup_aliases": False})
        return {t.name: t.uids for t in load_tasks(s, str(shared_data / "glue"))}

    a, b = uids(0), uids(0)
    assert a == b and len(a["rte"]) == 5
    assert a["mnli"] == a["mnli_matched"]  # mnli is PromptBench's alias of the matched split
    assert uids(1)["rte"] != a["rte"]
    ids = [int(u.split("/")[-1]) for u in a["rte"]]
    assert ids == sorted(ids)  # kept in source order
    assert len(uids(0, n=None, tasks=("wnli",))["wnli"]) == 71  # null = every row


def test_missing_mnli_mismatched_is_skipped_with_a_note(shared_data, caplog):
    s = EvalSettings.from_config({"tasks": ["rte", "mnli_mismatched"], "levels": ["clean"], "samples_per_task": 3})
    with caplog.at_level(logging.WARNING):
        tasks = load_tasks(s, str(shared_data / "glue"))
    assert [t.name for t in tasks] == ["rte"]
    assert "mnli_mismatched" in caplog.text


def test_embedded_tasks_with_the_default_instructions(tmp_path, figures):  # embedded tasks: no ../shared
    run = tmp_path / "run"
    evaluate(_cfg(run, ["model=tiny_llama", "eval.tasks=[embedded_parity,embedded_max_number]", "eval.samples_per_task=3",
                        "eval.levels=[clean,sentence]", "eval.perturb.perturbations=[checklist]", "eval.method=rank"]))
    rows, metrics = check_outputs(run, 2 * 3 * 12, figures)
    assert metrics["label_words"]["embedded_parity"] == ["even", "odd"]
    numbers = {r.uid: int(r.fields["number"]) for r in load_embedded(["embedded_parity"], 3, seed=0, split="test")}
    maxima = {r.uid: r.target for r in load_embedded(["embedded_max_number"], 3, seed=0, split="test")}
    for r in rows:
        if r["task"] == "embedded_parity":
            assert r["gold_word"] == ("odd" if numbers[r["uid"]] % 2 else "even")
        else:
            assert r["gold_word"] == maxima[r["uid"]]  # generation task: its targets are the label words
    assert all(r["pred"] >= 0 for r in rows)  # rank always answers


def test_adversarial_mode_attacks_the_clean_instructions(tmp_path, shared_data, figures):
    path = write_instruction_file(tmp_path / "clean.json", {"clean": {"rte": PUBLISHED["clean"]["rte"][:1]}})
    run = tmp_path / "run"
    evaluate(_cfg(run, ["model=tiny_llama", _glue(shared_data), "eval.tasks=[rte]", "eval.samples_per_task=4",
                        f"eval.instructions_file={path}", "eval.perturb_mode=adversarial", "eval.query_budget=3",
                        "eval.probe_size=2", "eval.levels=[clean,character,sentence]",
                        "eval.perturb.perturbations=[deepwordbug,checklist]"]))
    rows, metrics = check_outputs(run, 3 * 4, figures)
    attacked = {r["perturbation"]: r["instruction"] for r in rows}
    assert set(attacked) == {"clean", "deepwordbug", "checklist"}
    assert attacked["deepwordbug"] != attacked["clean"] and attacked["checklist"] != attacked["clean"]
    assert (run / FILES["adversarial_instructions"]).is_file()
    assert metrics["run"]["perturb_mode"] == "adversarial" and metrics["run"]["query_budget"] == 3
    # a rerun in the same directory reuses the attack (its key names the model, not the run's load time)
    found = run / FILES["adversarial_instructions"]
    before = (found.stat().st_mtime_ns, found.read_text())
    evaluate(_cfg(run, ["model=tiny_llama", _glue(shared_data), "eval.tasks=[rte]", "eval.samples_per_task=4",
                        f"eval.instructions_file={path}", "eval.perturb_mode=adversarial", "eval.query_budget=3",
                        "eval.probe_size=2", "eval.levels=[clean,character,sentence]",
                        "eval.perturb.perturbations=[deepwordbug,checklist]"]))
    assert (found.stat().st_mtime_ns, found.read_text()) == before


@pytest.mark.parametrize("content, message", [
    ({"clean": {"no_such_task": ["x"]}}, "unknown task"),
    ({"clean": {"rte": ["x"]}, "no_such_level": {"rte": ["y"]}}, "unknown perturbation or level"),
    ({"clean": {"rte": []}}, "non-empty list"),
])
def test_bad_instruction_files_fail_with_one_line(tmp_path, shared_data, content, message):
    path = write_instruction_file(tmp_path / "bad.json", content)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(SystemExit, match=message) as err:
        evaluate(_cfg(run, ["model=tiny_llama", _glue(shared_data), "eval.tasks=[rte]", "eval.samples_per_task=2",
                            f"eval.instructions_file={path}"]))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    assert not run.exists()  # nothing half-written is left behind


def test_bad_eval_settings_fail_with_one_line(tmp_path):
    """The settings are refused before any row is read: no data.root is needed (null = the hub, offline here)."""
    for override, message in (("eval.tasks=[nope]", "eval.tasks: unknown task 'nope'"),
                              ("eval.levels=[clean,loud]", "eval.levels: unknown level 'loud'"),
                              ("eval.method=vote", "eval.method='vote'")):
        with pytest.raises(SystemExit, match=message.replace("[", r"\[")):
            evaluate(_cfg(tmp_path / "run", ["model=tiny_llama", override]))


@pytest.mark.slow
def test_embedded_model_end_to_end(tmp_path, shared_data, figures):
    small = {"clean": {"sst2": PUBLISHED["clean"]["sst2"][:1], "cola": ["Is this sentence grammatical? Reply 'acceptable' or 'unacceptable'."]},
             "deepwordbug": {"sst2": PUBLISHED["deepwordbug"]["sst2"][:1], "cola": ["Is this sentence grammaticl? Reply 'acceptable' or 'unacceptable'."]}}
    path = write_instruction_file(tmp_path / "published.json", small)
    run = tmp_path / "run"
    evaluate(_cfg(run, ["model=smollm2_135m", _glue(shared_data), "eval.tasks=[sst2,cola]", "eval.samples_per_task=4",
                        f"eval.instructions_file={path}", "eval.batch_size=4"]))
    rows, metrics = check_outputs(run, 2 * 4 * 2, figures)
    assert metrics["run"]["model"] == "embedded:smollm2-135m"
    unparseable = [r for r in rows if r["pred"] < 0]
    assert metrics["overall"]["unparseable"] == pytest.approx(len(unparseable) / len(rows), abs=1e-9)
    assert all(r["pred_word"] is None and not r["correct"] for r in unparseable)


def test_adapter_is_applied(tmp_path, shared_data):
    """``adapter=PATH`` evaluates base + LoRA: scores equal a manually wrapped model's, not the base's."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from coin_lightning.eval.engine.predict import Predictor
    from coin_lightning.eval.run import load_tasks as load
    from coin_lightning.model.loading import load_model

    base, tok = load_model({"name_or_path": "tiny:llama"})
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    path = write_instruction_file(tmp_path / "one.json", {"clean": {"rte": PUBLISHED["clean"]["rte"][:1]}})
    common = ["model=tiny_llama", _glue(shared_data), "eval.tasks=[rte]", "eval.samples_per_task=3",
              f"eval.instructions_file={path}", "eval.method=rank"]
    with_adapter = evaluate(_cfg(tmp_path / "a", common + [f"adapter={tmp_path / 'adapter'}"]))
    without = evaluate(_cfg(tmp_path / "b", common))
    assert with_adapter["run"]["adapter"] == str(tmp_path / "adapter")
    def scores(run):
        return [v for x in (run / FILES["predictions"]).read_text().splitlines() for v in json.loads(x)["scores"]]
    task = load(EvalSettings.from_config({"tasks": ["rte"], "levels": ["clean"], "samples_per_task": 3}),
                str(shared_data / "glue"))[0]
    fresh, _ = load_model({"name_or_path": "tiny:llama"})
    manual = Predictor(PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")), tok, method="rank")
    expected = [v for p in manual.predict(PUBLISHED["clean"]["rte"][0], task.contents, task.label_words) for v in p.scores]
    assert scores(tmp_path / "a") == pytest.approx(expected, abs=1e-4)
    assert scores(tmp_path / "a") != pytest.approx(scores(tmp_path / "b"), abs=1e-3)
    assert without["fingerprint"] == with_adapter["fingerprint"]  # comparable runs
