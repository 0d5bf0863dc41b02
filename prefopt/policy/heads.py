"""Scalar models: a causal-LM backbone with a linear head, for rewards and values.

The head is our own ``nn.Linear(hidden, 1)`` saved in ``scalar_head.safetensors`` next to
the backbone (full weights or a PEFT adapter), so reloading never re-initialises it (a
known failure of heads kept inside ``modules_to_save``). ``scalar_config.json`` stores the
reward normalisation (mean, std) measured on SFT-policy responses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefopt.losses import last_token_index
from prefopt.policy.load import ModelConfig, add_adapter, load_causal_lm, load_tokenizer
from prefopt.policy.logprobs import position_ids_from_mask, unwrap_causal_lm

HEAD_FILE = "scalar_head.safetensors"
CONFIG_FILE = "scalar_config.json"


@dataclass
class ScalarConfig:
    mode: str = "full"
    base: str = ""
    """The backbone directory an adapter applies to (lora/qlora)."""
    mean: float = 0.0
    std: float = 1.0
    """Normalisation: score = (raw − mean) / std, so SFT responses score mean 0, std 1."""


class ScalarModel(torch.nn.Module):
    """r(x, y): backbone hidden state at the last real token, through a linear head."""

    def __init__(self, backbone, hidden_size: int, cfg: ScalarConfig):
        super().__init__()
        self.backbone, self.cfg = backbone, cfg
        self.head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.head.weight, std=1 / (hidden_size + 1) ** 0.5)
        torch.nn.init.zeros_(self.head.bias)

    def hidden_states(self, input_ids, attention_mask) -> torch.Tensor:
        """The body's last hidden state (B, T, H). Under FSDP with tied embeddings the body
        is no unit of its own (prefopt.engine.sharding), so the whole causal LM runs, with
        the LM head on one position only; its last hidden state is the body's output."""
        from prefopt.engine.sharding import direct_calls_ok  # here: the engine loads slowly

        causal = unwrap_causal_lm(self.backbone)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids_from_mask(attention_mask)}
        if not direct_calls_ok(causal):
            return causal(**kwargs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        return getattr(causal, causal.base_model_prefix)(**kwargs).last_hidden_state

    def values(self, input_ids, attention_mask) -> torch.Tensor:
        """Per-token scalars (B, T): the value head of PPO's critic."""
        h = self.hidden_states(input_ids, attention_mask)
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)

    def forward(self, input_ids, attention_mask) -> torch.Tensor:
        """Raw score at the last real token of each (right-padded) row. (B, T) -> (B,)."""
        v = self.values(input_ids, attention_mask)
        last = last_token_index(attention_mask)
        return v.gather(1, last.unsqueeze(1)).squeeze(1)

    def score(self, input_ids, attention_mask) -> torch.Tensor:
        """Normalised score (raw − mean) / std."""
        return (self(input_ids, attention_mask) - self.cfg.mean) / self.cfg.std

    def save(self, out_dir: str | Path, tokenizer=None) -> Path:
        from prefopt.engine.sharding import gathered_state_dict

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = gathered_state_dict(self)  # a sharded model, saved inside sharding.gathered
        if state is None:
            backbone, head = None, self.head.state_dict()
        else:
            backbone = {k[len("backbone."):]: v for k, v in state.items()
                        if k.startswith("backbone.")}
            head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        self.backbone.save_pretrained(out, safe_serialization=True, state_dict=backbone)
        save_file({k: v.detach().float().contiguous() for k, v in head.items()},
                  str(out / HEAD_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(asdict(self.cfg), indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        return out


def new_scalar_model(cfg: ModelConfig, tokenizer=None) -> ScalarModel:
    """A fresh head on a (possibly LoRA/QLoRA) backbone loaded from ``cfg.path``."""
    tokenizer = tokenizer or load_tokenizer(cfg.path, cfg.trust_remote_code)
    backbone = add_adapter(load_causal_lm(cfg, tokenizer), cfg)
    hidden = unwrap_causal_lm(backbone).config.get_text_config().hidden_size
    return ScalarModel(backbone, hidden, ScalarConfig(mode=cfg.mode, base=cfg.path))


def load_scalar_model(path: str | Path, mode: str | None = None, dtype: str = "float32",
                      trainable: bool = False) -> ScalarModel:
    """Reload a saved scalar model with its head and normalisation."""
    path = Path(path)
    saved = ScalarConfig(**json.loads((path / CONFIG_FILE).read_text()))
    is_adapter = (path / "adapter_config.json").is_file()
    base = saved.base if is_adapter else str(path)
    default_mode = (saved.mode if saved.mode in ("lora", "qlora") else "lora") if is_adapter \
        else "full"
    cfg = ModelConfig(path=base, mode=mode or default_mode, dtype=dtype)
    tokenizer = load_tokenizer(str(path))
    backbone = load_causal_lm(cfg, tokenizer)
    if is_adapter:
        from peft import PeftModel

        backbone = PeftModel.from_pretrained(backbone, path, is_trainable=trainable)
    hidden = unwrap_causal_lm(backbone).config.get_text_config().hidden_size
    model = ScalarModel(backbone, hidden, saved)
    model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
    return model.requires_grad_(trainable) if not is_adapter else model
