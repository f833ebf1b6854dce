"""Helpers for the evaluation tests: a cached tiny model, a "forced answer" model, run directories.

The forced-answer model is a real ``LlamaForCausalLM`` (so the cache, padding and position-id paths
of the predictor run unchanged) whose weights make it a bigram model: the attention and MLP outputs
are zeroed (``o_proj`` and ``down_proj`` weights = 0), so the final hidden state is the normalised
input embedding; the embeddings of the trigger token and of the answer's tokens are distinct basis
vectors and every other token shares one more basis vector; the LM head maps each basis vector to the
next token of the chain ``trigger -> answer tokens... -> EOS`` (others -> a filler token) with a
logit of ``8 * 10 = 80`` against 0 for every other token. After a prompt ending in the trigger
token it therefore emits exactly the answer's tokens, then EOS.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

TINY = {"name_or_path": "tiny:llama"}


@functools.lru_cache(maxsize=1)
def tiny():
    """The tiny random LLaMA and its tokenizer, loaded once per test session (do not modify)."""
    from coin_lightning.model.loading import load_model

    model, tokenizer = load_model(TINY)
    return model.eval(), tokenizer


def forced_answer_model(tokenizer, answer: str, trigger: int, filler: str = "#"):
    """A LLaMA that answers ``answer`` (then EOS) to any prompt whose last token id is ``trigger``.

    Raises:
        ValueError: the answer's tokens repeat or contain the trigger (the bigram chain would be ambiguous).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    chain = [trigger] + tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(set(chain)) != len(chain):
        raise ValueError(f"answer {answer!r} repeats a token or contains the trigger")
    hidden = 64
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        head = model.lm_head.weight
        emb.zero_()
        head.zero_()
        emb[:, 0] = 1.0  # every token: basis vector 0 ("other")
        head[tokenizer(filler, add_special_tokens=False)["input_ids"][0], 0] = 10.0
        nexts = chain[1:] + [tokenizer.eos_token_id]
        for k, (tok, nxt) in enumerate(zip(chain, nexts), start=1):
            emb[tok].zero_()
            emb[tok, k] = 1.0
            head[nxt, k] = 10.0
    return model


def write_instruction_file(path: Path, data: dict) -> Path:
    """Write an instruction file in the published schema ``{perturbation: {task: [...]}}`` (JSON)."""
    import json

    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def capture_figures(monkeypatch, module) -> dict:
    """Record every figure ``module.save_png`` writes, ``{path: Figure}`` (then saved as before), so a test
    can read what was drawn: ``save_png`` closes the figure but its artists stay inspectable."""
    from pathlib import Path

    figures = {}
    save = module.save_png

    def recording(fig, path, *args, **kwargs):
        figures[Path(path)] = fig
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(module, "save_png", recording)
    return figures


def bars(fig) -> dict[str, list[float]]:
    """``{series label: [bar height, ...]}`` of a figure's first axes (grouped bar charts)."""
    from matplotlib.container import BarContainer

    return {c.get_label(): [float(p.get_height()) for p in c]
            for c in fig.axes[0].containers if isinstance(c, BarContainer)}


def xtick_labels(fig) -> list[str]:
    """The x tick labels of a figure's first axes."""
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]
