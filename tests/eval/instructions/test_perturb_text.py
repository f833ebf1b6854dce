"""Word splitting and protection (coin_lightning.eval.instructions.perturb.text)."""
from __future__ import annotations

import random
import re

from coin_lightning.eval.instructions.perturb.text import (
    content_words,
    edit_words,
    editable_words,
    match_case,
    protected_spans,
    replace_tokens,
)

TEXT = "Say 'not_entailment' or Entailment; the entailment of one's claim is {field}, not \"yes\"."


def test_protected_spans_cover_label_words_quotes_and_placeholders():
    spans = [TEXT[s:e] for s, e in protected_spans(TEXT, ["entailment", "not_entailment"])]
    assert "'not_entailment'" in spans
    assert "Entailment" in spans and "entailment" in spans  # case-insensitive, whole word
    assert "{field}" in spans and '"yes"' in spans
    # the apostrophe of "one's" opens no quoted span
    assert not any(s.startswith("'s") for s in spans)


def test_label_word_inside_a_longer_token_is_not_matched():
    text = "Answer not_entailment here."
    assert protected_spans(text, ["entailment"]) == []
    assert [text[s:e] for s, e in protected_spans(text, ["not_entailment"])] == ["not_entailment"]


def test_editable_words_exclude_protected_tokens():
    words = [t.text for t in editable_words(TEXT, ["entailment", "not_entailment"])]
    assert "Entailment" not in words and "entailment" not in words
    assert "not_entailment" not in words and "field" not in words and "yes" not in words
    assert {"Say", "the", "claim", "one", "s"} <= set(words)


def test_replace_tokens_changes_only_the_given_tokens():
    tokens = editable_words("Alpha, beta gamma!", [])
    out = replace_tokens("Alpha, beta gamma!", {tokens[0]: "A", tokens[2]: "GAMMA"})
    assert out == "A, beta GAMMA!"


def test_content_words_drop_stopwords_and_short_words():
    words = [t.text for t in content_words(editable_words("Decide if the premise is true or not at all", []))]
    assert words == ["Decide", "premise", "true"]


def test_match_case():
    assert match_case("Word", "other") == "Other"
    assert match_case("WORD", "other") == "OTHER"
    assert match_case("word", "Other") == "Other"


def test_edit_words_edits_exactly_max_words_distinct_content_words():
    text = "Classify the sentiment of this movie review sentence as positive or negative."
    n_content = len(content_words(editable_words(text, ["positive", "negative"])))
    for k in range(0, n_content + 2):
        out = edit_words(text, random.Random(k), ["positive", "negative"], k, lambda w, r: w.upper())
        before, after = re.findall(r"\w+", text), re.findall(r"\w+", out)
        changed = [a for a, b in zip(before, after) if a != b]
        assert len(changed) == min(k, n_content)
        assert all(w.lower() not in ("positive", "negative", "the", "of", "as", "or") for w in changed)
