"""Prediction: the prefix cache changes nothing, greedy decoding and label scores match independent
computations, and ``rank`` agrees with ``generate`` on a model whose answer is forced."""
from __future__ import annotations

import pytest
import torch

from coin_lightning.data.sources.glue import LABEL_WORDS
from coin_lightning.eval.engine.decode import (
    encode_prefix,
    pad_rows,
    prefill,
    shared_prefix_length,
)
from coin_lightning.eval.engine.generation import answer_decided, parse_label, stacked_cache
from coin_lightning.eval.engine.predict import Predictor
from tests.eval.eval_helpers import forced_answer_model, tiny

INSTRUCTION = "Say whether the second sentence follows from the first: answer entailment or not_entailment."
CONTENTS = [
    "Sentence 1: A man plays a guitar on the stage. Sentence 2: A person makes music.",
    "Sentence 1: Cats sleep. Sentence 2: Dogs bark.",
    "Sentence 1: The committee approved the new budget after a long debate that lasted into the night. "
    "Sentence 2: The budget was rejected.",
    "Sentence 1: It rained. Sentence 2: The ground is wet.",
    "Sentence 1: She bought three apples and two pears at the market. Sentence 2: She bought fruit.",
    "Sentence 1: Paris is in France. Sentence 2: Paris is in Europe.",
    "Sentence 1: x. Sentence 2: y.",
]


def test_shared_prefix_length_and_pad_rows():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2]]) == 1  # every row keeps a token
    assert shared_prefix_length([[7, 8, 9]]) == 2
    with pytest.raises(ValueError, match="shared_prefix_length needs non-empty token sequences"):
        shared_prefix_length([[1], []])
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cached_prefill_matches_unpadded_single_prompts():
    model, tok = tiny()
    p = Predictor(model, tok)
    seqs = p.encode([p.prompt(INSTRUCTION, c) for c in CONTENTS])
    n = shared_prefix_length(seqs)
    assert n > 10  # the instruction is shared
    cached = prefill(model, [s[n:] for s in seqs], p.pad_id, encode_prefix(model, seqs[0][:n]))
    plain = prefill(model, seqs, p.pad_id, None)
    with torch.inference_mode():
        single = torch.stack([model(torch.tensor([s])).logits[0, -1] for s in seqs])
    torch.testing.assert_close(cached.last_logits, single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain.last_logits, single, atol=1e-4, rtol=1e-4)
    assert cached.next_position.tolist() == [len(s) for s in seqs] == plain.next_position.tolist()


@pytest.mark.parametrize("method", ["generate", "rank"])
def test_prefix_cache_gives_identical_predictions(method):
    model, tok = tiny()
    words = LABEL_WORDS["rte"]
    kw = dict(method=method, batch_size=3, max_new_tokens=5)
    with_cache = Predictor(model, tok, prefix_cache=True, **kw).predict(INSTRUCTION, CONTENTS, words)
    without = Predictor(model, tok, prefix_cache=False, **kw).predict(INSTRUCTION, CONTENTS, words)
    assert [x.answer for x in with_cache] == [x.answer for x in without]
    assert [x.pred for x in with_cache] == [x.pred for x in without]
    if method == "rank":
        torch.testing.assert_close(torch.tensor([x.scores for x in with_cache]),
                                   torch.tensor([x.scores for x in without]), atol=1e-4, rtol=1e-4)


def _greedy(model, ids: list[int], steps: int, stop_ids) -> list[int]:
    """Greedy decoding written out: a full forward pass over the prompt and the tokens so far, argmax."""
    new: list[int] = []
    for _ in range(steps):
        with torch.inference_mode():
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
        if token in stop_ids:
            break
        new.append(token)
    return new


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_generation_matches_unbatched_generate_and_a_greedy_loop(prefix_cache):
    # prefill batches of 2 rows (2, 2, 1: different widths), generated together as one stacked batch
    model, tok = tiny()
    p = Predictor(model, tok, max_new_tokens=6, batch_size=2, prefix_cache=prefix_cache, decode_batch_size=64)
    words = LABEL_WORDS["rte"]
    predictions = p.predict(INSTRUCTION, CONTENTS[:5], words)
    for content, got in zip(CONTENTS[:5], predictions):
        prompt = p.encode([p.prompt(INSTRUCTION, content)])[0]
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                             eos_token_id=p.stop_ids, pad_token_id=p.pad_id, use_cache=False)
        new = out[0, ids.shape[1]:].tolist()
        if any(t in p.stop_ids for t in new):
            new = new[: next(i for i, t in enumerate(new) if t in p.stop_ids)]
        assert new == _greedy(model, prompt, 6, p.stop_ids)
        full = tok.decode(new, skip_special_tokens=True)
        # the answer is the full greedy answer, or its first tokens once they decide the label
        assert full.startswith(got.answer) and got.pred == parse_label(full, words)
        assert got.answer == full or answer_decided(got.answer, words)


