"""Instruction sets: the file schema, the project's own instructions and the default set."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from coin_lightning.data.sources.embedded import EMBEDDED_TASKS
from coin_lightning.data.sources.glue import GLUE_TASKS, LABEL_WORDS
from coin_lightning.eval.instructions.defaults import (
    default_instruction_path,
    default_instruction_set,
    perturb_instruction_set,
)
from coin_lightning.eval.instructions.sets import (
    InstructionError,
    InstructionSet,
    label_words,
    load_instruction_file,
    save_instruction_file,
)
from tests.helpers import PROMPTBENCH_LEVELS, wordnet_missing

LEVEL_OF = PROMPTBENCH_LEVELS
GENERATED = tuple(p for p in LEVEL_OF if p not in ("clean", "semantic"))
REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "src" / "coin_lightning" / "resources" / "templates"
OWN = yaml.safe_load(default_instruction_path().read_text(encoding="utf-8"))
ALL_TASKS = [*GLUE_TASKS, *EMBEDDED_TASKS]
EXPECTED_WORDS = {**{t: LABEL_WORDS[t] for t in GLUE_TASKS}, **{n: t.options or () for n, t in EMBEDDED_TASKS.items()}}
NO_WORDNET = wordnet_missing()
needs_wordnet = pytest.mark.skipif(NO_WORDNET is not None, reason=NO_WORDNET or "")


def has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text) is not None


def count_words(text: str, words) -> dict[str, int]:
    return {w: len(re.findall(rf"(?<![\w]){re.escape(w)}(?![\w])", text, flags=re.IGNORECASE)) for w in words}


def trigrams(text: str) -> set[tuple[str, ...]]:
    tokens = re.findall(r"[a-z0-9_']+", re.sub(r"\{[^}]*\}", " ", text).lower())
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


# --- the project's own instructions ------------------------------------------------------------
def test_own_file_has_six_clean_and_six_semantic_per_task():
    assert set(OWN) == {"clean", "semantic"}
    for level in OWN:
        assert set(OWN[level]) == set(ALL_TASKS)
        for task, items in OWN[level].items():
            assert len(items) == 6 and len(set(items)) == 6, (level, task)
    every = [s for level in OWN.values() for items in level.values() for s in items]
    assert len(set(every)) == len(every)  # no paraphrase repeats a clean instruction


@pytest.mark.parametrize("level", ["clean", "semantic"])
def test_every_own_instruction_names_all_label_words_verbatim(level):
    for task, items in OWN[level].items():
        assert label_words(task) == tuple(EXPECTED_WORDS[task])
        for text in items:
            missing = [w for w in EXPECTED_WORDS[task] if not has_word(text, w)]
            assert not missing, f"{level}.{task}: {text!r} lacks {missing}"


def test_role_oriented_instructions_give_the_model_a_role():
    role = re.compile(r"\b(you are|you work|you moderate|as an?|acting as|imagine|suppose|pretend|playing|in your|in the role|working as|act as|picture yourself)\b", re.I)
    for level in OWN.values():
        for task, items in level.items():
            assert all(role.search(t) for t in items[3:]), task


def _template_texts() -> list[str]:
    texts = []
    for path in sorted(TEMPLATES.glob("*.yaml")):
        for items in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).values():
            texts.extend(t["input"] if isinstance(t, dict) else t for t in items)
    return texts


def test_own_instructions_are_disjoint_from_the_training_templates():
    templates = _template_texts()
    if not templates:
        pytest.skip(f"no training templates under {TEMPLATES}")
    worst = 0.0
    for items in (x for level in OWN.values() for x in level.values()):
        for text in items:
            grams = trigrams(text)
            for tpl in templates:
                other = trigrams(tpl)
                if grams and other:
                    worst = max(worst, len(grams & other) / len(grams | other))
    assert worst < 0.2, f"an evaluation instruction shares too many word 3-grams with a template (Jaccard {worst:.2f})"


def test_own_instructions_are_not_flan_templates(shared_data):
    flan = json.loads((shared_data / "flan" / "templates.json").read_text())
    flan_grams = [trigrams(t["input"]) for items in flan.values() for t in items]
    for items in (x for level in OWN.values() for x in level.values()):
        for text in items:
            grams = trigrams(text)
            assert max(len(grams & g) / len(grams | g) for g in flan_grams if g) < 0.2, text


# --- file schema -------------------------------------------------------------------------------
GOOD = {"clean": {"rte": ["Say entailment or not_entailment."]}, "textfooler": {"rte": ["Tell entailment or not_entailment."]}}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    iset = InstructionSet.from_dict(GOOD)
    path = save_instruction_file(iset, tmp_path / f"set{suffix}")
    back = load_instruction_file(path)
    assert back.to_dict() == GOOD
    assert back.level("clean") == "clean" and back.level("textfooler") == "word"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writer leaves no temporary


@pytest.mark.parametrize(
    "data, key",
    [
        ({"clean": {"rtee": ["x"]}}, "clean.rtee"),
        ({"typo_attack": {"rte": ["x"]}}, "typo_attack"),
        ({"clean": {"rte": []}}, "clean.rte"),
        ({"clean": {"rte": "just a string"}}, "clean.rte"),
        ({"clean": {"rte": ["ok", "  "]}}, r"clean.rte\[1\]"),
        ({"clean": {}}, "clean"),
        ([], "non-empty mapping"),
    ],
)
def test_bad_files_give_clear_errors_naming_file_and_key(tmp_path, data, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InstructionError, match=rf"bad\.yaml.*{key}"):
        load_instruction_file(path)


def test_missing_or_unparsable_file(tmp_path):
    with pytest.raises(InstructionError, match="not found"):
        load_instruction_file(tmp_path / "none.yaml")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InstructionError, match="broken.json: cannot parse"):
        load_instruction_file(tmp_path / "broken.json")


def test_level_map_is_configurable_and_level_names_are_keys(tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump({"clean": {"rte": ["a"]}, "textfooler": {"rte": ["b"]}, "character": {"rte": ["c"]}}, sort_keys=False))
    iset = load_instruction_file(path, level_map={**LEVEL_OF, "textfooler": "sentence"})
    assert [iset.level(p) for p in iset.perturbations] == ["clean", "sentence", "character"]
    with pytest.raises(InstructionError, match="set.yaml.*textfooler.*unknown level"):
        load_instruction_file(path, level_map={**LEVEL_OF, "textfooler": "phrase"})
    with pytest.raises(InstructionError, match="set.yaml.*textfooler"):
        load_instruction_file(path, level_map={"clean": "clean"})


def test_custom_task_list(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"clean": {"my_task": ["Answer yes or no."]}}))
    with pytest.raises(InstructionError, match="my_task"):
        load_instruction_file(path)
    assert load_instruction_file(path, tasks=["my_task"]).instructions_for("my_task") == ["Answer yes or no."]


def test_mnli_rows_reuse_mnli_instructions_unless_the_file_has_their_key():
    iset = InstructionSet.from_dict({"clean": {"mnli": ["m"], "mnli_mismatched": ["mm"]}})
    assert iset.instructions_for("mnli_matched") == ["m"]
    assert iset.instructions_for("mnli_mismatched") == ["mm"]
    with pytest.raises(InstructionError, match="no instructions for task 'rte'"):
        iset.instructions_for("rte")
    assert [e.instruction for e in iset.entries("mnli_matched")] == ["m"]


# --- the default set (own + generated) ---------------------------------------------------------
@pytest.fixture(scope="module")
def default_set():
    if NO_WORDNET:
        pytest.skip(NO_WORDNET)
    return default_instruction_set(seed=0)


@needs_wordnet
def test_default_set_has_every_perturbation_aligned_with_clean(default_set):
    assert default_set.perturbations == ["clean", *GENERATED, "semantic"]
    for pert in default_set.perturbations:
        assert default_set.level(pert) == LEVEL_OF[pert]
        for task in ALL_TASKS:
            items = default_set.instructions_for(task, pert)
            assert len(items) == 6
            if pert in GENERATED:
                clean = default_set.instructions_for(task, "clean")
                assert all(p != c for p, c in zip(items, clean)), (pert, task)


@needs_wordnet
def test_generated_perturbations_keep_every_label_word(default_set):
    for pert in GENERATED:
        for task in ALL_TASKS:
            words = EXPECTED_WORDS[task]
            for clean, pert_text in zip(default_set.instructions_for(task), default_set.instructions_for(task, pert)):
                assert count_words(pert_text, words) == count_words(clean, words), (pert, task, pert_text)


@needs_wordnet
def test_seed_fixes_the_default_set_and_tasks_do_not_interact(default_set):
    assert default_instruction_set(seed=0, tasks=["rte", "mnli_matched"]).to_dict() == default_set.select(
        tasks=["rte", "mnli"]).to_dict()
    other = default_instruction_set(seed=1, tasks=["rte"])
    assert other.instructions_for("rte", "deepwordbug") != default_set.instructions_for("rte", "deepwordbug")
    assert other.instructions_for("rte", "semantic") == default_set.instructions_for("rte", "semantic")


def test_strength_keys_control_the_generated_edits():
    base = InstructionSet.from_dict(
        {"clean": {"sst2": ["Classify the emotional polarity of the movie review text below as positive or negative."]}}
    )
    for k in (1, 2, 4):
        cfg = {"perturbations": ["deepwordbug", "checklist"], "character": {"max_words": k},
               "sentence": {"suffix_count": k, "suffix_len": 6}}
        out = perturb_instruction_set(base, cfg, seed=0)
        clean = base.instructions_for("sst2")[0]
        dwb = out.instructions_for("sst2", "deepwordbug")[0]
        assert sum(a != b for a, b in zip(clean.split(), dwb.split())) == k
        suffixes = out.instructions_for("sst2", "checklist")[0][len(clean) + 1 :].split(" ")
        assert len(suffixes) == k and all(len(s) == 6 for s in suffixes)


def test_perturbing_needs_clean_instructions():
    with pytest.raises(InstructionError, match="no 'clean'"):
        perturb_instruction_set(InstructionSet.from_dict({"semantic": {"rte": ["entailment or not_entailment"]}}))
    with pytest.raises(InstructionError, match="no instructions for task 'cola'"):
        perturb_instruction_set(InstructionSet.from_dict(GOOD), {"perturbations": ["checklist"]}, tasks=["cola"])
