"""Build (and cache) a world's raw base model by pretraining on its corpus.

The base model is a small transformers ``LlamaForCausalLM`` trained from scratch with the
shared engine (the SFT module with the loss on every token), so the world goes through
exactly the code path of a real model. The build is deterministic for (world, preset, seed),
cached under ``$PREFOPT_CACHE`` (default ``~/.cache/prefopt``) and written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BUILD_VERSION = 2


@dataclass(frozen=True)
class Preset:
    """Size of the base model and of its pretraining."""

    hidden: int
    layers: int
    heads: int
    n_docs: int
    epochs: int
    lr: float
    batch_size: int
    max_length: int = 320
    mixed_precision: str = "no"


PRESETS = {
    # seconds on 2 CPU cores: for tests
    "tiny": Preset(hidden=64, layers=2, heads=4, n_docs=400, epochs=1, lr=3e-3,
                   batch_size=16),
    # a few minutes on 2 CPU cores: the documented world
    "default": Preset(hidden=192, layers=4, heads=6, n_docs=10000, epochs=2, lr=2e-3,
                      batch_size=32),
}


def cache_root() -> Path:
    return Path(os.environ.get("PREFOPT_CACHE", Path.home() / ".cache" / "prefopt"))


def model_dir(world_name: str, preset: str, seed: int) -> Path:
    return cache_root() / f"{world_name}-{preset}-seed{seed}-v{BUILD_VERSION}"


def build_base_model(world, preset: str = "default", seed: int = 0,
                     progress: bool = False) -> Path:
    """The cached base model directory, building it first when needed."""
    out = model_dir(world.name, preset, seed)
    if (out / "build.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        info = _pretrain(world, PRESETS[preset], seed, tmp, progress)
        (tmp / "build.json").write_text(json.dumps(info, indent=2))
        if (out / "build.json").is_file():  # another process finished first
            shutil.rmtree(tmp)
            return out
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _init_model(tokenizer, p: Preset, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=p.hidden,
                      intermediate_size=4 * p.hidden, num_hidden_layers=p.layers,
                      num_attention_heads=p.heads, num_key_value_heads=p.heads,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg)


def _pretrain(world, p: Preset, seed: int, out: Path, progress: bool) -> dict:
    from prefopt.algorithms.sft import SFT, SFTConfig
    from prefopt.data.records import Demonstration
    from prefopt.engine import TrainConfig, Trainer
    from prefopt.policy import ModelConfig, Policy

    t0 = time.perf_counter()
    tokenizer = world.build_tokenizer(out, seed)
    model = _init_model(tokenizer, p, seed)
    docs = [Demonstration(conv[:-1], conv[-1]["content"], f"doc{i}")
            for i, conv in enumerate(world.corpus(p.n_docs, seed))]
    policy = Policy(model, tokenizer, ModelConfig(path=str(out)))
    module = SFT(policy, docs, SFTConfig(completion_only=False, group_by_length=True), p.max_length, p.batch_size,
                 seed)
    train = TrainConfig(lr=p.lr, epochs=p.epochs, batch_size=p.batch_size,
                        micro_batch_size=p.batch_size, warmup_steps=20,
                        lr_scheduler="cosine", seed=seed, progress=progress, save_every=0,
                        mixed_precision=p.mixed_precision)
    work = out / ".pretrain"
    metrics = Trainer(module, train, work).fit()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    final_nll = [m for m in _read(work / "metrics.jsonl")][-1]["sft/nll"]
    shutil.rmtree(work, ignore_errors=True)
    return {"preset": asdict(p), "seed": seed, "build_version": BUILD_VERSION,
            "docs": len(docs), "kept": len(module.train), "steps": metrics["train/steps"],
            "final_train_nll": final_nll, "seconds": time.perf_counter() - t0}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