def test_generation_stops_at_a_stop_token():
    # the stop ids are the tokens the model generates first for some rows: those answers are cut there
    model, tok = tiny()
    p = Predictor(model, tok, max_new_tokens=4, batch_size=3)
    prompts = p.encode([p.prompt(INSTRUCTION, c) for c in CONTENTS])
    stop = sorted({_greedy(model, prompts[i], 1, [])[0] for i in (0, 1)})
    p.stop_ids = stop
    cut = p.predict(INSTRUCTION, CONTENTS, LABEL_WORDS["rte"])
    for prompt, answer in zip(prompts, cut):
        assert tok.decode(_greedy(model, prompt, 4, stop), skip_special_tokens=True).startswith(answer.answer)
    assert cut[0].answer == "" and cut[1].answer == ""


def test_generated_caches_are_stacked_left_padded():
    model, tok = tiny()
    p = Predictor(model, tok)
    seqs = p.encode([p.prompt(INSTRUCTION, c) for c in CONTENTS[:3]])
    a = prefill(model, [seqs[2]], p.pad_id)  # the longest prompt alone
    b = prefill(model, seqs[:2], p.pad_id)
    width = max(a.attention_mask.shape[1], b.attention_mask.shape[1])
    shift = width - b.attention_mask.shape[1]
    cache, mask = stacked_cache([b, a])
    assert mask.shape == (3, width) and mask.sum(1).tolist() == [len(s) for s in seqs]
    assert cache.get_seq_length() == width
    keys = cache.layers[0].keys
    assert keys.shape[0] == 3
    torch.testing.assert_close(keys[:2, :, shift:], b.cache.layers[0].keys, rtol=0, atol=0)
    torch.testing.assert_close(keys[2:], a.cache.layers[0].keys, rtol=0, atol=0)
    assert float(keys[:2, :, :shift].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="stacked_cache needs at least one prefilled batch"):
        stacked_cache([])


def test_merged_decoding_gives_the_per_batch_answers():
    model, tok = tiny()
    words = LABEL_WORDS["rte"]
    kw = dict(method="generate", batch_size=2, max_new_tokens=5)
    alone = Predictor(model, tok, decode_batch_size=None, **kw).predict(INSTRUCTION, CONTENTS, words)
    for size in (4, 64):  # merge 2 batches at a time, or all 4
        merged = Predictor(model, tok, decode_batch_size=size, **kw).predict(INSTRUCTION, CONTENTS, words)
        assert [x.answer for x in merged] == [x.answer for x in alone]
        assert [x.pred for x in merged] == [x.pred for x in alone]


def test_rank_scores_are_label_word_log_likelihoods():
    model, tok = tiny()
    words = LABEL_WORDS["mnli"]
    p = Predictor(model, tok, method="rank", batch_size=2)
    preds = p.predict(INSTRUCTION, CONTENTS[:3], words)
    for content, pred in zip(CONTENTS[:3], preds):
        prompt = p.encode([p.prompt(INSTRUCTION, content)])[0]
        expected = []
        for w in words:
            wid = tok(w, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logp = torch.log_softmax(model(torch.tensor([prompt + wid])).logits[0].float(), -1)
            expected.append(sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(wid)))
        assert pred.scores == pytest.approx(expected, abs=1e-3)
        assert pred.pred == max(range(len(words)), key=lambda i: expected[i])


@pytest.mark.parametrize("task, forced", [("rte", "not_entailment"), ("rte", "entailment"), ("mnli", "neutral"),
                                          ("mnli", "contradiction"), ("cola", "unacceptable"), ("wnli", "entailment")])
def test_rank_and_generate_agree_on_a_forced_answer(task, forced):
    _, tok = tiny()
    words = LABEL_WORDS[task]
    probe = Predictor(tiny()[0], tok)
    trigger = probe.encode([probe.prompt(INSTRUCTION, CONTENTS[0])])[0][-1]
    model = forced_answer_model(tok, forced, trigger)
    gen = Predictor(model, tok, method="generate", batch_size=4).predict(INSTRUCTION, CONTENTS, words)
    rank = Predictor(model, tok, method="rank", batch_size=4).predict(INSTRUCTION, CONTENTS, words)
    assert [g.answer for g in gen] == [forced] * len(CONTENTS)
    assert [g.pred for g in gen] == [words.index(forced)] * len(CONTENTS)
    assert [r.pred for r in rank] == [g.pred for g in gen]


def _packed_and_padded():
    """The same tiny LoRA model attending with packed prompts (the CPU kernels) and padded."""
    from tests.conftest import TINY_CFG
    from tests.helpers import tiny_lora_models

    (packed, tok), (padded, _) = tiny_lora_models(
        [dict(TINY_CFG, packed_sequences=True), dict(TINY_CFG, packed_sequences=False)])
    return packed.eval(), padded.eval(), tok


