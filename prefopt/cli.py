"""The ``prefopt`` command line: run | compare | eval | world."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from prefopt.errors import PrefoptError


def _run(args) -> int:
    from prefopt.recipe import load_recipe
    from prefopt.run import run_recipe

    cfg = load_recipe(args.recipe, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.recipe).stem)
    summary = run_recipe(cfg, out, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "data"}, indent=2, default=float))
    print(f"run directory: {out}")
    return 0


def _world(args) -> int:
    from prefopt.worlds import get_world

    if args.action == "report":
        from prefopt.worlds.report import world_report

        seeds = list(range(args.seed, args.seed + args.seeds))
        world_report(args.name, args.preset, seeds, args.out, args.n_prompts, args.n_eval)
        print(f"wrote {Path(args.out) / 'world_report.md'} and world_report.json")
        return 0
    world = get_world(args.name, preset=args.preset, seed=args.seed)
    if args.action == "build":
        print(world.base_model_dir(progress=True))
    return 0


def _compare(args) -> int:
    from prefopt.eval.compare import compare_main

    return compare_main(args)


def _eval(args) -> int:
    from prefopt.eval.harness import eval_main

    return eval_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefopt", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train one recipe")
    r.add_argument("recipe")
    r.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-5")
    r.add_argument("--out", help="run directory (default runs/RECIPE_NAME)")
    r.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    r.set_defaults(fn=_run)

    c = sub.add_parser("compare", help="train and evaluate several methods side by side")
    c.add_argument("recipe", nargs="?", default=None)
    c.add_argument("overrides", nargs="*")
    c.add_argument("--out", default="runs/compare")
    c.add_argument("--seeds", type=int, default=None)
    c.set_defaults(fn=_compare)

    e = sub.add_parser("eval", help="evaluate a model on a suite (docs/evaluation.md)")
    e.add_argument("model_dir", help="model dir, PEFT adapter dir or best-of-n dir")
    e.add_argument("overrides", nargs="*", help="suite key=value overrides, e.g. n_prompts=50")
    e.add_argument("--suite", default="minihh", help="a name in evals/suites/ or a YAML path")
    e.add_argument("--out", default=None,
                   help="output dir for eval.json and samples.jsonl (default RUN/eval for "
                        "RUN/final, else MODEL_DIR/eval)")
    e.add_argument("--reference", default=None, help="reference policy for win rate and KL")
    e.add_argument("--judge", default=None, help="gold | reward-model DIR | ai:<backend>")
    e.add_argument("--reward", default=None, help="reward-model DIR whose score to report")
    e.add_argument("--seed", type=int, default=None, help="sampling seed (sampling.seed)")
    e.add_argument("--no-cache", action="store_true", help="regenerate samples.jsonl")
    e.set_defaults(fn=_eval)

    w = sub.add_parser("world", help="build the embedded world, or measure it (docs/world.md)")
    w.add_argument("action", choices=["build", "report"],
                   help="build: the base model; report: base/SFT gold, annotators, base model "
                        "as judge and critic, over seeds (OUT/world_report.md)")
    w.add_argument("--name", default="minihh")
    w.add_argument("--preset", default="default", choices=["tiny", "default"])
    w.add_argument("--seed", type=int, default=0, help="world seed (report: the first seed)")
    w.add_argument("--seeds", type=int, default=3, help="report: how many seeds")
    w.add_argument("--out", default="runs/world-report", help="report: output directory")
    w.add_argument("--n-prompts", type=int, default=None,
                   help="report: SFT pairs judged (the critic gets half); default 256 "
                        "(tiny: 16)")
    w.add_argument("--n-eval", type=int, default=None,
                   help="report: evaluation prompts (default: the minihh suite's 200)")
    w.set_defaults(fn=_world)
    return p


def _set_threads() -> None:
    """PREFOPT_NUM_THREADS caps torch's CPU threads (1 avoids oversubscription when several
    runs share a small machine; the default lets torch use every core)."""
    n = os.environ.get("PREFOPT_NUM_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _set_threads()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except PrefoptError as e:
        print(f"prefopt: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_process_group()


def close_process_group() -> None:
    """Tear down torch.distributed before the interpreter does: a gloo group left to the
    interpreter's exit can abort a process ("terminate called without an active
    exception") after a run that succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
