"""QLoRA memory and throughput of DPO and PPO on a randomly initialised 7B-shaped Llama.

  python benchmarks/qlora_big.py --out DIR                   # 7B shape: needs a GPU
  python benchmarks/qlora_big.py --shape tiny --out DIR      # the same path, small, on CPU

Nothing is downloaded. The model is a ``LlamaForCausalLM`` with LLaMA-7B's shape (hidden 4096,
32 layers, 32 heads, MLP 11008, vocabulary 32000; 6.74 B parameters), randomly initialised
in bf16 on the device and saved once as safetensors with a word-level tokenizer
(``benchmarks/assets.py``). prefopt then loads it the way a user's model is loaded: 4-bit NF4
with double quantisation, bf16 compute, LoRA r = 16 on every linear layer, gradient
checkpointing (``model.mode: qlora``). The reward model of PPO is the same weights with a
random scalar head (its directory links to the policy's files).

Per task it runs ``prefopt.run.run_recipe`` in this process and records the peak CUDA
allocation (``torch.cuda.max_memory_allocated``, reset before each task), the process's peak
RSS so far, the
optimizer steps' wall time and training tokens/s (the engine's ``time/train`` and
``train/tokens``: non-padding tokens through forward + backward), and for PPO the rollout and
update time per iteration. Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's prefopt
sys.path.insert(0, str(HERE))

import assets as assets_mod  # noqa: E402

SHAPES = {
    "7b": assets_mod.ModelShape(hidden_size=4096, intermediate_size=11008,
                                num_hidden_layers=32, num_attention_heads=32,
                                num_key_value_heads=32, max_position_embeddings=2048,
                                vocab_words=32000 - len(assets_mod.SPECIALS)),
    "tiny": assets_mod.ModelShape(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=4,
                                  max_position_embeddings=512, vocab_words=505),
}
# Sequence lengths: prompts of 64-128 words and completions of 128-256 words (word = token).
DATA = assets_mod.DataShape(n_sft=0, n_pairs=64, n_prompts=64, prompt_words=(64, 128),
                            completion_words=(128, 256))


def build(work: Path, shape, device: str) -> dict:
    """work/policy (bf16 safetensors + tokenizer), work/reward (links + scalar head),
    work/data; returns the parameter count. Reuses a finished build."""
    done = work / "build.json"
    if done.is_file():
        return json.loads(done.read_text())
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    tok = assets_mod.build_tokenizer(work / "policy", shape.vocab_words)
    cfg = assets_mod.llama_config(shape, len(tok))
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(work / "policy", safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    reward = work / "reward"
    reward.mkdir(parents=True, exist_ok=True)
    for f in (work / "policy").iterdir():
        if not (reward / f.name).exists():
            (reward / f.name).symlink_to(f.resolve())
    g = torch.Generator().manual_seed(1)
    save_file({"weight": torch.randn(1, shape.hidden_size, generator=g)
               / (shape.hidden_size + 1) ** 0.5, "bias": torch.zeros(1)},
              str(reward / "scalar_head.safetensors"))
    (reward / "scalar_config.json").write_text(json.dumps(
        {"mode": "full", "base": "", "mean": 0.0, "std": 1.0}))
    assets_mod.build_data(work / "data", assets_mod.pseudo_words(shape.vocab_words), DATA)
    info = {"params": n_params, "vocab": len(tok)}
    done.write_text(json.dumps(info))
    return info


def recipe(task: str, work: Path, args) -> dict:
    model = {"path": str(work / "policy"), "mode": "qlora", "dtype": "bfloat16",
             "lora_r": 16, "lora_alpha": 32, "gradient_checkpointing": True}
    train = {"lr": 1e-5, "epochs": 1, "batch_size": args.batch, "micro_batch_size": args.micro,
             "max_steps": args.steps, "mixed_precision": args.mixed_precision, "seed": 0,
             "progress": False, "log_every": 1}
    r = {"algorithm": task, "world": None, "model": model, "train": train}
    if task == "dpo":
        r["data"] = {"train": str(work / "data" / "pairs.prefopt.jsonl"), "max_length": 512}
        r["dpo"] = {"loss": "dpo", "beta": 0.1, "reference": "live", "eval_kl_prompts": 0}
    else:
        r["data"] = {"train": str(work / "data" / "prompts.prefopt.jsonl")}
        r["ppo"] = {"reward": str(work / "reward"), "value_init": "reward",
                    "sampling": {"max_new_tokens": args.new_tokens, "temperature": 0.7},
                    "kl_coef": 0.05, "ppo_epochs": 1, "n_minibatches": 1,
                    "missing_eos_penalty": None, "forward_batch_size": args.micro,
                    "generation_batch_size": args.batch}
    return r


def run_task(task: str, work: Path, args) -> dict:
    import torch

    from prefopt.engine.metrics import peak_memory_mb
    from prefopt.recipe import parse_recipe
    from prefopt.run import run_recipe

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out = work / "runs" / task
    t0 = time.perf_counter()
    run_recipe(parse_recipe(recipe(task, work, args)), out)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/train" in r][1:]  # the first step warms up
    res = {"wall_s": wall, **peak_memory_mb(), "steps_timed": len(steps),
           "tokens_per_s": (sum(r["train/tokens"] for r in steps)
                            / max(sum(r["time/train"] for r in steps), 1e-9)),
           "step_s": statistics.median(r["time/train"] for r in steps) if steps else None}
    if task == "ppo" and steps:
        res["rollout_s"] = statistics.median(r["time/rollout"] for r in steps)
    return res


def markdown(results: dict) -> str:
    lines = [f"# QLoRA at the {results['shape']} shape ({results['params'] / 1e9:.2f} B "
             f"parameters), {results['device']}", "",
             f"batch {results['args']['batch']}, micro-batch {results['args']['micro']}, "
             f"{results['args']['steps']} optimizer steps (the first not timed), "
             f"mixed precision {results['args']['mixed_precision']}, LoRA r 16 on all linear "
             "layers, NF4 + double quantisation, gradient checkpointing.", "",
             "| task | peak CUDA GiB | peak RSS GiB | step s (median) | train tokens/s "
             "| rollout s | whole run s |", "|---|---|---|---|---|---|---|"]
    for task, r in results["tasks"].items():
        cuda = r.get("mem/peak_cuda_mb")
        lines.append(f"| {task} | {cuda / 1024:.2f} |" if cuda else f"| {task} | – |")
        lines[-1] += (f" {r['mem/peak_rss_mb'] / 1024:.2f} | {r['step_s'] or float('nan'):.2f} | "
                      f"{r['tokens_per_s']:.0f} | {r.get('rollout_s') or float('nan'):.2f} | "
                      f"{r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/prefopt-qlora-big")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--tasks", default="dpo,ppo")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16"])
    args = ap.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.shape == "7b" and device == "cpu":
        raise SystemExit("the 7b shape needs a GPU; use --shape tiny to check the path on CPU")
    work = Path(args.work) / args.shape
    t0 = time.perf_counter()
    info = build(work, SHAPES[args.shape], device)
    results = {"shape": args.shape, **info, "build_s": time.perf_counter() - t0,
               "device": torch.cuda.get_device_name() if device == "cuda" else "CPU",
               "args": vars(args), "tasks": {}}
    for task in args.tasks.split(","):
        results["tasks"][task] = run_task(task, work, args)
        print(task, results["tasks"][task], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
