"""Prompt formats: the one function that turns an instruction (with its content) into model input.

Training and evaluation both call :func:`build_prompt`, so a model is always evaluated with the exact
wrapping it was trained with.

- ``alpaca``: ``"{input}\\n\\n### Response:\\n"`` followed by the target, the prompt of the CoIN
  reference code (luka-group/CoIN, itself from alpaca-lora without the preamble).
- ``chat``: the tokenizer's chat template with one user turn and the generation prompt.
"""
from __future__ import annotations

PROMPT_FORMATS = ("alpaca", "chat")
ALPACA_RESPONSE_MARKER = "\n\n### Response:\n"


def build_prompt(text: str, fmt: str = "alpaca", tokenizer=None) -> str:
    """Wrap a rendered instruction input (instruction + content) into the model's prompt.

    Args:
        text: the rendered input, e.g. a template filled with a record's fields.
        fmt: ``"alpaca"`` or ``"chat"``.
        tokenizer: needed for ``chat`` (its ``apply_chat_template``).

    Returns:
        The prompt string; the response (target) is appended to it verbatim.

    Raises:
        ValueError: unknown format, or ``chat`` without a tokenizer that has a chat template.
    """
    if fmt == "alpaca":
        return f"{text}{ALPACA_RESPONSE_MARKER}"
    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt format 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"unknown prompt format {fmt!r}; choose one of {', '.join(PROMPT_FORMATS)}")
