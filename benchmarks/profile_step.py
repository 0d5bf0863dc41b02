"""Where a prefopt training step spends its time: torch.profiler ops and cProfile functions.

  python benchmarks/profile_step.py TASK ASSETS OUT_DIR [--steps 4]

Builds the module from the same recipe ``run.py`` uses (full settings), runs one warm-up
optimizer step, then profiles ``--steps`` more through the engine's own step
(``Trainer._train_batch``: rollout, forward, backward, clip, AdamW, scheduler) with
torch.profiler (operator self-CPU time) and cProfile (Python functions, cumulative time).
Writes OUT_DIR/TASK-prefopt-ops.txt and OUT_DIR/TASK-prefopt-cprofile.txt and prints both.
One thread (torch.set_num_threads(1)), like the benchmark.

The TRL side's operator table comes from ``trl_side.py`` with BENCH_PROFILE=FILE set.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's prefopt, and run.py


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["sft", "reward", "dpo", "ppo"])
    ap.add_argument("assets")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()

    from run import FULL, prefopt_recipe

    from prefopt.algorithms.registry import algorithm_spec
    from prefopt.engine.trainer import Trainer, make_accelerator
    from prefopt.recipe import parse_recipe
    from prefopt.run import RunContext

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"profile-{args.task}-"))  # metrics.jsonl etc.
    cfg = parse_recipe(prefopt_recipe(args.task, Path(args.assets), FULL[args.task]))
    acc = make_accelerator(cfg.train, run_dir)
    ctx = RunContext(cfg, run_dir, acc)
    module = algorithm_spec(cfg.algorithm).build(ctx)
    trainer = Trainer(module, cfg.train, run_dir, acc)
    trainer._setup(resume=False)
    for m in module.models():
        m.train()
    batches = iter(module.train_batches(0))
    trainer._train_batch(next(batches), 0)  # warm-up: optimizer state, allocator

    todo = [next(batches) for _ in range(args.steps)]
    prof = cProfile.Profile()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
        prof.enable()
        for i, b in enumerate(todo, start=1):
            trainer._train_batch(b, i)
        prof.disable()
    ops = tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(70)
    (out / f"{args.task}-prefopt-ops.txt").write_text(ops)
    (out / f"{args.task}-prefopt-cprofile.txt").write_text(s.getvalue())
    print(ops)
    print(s.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
