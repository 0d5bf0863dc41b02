"""torch.compile of the benchmark model's decoder blocks against eager, one thread.

  OMP_NUM_THREADS=1 python benchmarks/compile_probe.py

The model is the benchmark's shape (Llama, hidden 256, 4 layers, vocabulary 1536), randomly
initialised. One step = the body's forward on 8 rows of 96–128 tokens (lengths cycle, so a
compiled graph must handle several shapes), the LM head, a log-sum-exp loss and the backward
pass. Prints the compile + warm-up time and the median step time of each side
(docs/performance.md, "torch.compile does not pay here").
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

LENGTHS = (96, 112, 128, 104)


def make_model() -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, vocab_size=1536,
                      max_position_embeddings=256)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def step(model: LlamaForCausalLM, length: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (8, length))
    attn = torch.ones_like(ids)
    attn[:, :5] = 0  # some left padding, as in rollouts
    t0 = time.perf_counter()
    hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state
    model.lm_head(hidden).float().logsumexp(-1).mean().backward()
    return time.perf_counter() - t0


def timings(model: LlamaForCausalLM, n: int) -> list[float]:
    return [step(model, LENGTHS[i % len(LENGTHS)]) for i in range(n)]


def main() -> None:
    torch.set_num_threads(1)
    model = make_model()
    eager = timings(model, 12)[2:]  # the first two steps warm the allocator
    t0 = time.perf_counter()
    for block in model.model.layers:
        block.compile(dynamic=True)
    timings(model, len(LENGTHS))  # compiles every shape once
    compile_s = time.perf_counter() - t0
    compiled = timings(model, 12)
    print(f"compile + warm-up {compile_s:.1f} s; step median: eager "
          f"{statistics.median(eager):.3f} s (n={len(eager)}), compiled "
          f"{statistics.median(compiled):.3f} s (n={len(compiled)})")


if __name__ == "__main__":
    main()
