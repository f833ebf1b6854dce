"""Own training templates vs evaluation instructions (and FLAN): wording stays disjoint.

Texts are normalised (lower case, placeholders removed, words only) and compared by the Jaccard
similarity of their word 3-gram sets, and by a character-level near-duplicate ratio.
"""
from __future__ import annotations

import json
import re
from difflib import SequenceMatcher
from pathlib import Path

import pytest
import yaml

import coin_lightning
from coin_lightning.data.template_files import load_flan_templates, load_own_templates

INSTRUCTION_DIR = Path(coin_lightning.__file__).parent / "resources" / "instructions"
MAX_JACCARD = 0.25
"""Largest allowed Jaccard similarity of word 3-grams between a template and an instruction."""
MAX_RATIO = 0.75
"""Largest allowed ``difflib`` ratio between normalised texts (near-duplicates)."""


def normalise(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", re.sub(r"\{[^{}]*\}", " ", text.lower()))


def trigrams(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def test_similarity_measures_detect_paraphrase_and_copy():
    a = "Does the first text prove the second one? Give {choices}."
    assert jaccard(trigrams(normalise(a)), trigrams(normalise(a + " Thanks."))) > MAX_JACCARD
    assert SequenceMatcher(None, " ".join(normalise(a)), " ".join(normalise(a.replace("prove", "show")))).ratio() > MAX_RATIO
    assert jaccard(trigrams(normalise(a)), trigrams(normalise("Read the passage and answer with a label."))) == 0
    (j, *_), (r, *_) = _worst([("x", a)], [("y", "Read the passage."), ("z", a.replace("prove", "show"))])
    assert r > MAX_RATIO and j > MAX_JACCARD


def _instruction_texts() -> list[tuple[str, str]]:
    files = sorted(p for p in INSTRUCTION_DIR.glob("*") if p.suffix in (".json", ".yaml", ".yml"))
    if not files:
        pytest.skip(f"no evaluation instruction file in {INSTRUCTION_DIR} yet")
    out = []
    for path in files:
        raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        for level, tasks in (raw or {}).items():
            for task, items in (tasks or {}).items():
                out += [(f"{path.name}:{level}:{task}", str(s)) for s in items]
    assert out, f"{files} hold no instructions"
    return out


def _own() -> list[tuple[str, str]]:
    bank = load_own_templates()
    return [(t.name, t.input) for tpls in bank.templates.values() for t in tpls]


def _worst(pairs_a, pairs_b):
    """(max Jaccard, names) and (max near-duplicate ratio, names) over all pairs of texts."""
    worst_j = (0.0, "", "")
    worst_r = (0.0, "", "")
    norm_a = [(n, trigrams(normalise(t)), " ".join(normalise(t)), set(normalise(t))) for n, t in pairs_a]
    for nb, tb in pairs_b:
        gb, sb, wb = trigrams(normalise(tb)), " ".join(normalise(tb)), set(normalise(tb))
        sm = SequenceMatcher(None)
        sm.set_seq2(sb)  # the expensive index is built once per text of pairs_b
        for na, ga, sa, wa in norm_a:
            j = jaccard(ga, gb)
            if j > worst_j[0]:
                worst_j = (j, na, nb)
            if len(wa & wb) < 0.5 * min(len(wa), len(wb)):
                continue  # near-duplicates share most of their words
            sm.set_seq1(sa)
            # ratio() <= quick_ratio() <= real_quick_ratio(): skip pairs that cannot come near the limit
            floor = max(worst_r[0], MAX_RATIO - 0.1)
            if sm.real_quick_ratio() > floor and sm.quick_ratio() > floor:
                r = sm.ratio()
                if r > worst_r[0]:
                    worst_r = (r, na, nb)
    return worst_j, worst_r


def test_own_templates_are_disjoint_from_evaluation_instructions():
    (j, ja, jb), (r, ra, rb) = _worst(_own(), _instruction_texts())
    assert j <= MAX_JACCARD, f"{ja} and {jb} share too many word 3-grams (Jaccard {j:.2f})"
    assert r <= MAX_RATIO, f"{ra} and {rb} are near-duplicates (ratio {r:.2f})"


def test_own_templates_are_not_copied_from_flan(flan_json):
    flan = load_flan_templates(flan_json)
    theirs = [(t.name, t.input) for tpls in flan.templates.values() for t in tpls]
    (j, ja, jb), (r, ra, rb) = _worst(_own(), theirs)
    assert j <= MAX_JACCARD, f"{ja} and {jb} share too many word 3-grams (Jaccard {j:.2f})"
    assert r <= MAX_RATIO, f"{ra} and {rb} are near-duplicates (ratio {r:.2f})"
