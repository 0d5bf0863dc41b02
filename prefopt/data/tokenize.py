"""Tokenization through the tokenizer's chat template, with completion-only loss masks.

The prompt is rendered with ``add_generation_prompt=True`` and tokenized on its own; the
completion is tokenized on its own and followed by EOS. Tokenizing the two separately keeps
the boundary exact (no merge across it), so the loss mask is exactly the completion tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefopt.data.records import Messages

log = logging.getLogger(__name__)

# Used only for tokenizers that ship without a chat template (e.g. a bare GPT-2).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def prepare_tokenizer(tokenizer):
    """Give the tokenizer a chat template and a pad token that is not EOS.

    A pad token equal to EOS teaches the model never to stop once padding is masked out
    (Huang et al. 2024, "N+ implementation details"), so a missing pad token gets its own.
    Returns the number of tokens added (the caller resizes embeddings when it is > 0).
    """
    added = 0
    if tokenizer.chat_template is None:
        log.warning("tokenizer has no chat template; using prefopt's default template")
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token first")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        added = tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return added


def render_prompt(tokenizer, prompt: Messages) -> str:
    """The prompt as the chat template renders it, ending where the assistant starts."""
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, prompt: Messages) -> list[int]:
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """Completion tokens followed by EOS."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


@dataclass
class Encoded:
    """One tokenized (prompt, completion): ``completion_mask[t] = 1`` on completion tokens."""

    input_ids: list[int]
    completion_mask: list[int]

    @property
    def n_completion(self) -> int:
        return sum(self.completion_mask)


def encode_example(tokenizer, prompt: Messages, completion: str, max_length: int,
                   prompt_ids: list[int] | None = None) -> Encoded | None:
    """Tokenize a (prompt, completion) pair; None when it does not fit in ``max_length``.

    Callers count the Nones as skipped-for-length: nothing is dropped silently.
    """
    p = prompt_ids if prompt_ids is not None else encode_prompt(tokenizer, prompt)
    c = encode_completion(tokenizer, completion)
    if len(p) + len(c) > max_length:
        return None
    return Encoded(input_ids=p + c, completion_mask=[0] * len(p) + [1] * len(c))
