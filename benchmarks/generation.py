"""Rollout generation throughput: prefopt ``Policy.generate`` vs plain ``model.generate``.

  python benchmarks/generation.py ASSETS OUT.json [--reps 5] [--prompts 32]

The same model weights, the same prompts (the chat template rendered, left-padded), the
same sampling (T = 0.7, top_k = 0, top_p = 1, ``max_new_tokens``, EOS stop), one batch, one
thread. Timed per call, calls alternating between the two sides after one warm-up each:

  prefopt       ``Policy.generate(prompts, SamplingConfig(...), batch_size)``: tokenizes the
                prompts, samples, masks after EOS and decodes the texts (what a rollout gets)
  transformers  tokenizer(rendered prompts, left padding) + ``model.generate(...)``

tokens/s = generated tokens (up to and including each row's first EOS) / seconds of the call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's prefopt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("assets")
    ap.add_argument("out")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from prefopt.data.records import user
    from prefopt.data.tokenize import render_prompt
    from prefopt.policy import ModelConfig, SamplingConfig, load_policy
    from prefopt.policy.generate import response_mask_after_eos

    assets = Path(args.assets)
    rows = [json.loads(line) for line in (assets / "data" / "prompts.prefopt.jsonl")
            .read_text().splitlines()][:args.prompts]
    prompts = [user(r["prompt"]) for r in rows]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.7)

    policy = load_policy(ModelConfig(path=str(assets / "policy")))
    tok = policy.tokenizer
    plain = AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32).eval()
    texts = [render_prompt(tok, p) for p in prompts]

    def run_prefopt() -> int:
        ro = policy.generate(prompts, sampling, batch_size=len(prompts))
        return int(ro.response_mask.sum())

    @torch.no_grad()
    def run_plain() -> int:
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = plain.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=True,
                             temperature=0.7, top_k=0, top_p=1.0,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        mask, _ = response_mask_after_eos(out[:, batch["input_ids"].shape[1]:],
                                          tok.eos_token_id)
        return int(mask.sum())

    sides = {"prefopt": run_prefopt, "transformers": run_plain}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    tokens: dict[str, list[int]] = {k: [] for k in sides}
    for fn in sides.values():  # warm-up
        torch.manual_seed(0)
        fn()
    for rep in range(args.reps):
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for name in order:
            torch.manual_seed(1000 + rep)
            t0 = time.perf_counter()
            n = sides[name]()
            rates[name].append(n / (time.perf_counter() - t0))
            tokens[name].append(n)
    result = {"tokens_per_s": rates, "tokens": tokens, "n_prompts": len(prompts),
              "batch_size": len(prompts), "max_new_tokens": args.max_new_tokens,
              "temperature": 0.7, "threads": torch.get_num_threads(),
              "median": {k: statistics.median(v) for k, v in rates.items()}}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["median"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
