"""Collation: the CONTRACTS.md batch, label masking, left padding and input-side truncation."""
from __future__ import annotations

import pytest
import torch

from coin_lightning.data.collate import Collator, Encoder, collate
from coin_lightning.data.records import DataError, Example, Group, Pair, build_prompt

TEMPLATE = "Passage: {sentence1}\nClaim: {sentence2}\nDoes the passage back the claim? Reply {choices}."
CHOICES = "'entailment' or 'not_entailment'"


def example(uid, s1, s2, target, template="own:rte/0", tpl=TEMPLATE):
    values = {"sentence1": s1, "sentence2": s2, "choices": CHOICES, "answer": target}
    return Example("rte", uid, template, tpl.format_map(values), target, template_input=tpl, values=values)


def pair_group(k):
    a = example(f"r{k}", f"The cat number {k} sat on the mat.", "A cat sat.", "entailment")
    b = example(f"r{k}", f"The cat number {k} sat on the mat.", "A cat sat.", "entailment", "own:rte/1", "Claim: {sentence2}\nText: {sentence1}\n{choices}?")
    c = example(f"n{k}", f"Dogs {k} bark loudly at night in the yard.", "Dogs are silent.", "not_entailment")
    d = example(f"n{k}", f"Dogs {k} bark loudly at night in the yard.", "Dogs are silent.", "not_entailment", "own:rte/1", "Claim: {sentence2}\nText: {sentence1}\n{choices}?")
    return Group(pairs=(Pair(a, b), Pair(c, d)))


def expected_ids(tok, ex, fmt="alpaca"):
    prompt = tok(build_prompt(ex.input, fmt, tok), add_special_tokens=fmt != "chat")["input_ids"]
    response = tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return list(prompt), list(response)


def test_batch_follows_the_contract(any_tokenizer):
    tok = any_tokenizer
    groups = [pair_group(1), pair_group(22)]
    enc = Encoder(tok, "alpaca", cutoff_len=256)
    batch = Collator(tok.pad_token_id)(enc.encode_groups(groups))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "response_start", "num_pairs"}
    P = batch["num_pairs"]
    assert P == 4 and batch["input_ids"].shape[0] == 2 * P
    for t in ("input_ids", "attention_mask", "labels", "response_start"):
        assert batch[t].dtype == torch.long
    rows = [p.original for g in groups for p in g.pairs] + [p.paraphrase for g in groups for p in g.pairs]
    T = batch["input_ids"].shape[1]
    for i, ex in enumerate(rows):
        prompt, response = expected_ids(tok, ex)
        L = len(prompt) + len(response)
        mask = batch["attention_mask"][i]
        assert mask[: T - L].sum() == 0 and mask[T - L:].all()  # left padding
        assert (batch["input_ids"][i, : T - L] == tok.pad_token_id).all()
        assert batch["input_ids"][i, T - L:].tolist() == prompt + response
        start = int(batch["response_start"][i])
        assert start == T - len(response)
        assert (batch["labels"][i, :start] == -100).all()
        assert batch["labels"][i, start:].tolist() == response  # target + EOS, unshifted
    # originals first, then their paraphrases in the same order
    assert [r.uid for r in rows[:P]] == [r.uid for r in rows[P:]]


@pytest.mark.parametrize("fmt", ["alpaca", "chat"])
def test_encoding_equals_the_tokenizer_call_on_real_rows(any_tokenizer, fmt):
    """The encoder's ids are ``tokenizer(prompt)`` + ``tokenizer(target)`` + EOS, as the tokenizer's
    own ``__call__`` gives them, on rendered rows of every embedded task (repeated texts included)."""
    from coin_lightning.data.grouping import build_groups
    from coin_lightning.data.selection import validate_records
    from coin_lightning.data.sources.embedded import load_embedded
    from coin_lightning.data.template_files import load_own_templates

    tok = any_tokenizer
    if fmt == "chat" and tok.chat_template is None:
        pytest.skip("tokenizer has no chat template")
    bank = load_own_templates()
    records = validate_records(load_embedded(n_per_task=6, seed=2), bank)
    examples = [e for g in build_groups(records, bank, seed=0) for e in g.examples]
    rows = Encoder(tok, fmt, cutoff_len=4096).encode(examples)
    assert len(examples) >= 100
    for ex, row in zip(examples, rows):
        prompt, response = expected_ids(tok, ex, fmt)
        assert row.ids.tolist() == prompt + response and row.n_prompt == len(prompt)


def test_hard_negative_rows_have_no_lm_labels(tiny_tokenizer):
    tok = tiny_tokenizer
    g = pair_group(3)
    item = Group(pairs=(g.pairs[0],), negatives=(g.pairs[1].original,))
    batch = collate(Encoder(tok).encode_groups([item, item]), tok.pad_token_id)
    assert batch["num_pairs"] == 2 and batch["input_ids"].shape[0] == 6
    assert (batch["labels"][4:] == -100).all() and (batch["labels"][:4] != -100).any(dim=1).all()
    assert batch["attention_mask"][4:].sum() > 0
    with pytest.raises(DataError, match="mixes groups"):
        collate(Encoder(tok).encode_groups([item, g]), tok.pad_token_id)


