"""Offline benchmark assets: one tokenizer, one random tiny Llama, generated data.

Everything both sides of a comparison read is written here once, by the main environment:

  tokenizer + policy/      a word-level tokenizer (``VOCAB_WORDS`` pseudo-words + specials)
                           and a randomly initialised LlamaForCausalLM (safetensors)
  reward_hf/               LlamaForSequenceClassification (num_labels=1): the policy's
                           backbone with a random score head (TRL's reward and value model)
  reward_prefopt/          the same weights as a prefopt ScalarModel directory
                           (backbone + scalar_head.safetensors + scalar_config.json)
  data/*.prefopt.jsonl     prompts as plain strings (prefopt renders the chat template)
  data/*.trl.jsonl         the same rows with the prompt pre-rendered by that chat template,
                           so TRL tokenizes exactly the same token ids (no template drift)

The chat template renders a user prompt as ``<|user|> TEXT <|assistant|>``; completions are
the reply followed by EOS on both sides. Run: ``python benchmarks/assets.py OUT_DIR``.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ '<eos>' }}{% endif %}{{ ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@dataclass
class ModelShape:
    """The tiny Llama both sides train (about 4.3 M parameters with the default vocab)."""

    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    vocab_words: int = 1529
    """Pseudo-words in the vocabulary; + 7 specials = 1536 token ids."""


@dataclass
class DataShape:
    """Sizes of the generated data sets (word counts are token counts: word-level vocab)."""

    n_sft: int = 160
    n_pairs: int = 96
    n_prompts: int = 48
    prompt_words: tuple[int, int] = (12, 28)
    completion_words: tuple[int, int] = (32, 96)
    seed: int = 0


def pseudo_words(n: int, seed: int = 0) -> list[str]:
    """n distinct lowercase pseudo-words built from syllables (deterministic)."""
    rng = random.Random(seed)
    onsets, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [o + v for o in onsets for v in vowels]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def build_tokenizer(out: Path, n_words: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + pseudo_words(n_words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>",
                                   additional_special_tokens=SPECIALS[4:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def llama_config(shape: ModelShape, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                       num_hidden_layers=shape.num_hidden_layers,
                       num_attention_heads=shape.num_attention_heads,
                       num_key_value_heads=shape.num_key_value_heads,
                       max_position_embeddings=shape.max_position_embeddings,
                       vocab_size=vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                       tie_word_embeddings=False)


def build_models(out: Path, shape: ModelShape, seed: int = 0) -> dict:
    """policy/, reward_hf/ and reward_prefopt/ under ``out``; returns parameter counts."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    tok = build_tokenizer(out / "policy", shape.vocab_words)
    cfg = llama_config(shape, len(tok))
    torch.manual_seed(seed)
    policy = LlamaForCausalLM(cfg)
    policy.save_pretrained(out / "policy", safe_serialization=True)

    # Reward model = the policy's backbone + a random linear score head (no bias).
    rm = LlamaForSequenceClassification(llama_config(shape, len(tok)))
    rm.config.num_labels = 1
    rm.score = torch.nn.Linear(shape.hidden_size, 1, bias=False)
    rm.model.load_state_dict(policy.model.state_dict())
    torch.nn.init.normal_(rm.score.weight, std=1 / (shape.hidden_size + 1) ** 0.5)
    rm.save_pretrained(out / "reward_hf", safe_serialization=True)
    tok.save_pretrained(out / "reward_hf")

    pre = out / "reward_prefopt"
    policy.save_pretrained(pre, safe_serialization=True)
    tok.save_pretrained(pre)
    save_file({"weight": rm.score.weight.detach().clone().contiguous(),
               "bias": torch.zeros(1)}, str(pre / "scalar_head.safetensors"))
    (pre / "scalar_config.json").write_text(json.dumps(
        {"mode": "full", "base": "", "mean": 0.0, "std": 1.0}, indent=2))

    n_total = sum(p.numel() for p in policy.parameters())
    n_embed = policy.model.embed_tokens.weight.numel()
    n_head = policy.lm_head.weight.numel()
    return {"params_total": n_total, "params_embedding": n_embed, "params_lm_head": n_head,
            "params_matmul": n_total - n_embed, "params_backbone_matmul": n_total - n_embed - n_head,
            "vocab_size": len(tok)}


def _text(rng: random.Random, words: list[str], lo_hi: tuple[int, int]) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(*lo_hi)))


def render(prompt: str) -> str:
    """The prompt as the chat template renders it (``add_generation_prompt=True``)."""
    return f"<|user|> {prompt} <|assistant|>"


def build_data(out: Path, words: list[str], shape: DataShape) -> dict:
    """sft / pairs / prompts, each as .prefopt.jsonl and .trl.jsonl."""
    rng = random.Random(shape.seed)
    out.mkdir(parents=True, exist_ok=True)

    def write(name, rows_prefopt, rows_trl):
        for suffix, rows in (("prefopt", rows_prefopt), ("trl", rows_trl)):
            with (out / f"{name}.{suffix}.jsonl").open("w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)

    sft = [(_text(rng, words, shape.prompt_words), _text(rng, words, shape.completion_words))
           for _ in range(shape.n_sft)]
    write("sft", [{"prompt": p, "completion": c} for p, c in sft],
          [{"prompt": render(p), "completion": " " + c} for p, c in sft])

    pairs = [(_text(rng, words, shape.prompt_words), _text(rng, words, shape.completion_words),
              _text(rng, words, shape.completion_words)) for _ in range(shape.n_pairs)]
    write("pairs", [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs],
          [{"prompt": render(p), "chosen": " " + c, "rejected": " " + r} for p, c, r in pairs])

    prompts = [_text(rng, words, shape.prompt_words) for _ in range(shape.n_prompts)]
    write("prompts", [{"prompt": p} for p in prompts], [{"prompt": render(p)} for p in prompts])
    return {"n_sft": len(sft), "n_pairs": len(pairs), "n_prompts": len(prompts)}


def build_all(out: Path, model: ModelShape | None = None, data: DataShape | None = None) -> dict:
    model, data = model or ModelShape(), data or DataShape()
    out.mkdir(parents=True, exist_ok=True)
    info = build_models(out, model)
    info.update(build_data(out / "data", pseudo_words(model.vocab_words), data))
    info.update({"model_shape": asdict(model), "data_shape": asdict(data)})
    (out / "assets.json").write_text(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    print(json.dumps(build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bench-assets")),
                     indent=2))
