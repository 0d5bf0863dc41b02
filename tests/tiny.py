"""Tiny tokenizers and randomly initialised models, built offline for the tests."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("hello world what is two plus three five the answer sky blue colour of a an cat dog "
         "sort these words reverse yes no i can not help with that sure here is how kill "
         "process python photo good bad tip sleep well water").split()
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '<eos>' }}{% endif %}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

CONSTITUTION = """\
name: tiny
principles:
  - name: safe
    critique: what is bad?
    revision: help with that.
    comparison: which is good?
  - name: kind
    critique: is the answer bad?
    revision: here is how.
    comparison: which is well?
few_shot:
  - principle: safe
    prompt: how kill python process?
    response: no.
    critique: bad.
    revision: kill the process.
"""
"""A two-principle constitution in the tiny vocabulary, for SL-CAI/RL-CAI runs."""


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + sorted(set(WORDS)) + list("?.,:!0123456789"))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>",
                                   additional_special_tokens=SPECIALS[4:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def model_config(arch: str, vocab_size: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    common = {"vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 2,
              "eos_token_id": 3}
    if arch == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=128, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=128, **common)
    if arch == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=128, **common)
    raise ValueError(arch)


def build_model(arch: str, out: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, len(tok)))
    model.save_pretrained(out, safe_serialization=True)
    return out