@pytest.mark.parametrize("with_prefix", [True, False])
def test_packed_prefill_gives_the_padded_state(with_prefix):
    from coin_lightning.eval.engine.decode import packs_prompts

    packed, padded, tok = _packed_and_padded()
    assert packs_prompts(packed) and not packs_prompts(padded)
    with pytest.raises(ValueError, match="packed_sequences"):
        prefill(padded, [[5, 6]], 0, packed=True)
    p = Predictor(packed, tok)
    seqs = p.encode([p.prompt(INSTRUCTION, c) for c in CONTENTS])
    n = shared_prefix_length(seqs) if with_prefix else 0
    suffixes = [s[n:] for s in seqs]
    states = []
    for model in (packed, padded):
        prefix = encode_prefix(model, seqs[0][:n])
        states.append(prefill(model, suffixes, p.pad_id, prefix, hidden=True))
    a, b = states
    torch.testing.assert_close(a.last_logits, b.last_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.last_hidden, b.last_hidden, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.attention_mask, b.attention_mask) and torch.equal(a.next_position, b.next_position)
    real = a.attention_mask.bool()[:, None, :, None]
    for la, lb in zip(a.cache.layers, b.cache.layers):
        assert la.keys.shape == lb.keys.shape
        torch.testing.assert_close(la.keys * real, lb.keys * real, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(la.values * real, lb.values * real, rtol=1e-4, atol=1e-5)
        assert float(la.keys[~real.expand_as(la.keys)].abs().sum()) == 0.0  # padding slots are zeros


@pytest.mark.parametrize("method", ["generate", "rank"])
def test_packed_prompts_predict_like_padded_prompts(method):
    packed, padded, tok = _packed_and_padded()
    words = LABEL_WORDS["rte"]
    kw = dict(method=method, batch_size=3, max_new_tokens=5)
    runs = [Predictor(m, tok, prefix_cache=c, **kw).predict(INSTRUCTION, CONTENTS, words)
            for m in (packed, padded) for c in (True, False)]
    for run in runs[1:]:
        assert [x.answer for x in run] == [x.answer for x in runs[0]]
        assert [x.pred for x in run] == [x.pred for x in runs[0]]


def test_load_for_inference_switches_on_the_training_speedups():
    from coin_lightning.model import packing
    from coin_lightning.model.lora import load_for_inference
    from tests.conftest import TINY_CFG

    model, _ = load_for_inference(dict(TINY_CFG))
    assert packing.is_enabled(model)
    for off in ({"packed_sequences": False}, {"cpu_speedups": False}):
        plain, _ = load_for_inference(dict(TINY_CFG, **off))
        assert not packing.is_enabled(plain) and packing.packing_mode(plain) is None


def test_decided_answers_parse_as_their_full_generation():
    """Stopping at the first decided prefix never changes the parsed label: random 7-token answers
    drawn from label-word pieces, punctuation, spaces and other tokens, each parsed whole and cut."""
    _, tok = tiny()
    pieces = {t for words in LABEL_WORDS.values() for w in words for t in tok(w, add_special_tokens=False)["input_ids"]}
    pieces |= {t for s in [" ", ".", "_", "\n", "'", " yes", " no", "Answer", ":", "<", "é"]
               for t in tok(s, add_special_tokens=False)["input_ids"]}
    pool = sorted(pieces) + list(range(100, 160))
    g = torch.Generator().manual_seed(0)
    stopped = 0
    for words in LABEL_WORDS.values():
        for _ in range(300):
            row = [pool[i] for i in torch.randint(len(pool), (7,), generator=g).tolist()]
            k = next((j + 1 for j in range(7) if answer_decided(tok.decode(row[: j + 1], skip_special_tokens=True), words)), 7)
            stopped += k < 7
            assert parse_label(tok.decode(row[:k], skip_special_tokens=True), words) == \
                parse_label(tok.decode(row, skip_special_tokens=True), words), (words, row, k)
    assert stopped > 1000  # most answers are decided early


def test_generation_stops_rows_once_their_answer_is_decided():
    """With no stop token, a forced answer ("positive", then EOS and filler for ever) stops right after
    its label word: decoding 7 new tokens costs the forward passes of decoding just the word's tokens."""
    _, tok = tiny()
    words = LABEL_WORDS["sst2"]
    probe = Predictor(tiny()[0], tok)
    trigger = probe.encode([probe.prompt(INSTRUCTION, CONTENTS[0])])[0][-1]
    model = forced_answer_model(tok, "positive", trigger)
    n_word = len(tok("positive", add_special_tokens=False)["input_ids"])

    def run(max_new_tokens):
        calls = []
        handle = model.register_forward_hook(lambda *args: calls.append(1))
        p = Predictor(model, tok, max_new_tokens=max_new_tokens, batch_size=8)
        p.stop_ids = []  # EOS does not stop: only the decided answer can
        got = p.predict(INSTRUCTION, CONTENTS, words)
        handle.remove()
        return got, len(calls)

    (got, calls), (_, calls_word) = run(7), run(n_word)
    assert [g.answer for g in got] == ["positive"] * len(CONTENTS)
    assert [g.pred for g in got] == [words.index("positive")] * len(CONTENTS)
    assert calls == calls_word
