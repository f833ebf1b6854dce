"""``eval.instructions=promptbench``: PromptBench's prompts read from the installed package's files."""
from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pytest

from coin_lightning.eval.instructions.defaults import (
    default_instruction_set,
    load_pools,
    normalise,
    promptbench_instruction_set,
)
from coin_lightning.eval.instructions.sets import InstructionError, label_words
from coin_lightning.eval.settings import EvalConfigError, EvalSettings

GLUE = ["cola", "sst2", "qqp", "mrpc", "mnli", "qnli", "rte", "wnli"]
SPEC = importlib.util.find_spec("promptbench")
needs_package = pytest.mark.skipif(SPEC is None, reason="promptbench is not installed (pip install --no-deps promptbench==0.0.4)")


def package_text(name: str) -> str:
    return (Path(list(SPEC.submodule_search_locations)[0]) / "prompts" / name).read_text(encoding="utf-8")


def names(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text, re.IGNORECASE) is not None


@needs_package
def test_six_clean_and_six_semantic_per_glue_task_taken_verbatim_from_the_package():
    iset = promptbench_instruction_set(GLUE + ["mnli_matched"])
    task_file, role_file = package_text("task_oriented.py"), package_text("role_oriented.py")
    semantic_file = package_text("semantic_atk_prompts.py")
    assert iset.instructions_for("mnli_matched") == iset.instructions_for("mnli")
    for task in GLUE:
        clean, semantic = iset.instructions_for(task), iset.instructions_for(task, "semantic")
        assert len(clean) == 6 and len(set(clean)) == 6 and len(semantic) == 6
        for i, text in enumerate(clean):      # 3 task-oriented, then 3 role-oriented, each a literal of its file
            assert text in (task_file if i < 3 else role_file), (task, text)
        assert all(text in semantic_file for text in semantic)
        for text in clean + semantic:
            assert "{" not in text and "\n" not in text and text == text.strip()
            assert all(names(text, w) for w in label_words(task)), (task, text)


@needs_package
def test_selection_is_the_first_usable_prompts_in_file_order():
    pools = load_pools()
    for task in GLUE:
        for pool, sl in (("task", slice(0, 3)), ("role", slice(3, 6))):
            usable = [normalise(p) for p in pools[pool][task]
                      if "{" not in normalise(p) and all(names(normalise(p), w) for w in label_words(task))]
            assert promptbench_instruction_set([task]).instructions_for(task)[sl] == usable[:3]
    # 0.0.4's first rte prompt has the content tail pasted into its middle: skipped
    assert "{content}" in normalise(pools["task"]["rte"][0])


@needs_package
def test_project_operators_perturb_promptbench_prompts_and_keep_label_words():
    cfg = {"perturbations": ["deepwordbug", "checklist"], "seed": 3}
    iset = default_instruction_set(cfg, tasks=["sst2", "rte"], source="promptbench")
    assert iset.perturbations == ["clean", "deepwordbug", "checklist", "semantic"]
    for task in ("sst2", "rte"):
        clean = iset.instructions_for(task)
        for pert in ("deepwordbug", "checklist"):
            perturbed = iset.instructions_for(task, pert)
            assert len(perturbed) == 6 and perturbed != clean
            for c, p in zip(clean, perturbed):
                for w in label_words(task):
                    assert len(re.findall(rf"(?<!\w){w}(?!\w)", p, re.I)) == len(re.findall(rf"(?<!\w){w}(?!\w)", c, re.I))


def test_missing_package_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "promptbench" else real(name, *a))
    with pytest.raises(InstructionError, match=r"pip install --no-deps -c constraints.txt promptbench==0.0.4") as err:
        default_instruction_set(tasks=["sst2"], source="promptbench")
    assert "\n" not in str(err.value)


def test_semantic_falls_back_to_the_projects_own_with_a_note(caplog):
    """Synthetic pools (not PromptBench text): sst2 without semantic prompts uses the project's own."""
    pools = {
        "task": {"sst2": [f"Task {k}: say 'positive' or 'negative'.\nQuestion:{{content}}\nAnswer:" for k in range(4)]},
        "role": {"sst2": ["As a judge, reply positive or negative.", "Say positive.", "As a critic: positive or negative?",
                          "You rate text: 'negative' or 'positive'.\nQuestion: {content}\nAnswer:"]},
        "semantic": {},
    }
    with caplog.at_level(logging.WARNING):
        iset = promptbench_instruction_set(["sst2"], pools=pools)
    assert iset.instructions_for("sst2") == ["Task 0: say 'positive' or 'negative'.", "Task 1: say 'positive' or 'negative'.",
                                             "Task 2: say 'positive' or 'negative'.", "As a judge, reply positive or negative.",
                                             "As a critic: positive or negative?", "You rate text: 'negative' or 'positive'."]
    own = default_instruction_set({"perturbations": []}, tasks=["sst2"]).instructions_for("sst2", "semantic")
    assert iset.instructions_for("sst2", "semantic") == own
    assert "no semantic prompts for sst2" in caplog.text
    pools["role"]["sst2"] = pools["role"]["sst2"][:2]
    with pytest.raises(InstructionError, match="1 usable prompts"):
        promptbench_instruction_set(["sst2"], pools=pools)
    with pytest.raises(InstructionError, match="no prompts for task 'embedded_parity'"):
        promptbench_instruction_set(["embedded_parity"], pools=pools)


def test_settings_accept_only_known_sources():
    assert EvalSettings.from_config({"instructions": "promptbench"}).instructions == "promptbench"
    with pytest.raises(EvalConfigError, match="eval.instructions='flan'"):
        EvalSettings.from_config({"instructions": "flan"})


@needs_package
def test_evaluate_with_promptbench_prompts_and_the_reference_layout(tmp_path, shared_data):
    """``evaluate eval.instructions=promptbench eval.prompt_layout=reference`` on the tiny LLaMA."""
    import json

    from coin_lightning.evaluate import run as evaluate
    from tests.eval.test_evaluate import _cfg

    metrics = evaluate(_cfg(tmp_path, [
        "model=tiny_llama", f"data.root={shared_data / 'glue'}", "eval.tasks=[sst2]", "eval.samples_per_task=2",
        "eval.levels=[clean,semantic]", "eval.instructions=promptbench", "eval.prompt_layout=reference", "eval.method=rank"]))
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    want = promptbench_instruction_set(["sst2"])
    assert len(rows) == 2 * 12 and metrics["run"]["prompt_layout"] == "reference"
    assert [r["instruction"] for r in rows if r["level"] == "clean"][::2] == want.instructions_for("sst2")
    assert [r["instruction"] for r in rows if r["level"] == "semantic"][::2] == want.instructions_for("sst2", "semantic")