def test_truncation_shortens_the_longest_field_and_keeps_the_response(any_tokenizer):
    tok = any_tokenizer
    long = " ".join(f"word{i}" for i in range(400))
    ex = example("r1", long, "Short claim here.", "not_entailment")
    enc = Encoder(tok, "alpaca", cutoff_len=128)
    (row,) = enc.encode([ex])
    prompt, response = expected_ids(tok, ex)
    assert len(prompt) > 400 and len(row.ids) <= 128 and enc.truncated == 1 and enc.response_over_cutoff == 0
    assert row.ids[row.n_prompt:].tolist() == response
    text = tok.decode(row.ids[: row.n_prompt].tolist(), skip_special_tokens=True)
    # the instruction wording, the other field, the choices and the response marker survive whole
    assert "Claim: Short claim here.\nDoes the passage back the claim? Reply 'entailment' or 'not_entailment'." in text
    assert text.endswith("### Response:\n") and text.startswith("Passage: word0 word1")
    assert "word399" not in text and len(row.ids) >= 128 - 3  # the field is cut no more than needed


def test_prerendered_rows_are_cut_in_the_middle(any_tokenizer):
    tok = any_tokenizer
    body = " ".join(f"item{i}" for i in range(300))
    ex = Example("sst2", "coin_csv/0", "csv:original", f"Review:\n{body}\nIs it positive or negative?", "positive")
    enc = Encoder(tok, "alpaca", cutoff_len=80)
    (row,) = enc.encode([ex])
    _, response = expected_ids(tok, ex)
    assert len(row.ids) <= 80 and row.ids[row.n_prompt:].tolist() == response
    text = tok.decode(row.ids[: row.n_prompt].tolist(), skip_special_tokens=True)
    assert text.startswith("Review:") and text.endswith("Is it positive or negative?\n\n### Response:\n")


def test_response_longer_than_cutoff_is_kept_whole_and_counted(tiny_tokenizer):
    tok = tiny_tokenizer
    target = " ".join(["the lazy dog"] * 40)
    ex = example("r1", "a b c", "d e f", target)
    enc = Encoder(tok, "alpaca", cutoff_len=32, min_prompt_tokens=8)
    (row,) = enc.encode([ex])
    _, response = expected_ids(tok, ex)
    assert row.ids[row.n_prompt:].tolist() == response and row.n_prompt == 8
    assert enc.response_over_cutoff == 1 and len(row.ids) > 32


def test_chat_format_uses_the_chat_template(any_tokenizer):
    tok = any_tokenizer
    ex = pair_group(1).pairs[0].original
    (row,) = Encoder(tok, "chat").encode([ex])
    prompt, response = expected_ids(tok, ex, "chat")
    assert row.ids.tolist() == prompt + response and row.n_prompt == len(prompt)
    assert tok.decode(prompt) == build_prompt(ex.input, "chat", tok)  # no extra special tokens added


def test_missing_special_tokens_are_errors(tiny_tokenizer):
    class NoEos:
        eos_token_id = None

    with pytest.raises(DataError, match="no EOS"):
        Encoder(NoEos())
    with pytest.raises(DataError, match="no pad token"):
        Collator(None)
    with pytest.raises(DataError, match="too small"):
        Encoder(tiny_tokenizer, cutoff_len=4)


@pytest.mark.parametrize("append_eos", [True, False])
def test_append_eos_decides_the_pooled_token(tiny_tokenizer, append_eos):
    """With EOS the last non-padding token (the pooled one) is EOS; without it (the reference's
    choice) it is the answer's last token."""
    from coin_lightning.losses import last_token_index

    tok = tiny_tokenizer
    groups = [pair_group(1), pair_group(22)]
    enc = Encoder(tok, "alpaca", cutoff_len=256, append_eos=append_eos)
    encoded = enc.encode_groups(groups)
    batch = collate(encoded, tok.pad_token_id)
    rows = [r for g in encoded for r in g.originals] + [r for g in encoded for r in g.paraphrases]
    examples = [p.original for g in groups for p in g.pairs] + [p.paraphrase for g in groups for p in g.pairs]
    last = last_token_index(batch["attention_mask"])
    for i, (row, ex) in enumerate(zip(rows, examples)):
        prompt, response = expected_ids(tok, ex)
        want = response if append_eos else response[:-1]          # expected_ids ends the response with EOS
        assert list(row.ids) == prompt + want
        pooled = int(batch["input_ids"][i, last[i]])
        assert pooled == (tok.eos_token_id if append_eos else tok(ex.target, add_special_tokens=False)["input_ids"][-1])
        assert int(batch["labels"][i, last[i]]) == pooled           # the pooled token is a response token with a label
