"""``prefopt compare``: train several methods from one base on the same data and budget,
evaluate them with one suite, and write ``results.json``, ``report.md`` and plots.

A compare recipe names stages. Each stage is an ordinary ``prefopt run`` recipe (minus the
world, which the compare recipe sets once) plus ``from: STAGE`` (start from that stage's
``final/``). Any string ``@STAGE`` in a stage means that stage's ``final/`` directory and
``@STAGE/PATH`` a file inside its run directory, so stages share data (the same preference
pairs) and models (the same reward model). ``methods`` lists the stages to evaluate. Every
stage runs in ``OUT/seed-S/STAGE``; a finished stage is skipped when compare is run again,
so an interrupted compare resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefopt.config import _suggest, apply_overrides, read_yaml
from prefopt.errors import ConfigError

log = logging.getLogger(__name__)
DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "compare" / "default.yaml"
_REF = re.compile(r"^@([A-Za-z0-9_]+)(/.*)?$")
TOP_KEYS = ("world", "seeds", "suite", "reference", "methods", "stages", "track", "budget")


@dataclass
class CompareConfig:
    world: dict | None
    """The embedded world (name, preset, seed), or null for your own model and data."""
    stages: dict[str, dict]
    methods: list[str]
    seeds: int = 1
    suite: str = "minihh"
    reference: str = "sft"
    """The method every win rate and KL is measured against (usually SFT)."""
    track: list[str] = field(default_factory=list)
    """Stages whose training checkpoints are plotted on the gold-vs-√KL frontier."""
    budget: dict = field(default_factory=dict)
    """Free-form notes on how the budgets were matched (copied into the report)."""


def load_compare(path: str | Path | None, overrides: list[str] = ()) -> CompareConfig:
    path = Path(path) if path else DEFAULT_RECIPE
    data = apply_overrides(read_yaml(path), list(overrides))
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'{_suggest(key, TOP_KEYS)}")
    for key in ("stages", "methods"):
        if key not in data:
            raise ConfigError(f"{path}: '{key}' is required")
    cfg = CompareConfig(**{"world": None, **data})
    for name in [*cfg.methods, *cfg.track, cfg.reference]:
        if name not in cfg.stages:
            raise ConfigError(f"{path}: '{name}' is not a stage{_suggest(name, cfg.stages)}")
    for name, stage in cfg.stages.items():
        src = stage.get("from")
        if src is not None and src not in cfg.stages:
            raise ConfigError(f"{path}: stages.{name}.from: no stage '{src}'")
    return cfg


def stage_order(stages: dict[str, dict]) -> list[str]:
    """Stages in dependency order (``from`` and ``@STAGE`` references)."""
    deps = {n: _deps(s) for n, s in stages.items()}
    order: list[str] = []

    def visit(n, trail=()):
        if n in order:
            return
        if n in trail:
            raise ConfigError(f"compare stages form a cycle: {' -> '.join([*trail, n])}")
        for d in deps[n]:
            if d not in stages:
                raise ConfigError(f"stage '{n}' refers to unknown stage '{d}'")
            visit(d, (*trail, n))
        order.append(n)

    for n in stages:
        visit(n)
    return order


def _deps(stage) -> set[str]:
    found = {stage["from"]} if isinstance(stage, dict) and stage.get("from") else set()
    if isinstance(stage, dict):
        for k, v in stage.items():
            if k != "from":
                found |= _deps(v)
    elif isinstance(stage, list):
        for v in stage:
            found |= _deps(v)
    elif isinstance(stage, str) and (m := _REF.match(stage)):
        found.add(m.group(1))
    return found


def resolve_stage(stage: dict, seed_dir: Path, world: dict | None, seed: int) -> dict:
    """A runnable recipe dict: world set, ``from`` and ``@STAGE`` references resolved."""
    recipe = _resolve(copy.deepcopy(stage), seed_dir)
    src = recipe.pop("from", None)
    if src is not None:
        recipe.setdefault("model", {})["path"] = str(seed_dir / src / "final")
    recipe["world"] = {**world, "seed": world.get("seed", 0)} if world else None
    recipe.setdefault("train", {})["seed"] = seed
    recipe["train"].setdefault("progress", False)
    return recipe


def _resolve(value, seed_dir: Path):
    if isinstance(value, dict):
        return {k: (v if k == "from" else _resolve(v, seed_dir)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, seed_dir) for v in value]
    if isinstance(value, str) and (m := _REF.match(value)):
        stage, rest = m.group(1), m.group(2)
        return str(seed_dir / stage / rest.lstrip("/")) if rest else str(seed_dir / stage /
                                                                          "final")
    return value


def run_stage(name: str, recipe: dict, out: Path) -> dict:
    """Run one stage in its own process (so its peak memory is its own); skipped when
    already finished, resumed from its last checkpoint when interrupted."""
    import subprocess

    import yaml

    from prefopt.recipe import parse_recipe

    if (out / "summary.json").is_file() and (out / "final").is_dir():
        return json.loads((out / "summary.json").read_text())
    parse_recipe(copy.deepcopy(recipe), f"stage '{name}'")  # fail fast, before any work
    out.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [sys.executable, "-m", "prefopt", "run", str(path), "--out", str(out), "--resume"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (out / "stage.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ConfigError(f"stage '{name}' failed (exit {proc.returncode}); log: "
                          f"{out / 'stage.log'}\n{tail}")
    return json.loads((out / "summary.json").read_text())


def evaluate_stage(model_dir: Path, reference: Path | None, suite: str, out: Path,
                   reward: str | None = None) -> dict:
    from prefopt.eval.harness import evaluate_model

    if (out / "eval.json").is_file():
        return json.loads((out / "eval.json").read_text())
    return evaluate_model(str(model_dir), suite,
                          reference=str(reference) if reference else None, out=out,
                          reward=reward)


class Progress:
    """One line per stage on stderr: [k/N] seed s · stage … done in t s."""

    def __init__(self, total: int):
        self.total, self.k, self.t0 = total, 0, time.perf_counter()

    def start(self, what: str) -> float:
        self.k += 1
        print(f"[{self.k}/{self.total}] {what} ...", file=sys.stderr, flush=True)
        return time.perf_counter()

    def done(self, what: str, t: float, skipped: bool = False) -> None:
        state = "already done" if skipped else f"done in {time.perf_counter() - t:.0f} s"
        print(f"      {what}: {state} (elapsed {time.perf_counter() - self.t0:.0f} s)",
              file=sys.stderr, flush=True)


def run_compare(cfg: CompareConfig, out: Path, seeds: int | None = None) -> dict:
    """Train and evaluate every stage for every seed; write results, report and plots."""
    from prefopt.eval.report import collect_results, write_report

    seeds = seeds or cfg.seeds
    order = stage_order(cfg.stages)
    progress = Progress(bool(cfg.world) + seeds * (len(order) + len(cfg.methods)))
    if cfg.world:
        t = progress.start("base model of the world")
        progress.done(f"base model {_build_world(cfg.world)}", t)
    for seed in range(seeds):
        seed_dir = out / f"seed-{seed}"
        for name in order:
            stage_dir = seed_dir / name
            finished = (stage_dir / "summary.json").is_file()
            t = progress.start(f"seed {seed} · train {name}")
            run_stage(name, resolve_stage(cfg.stages[name], seed_dir, cfg.world, seed),
                      stage_dir)
            progress.done(name, t, finished)
        for name in cfg.methods:
            eval_dir = seed_dir / name / "eval"
            finished = (eval_dir / "eval.json").is_file()
            t = progress.start(f"seed {seed} · evaluate {name}")
            evaluate_stage(seed_dir / name / "final", seed_dir / cfg.reference / "final",
                           cfg.suite, eval_dir)
            progress.done(name, t, finished)
    results = collect_results(cfg, out, seeds)
    write_report(cfg, results, out)
    return results


def _build_world(world: dict) -> Path:
    from prefopt.worlds import get_world

    w = get_world(world.get("name", "minihh"), preset=world.get("preset", "default"),
                  seed=world.get("seed", 0))
    return w.base_model_dir(progress=True)


def compare_main(args) -> int:
    cfg = load_compare(args.recipe, args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_compare(cfg, out, args.seeds)
    print(f"report: {out / 'report.md'}")
    return 0
