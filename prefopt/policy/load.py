"""Load any Hugging Face causal LM in full precision, LoRA or 4-bit QLoRA mode."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from prefopt.data.tokenize import prepare_tokenizer
from prefopt.errors import ConfigError

log = logging.getLogger(__name__)

Mode = Literal["full", "lora", "qlora"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    """How to load the policy (and, with the same fields, reward/value models)."""

    path: str = "world:minihh"
    """Local model directory, a hub id (when online), or ``world:NAME`` for a world's base."""
    mode: Mode = "full"
    """full: all weights train; lora: adapters on a frozen base; qlora: adapters on a 4-bit
    NF4 base (bitsandbytes, double quantisation)."""
    dtype: str = "float32"
    """Compute dtype: float32, bfloat16 or float16."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """Dropout is off by default: it makes PPO's old and new log-probs disagree."""
    target_modules: str = "all-linear"
    """Comma-separated module names, or all-linear."""
    adapter: str | None = None
    """An existing PEFT adapter directory to continue training from (lora/qlora modes)."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off unless you trust the model's source."""
    gradient_checkpointing: bool = False


def resolve_model_path(path: str) -> str:
    """A directory of full weights for ``path``.

    ``world:NAME`` is the world's base model (built on first use). A PEFT adapter directory
    (say, the ``final/`` of a LoRA SFT run) is merged into its base once and cached in
    ``ADAPTER_DIR/merged/``, so the next stage can start from it in any mode, QLoRA included.
    """
    if path.startswith("world:"):
        from prefopt.worlds import get_world

        return str(get_world(path.split(":", 1)[1]).base_model_dir())
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        return str(merge_adapter_dir(p))
    return path


def merge_adapter_dir(adapter_dir: Path) -> Path:
    """Merge a LoRA adapter into full-precision base weights; cached, written atomically."""
    import shutil
    import tempfile

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    out = adapter_dir / "merged"
    if (out / "config.json").is_file():
        return out
    model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(prefix=".merged-", dir=adapter_dir))
    model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(path),
                                        trust_remote_code=trust_remote_code)
    tok.padding_side = "left"
    prepare_tokenizer(tok)
    return tok


def _quantization_config(dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)


def load_causal_lm(cfg: ModelConfig, tokenizer=None, model_cls=None):
    """The bare transformers model (no adapters) in the mode's precision, dropout off."""
    from transformers import AutoModelForCausalLM

    cls = model_cls or AutoModelForCausalLM
    path = resolve_model_path(cfg.path)
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"model.dtype: expected one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    kwargs = {"dtype": DTYPES[cfg.dtype], "trust_remote_code": cfg.trust_remote_code,
              "use_safetensors": _has_safetensors(path)}
    if cfg.mode == "qlora":
        kwargs["quantization_config"] = _quantization_config(DTYPES[cfg.dtype])
    model = cls.from_pretrained(path, **kwargs)
    disable_dropout(model)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer is not None else None
    return model


def _has_safetensors(path: str) -> bool | None:
    """Local directories must hold safetensors (no pickle from files); hub ids decide later."""
    p = Path(path)
    if p.is_dir():
        if not any(p.glob("*.safetensors")):
            raise ConfigError(f"{path}: no *.safetensors weights found; prefopt does not load "
                              "pickled (.bin) weights. Convert them with safetensors first.")
        return True
    return True


def disable_dropout(model) -> None:
    """Dropout off everywhere (Ziegler et al. 2019; Huang et al. 2023, detail 'dropout')."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def add_adapter(model, cfg: ModelConfig, adapter_name: str = "default"):
    """Wrap in a PEFT LoRA adapter (lora/qlora) or return the model unchanged (full)."""
    if cfg.mode == "full":
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if cfg.mode == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if cfg.adapter:
        return PeftModel.from_pretrained(model, cfg.adapter, is_trainable=True)
    targets = cfg.target_modules
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets if targets == "all-linear" else targets.split(","),
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora, adapter_name=adapter_name)
