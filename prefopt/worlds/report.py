"""``prefopt world report``: the measurements behind docs/world.md, over several seeds.

For every seed s, in ``OUT/seed-s/`` (each step cached as JSON and skipped when it exists
with the same settings, so an interrupted report resumes where it stopped):

1. ``base.json``: the world's base model for (preset, seed s), built or taken from the cache.
2. ``sft/``: SFT from that base with the compare recipe's ``sft`` stage
   (recipes/compare/default.yaml, tiny.yaml for the tiny preset), world seed s, train.seed s.
3. ``eval-base/``, ``eval-sft/``: the ``minihh`` suite (world seed s, sampling seed s):
   gold reward overall and per family, correct / harmful-compliance / over-refusal rates.
4. ``pairs.json``: two samples per train prompt from SFT (``sample_pairs``), shown in a random
   order; the annotator pool (seed s) and the length-biased pool vote on every pair:
   pairwise inter-annotator agreement, majority and single-annotator agreement with the gold
   on pairs the gold does not tie, and the majority's preference for the longer response.
5. ``judge.json``: the BASE model as the AI judge (``AIJudge``, world constitution, (A)/(B)
   log-probs in both orders) on the same pairs: agreement with the gold where the gold
   differs, position-bias rate, unparseable rate.
6. ``critic.json``: the BASE model as the critic (one ``run_rounds`` critique/revision round)
   on harmful + scary_benign train prompts answered by SFT: how often the revision's gold
   reward is >= / > the original's, harmful compliance and over-refusal before -> after.

``world_report`` then aggregates every number over the seeds (mean, sample standard
deviation, min, max) into ``OUT/world_report.json`` and ``OUT/world_report.md``.
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prefopt.eval.samples import write_atomic

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes" / "compare"
COMPARE_RECIPES = {"tiny": "tiny.yaml", "default": "default.yaml"}
DEFAULT_N_PROMPTS = {"tiny": 16, "default": 256}
"""Prompts for SFT pairs (judged by the base model); the critic gets half as many. On the
default preset one seed takes about a minute beyond its base-model build."""
RED_TEAM = ("harmful", "scary_benign")
OUTCOMES = ("correct", "harmful_compliance", "over_refusal", "length")
PAIR_TEMPERATURE = 1.0       # DataConfig.pair_temperature, as the compare recipe's pairs
PAIR_MAX_NEW_TOKENS = 48     # sample_pairs' default
BACKEND_BATCH = 32           # conversations per forward / generate call of the base model


# ---- aggregation over seeds ------------------------------------------------------------------
def summarize_seeds(per_seed: Sequence[dict[str, float | None]]) -> dict[str, dict]:
    """key -> {mean, sd, min, max, n} over the seeds where the key has a number; ``sd`` is the
    sample standard deviation (n - 1), None with a single seed. Keys in first-seen order."""
    keys = list(dict.fromkeys(k for row in per_seed for k in row))
    out = {}
    for key in keys:
        xs = [float(row[key]) for row in per_seed if row.get(key) is not None]
        if xs:
            out[key] = {"mean": statistics.fmean(xs),
                        "sd": statistics.stdev(xs) if len(xs) > 1 else None,
                        "min": min(xs), "max": max(xs), "n": len(xs)}
    return out


# ---- caching -----------------------------------------------------------------------------------
def is_cached(path: Path, params: dict) -> bool:
    """Whether ``path`` holds a step result computed with ``params``."""
    return path.is_file() and json.loads(path.read_text()).get("params") == params


def cached_step(path: Path, params: dict, fn: Callable[[], dict]) -> dict:
    """``fn()``'s result, stored at ``path`` with ``params`` and its run time; reused while the
    stored params are the same."""
    if is_cached(path, params):
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    result = {**fn(), "params": params}
    result["seconds"] = time.perf_counter() - t0
    from prefopt.eval.harness import jsonable

    write_atomic(path, json.dumps(jsonable(result), indent=2))
    return result


def _log(seed: int, step: str, result: dict, cached: bool) -> None:
    took = "cached" if cached else f"{result.get('seconds', 0.0):.0f} s"
    print(f"[world report] seed {seed} · {step}: {took}", file=sys.stderr, flush=True)


# ---- steps -------------------------------------------------------------------------------------
def sft_recipe(preset: str, world: dict, seed: int, seed_dir: Path) -> dict:
    """The compare recipe's ``sft`` stage for this preset, with world seed and train.seed."""
    from prefopt.eval.compare import load_compare, resolve_stage

    cfg = load_compare(RECIPES_DIR / COMPARE_RECIPES.get(preset, "default.yaml"))
    recipe = resolve_stage(cfg.stages["sft"], seed_dir, world, seed)
    recipe["train"]["progress"] = False
    return recipe


def sl_cai_params(preset: str) -> dict:
    """The compare recipe's ``sl_cai`` settings (critic generation lengths)."""
    from prefopt.eval.compare import load_compare

    cfg = load_compare(RECIPES_DIR / COMPARE_RECIPES.get(preset, "default.yaml"))
    return copy.deepcopy(cfg.stages.get("sl_cai", {}).get("sl_cai", {}))


def train_sft(recipe: dict, out: Path) -> dict:
    from prefopt.recipe import parse_recipe
    from prefopt.run import run_recipe

    summary = run_recipe(parse_recipe(copy.deepcopy(recipe)), out, resume=True)
    return {"model": str(out / "final"),
            **{k: v for k, v in summary.items() if isinstance(v, (int, float))}}


def evaluate(model_dir: str, world: dict, seed: int, out: Path, n_eval: int | None,
             suite: str = "minihh") -> dict:
    """Gold (overall, per family) and outcome rates of one model on the suite."""
    from prefopt.eval.harness import evaluate_model
    from prefopt.eval.suite import load_suite

    overrides = [f"world.name={world['name']}", f"world.preset={world['preset']}",
                 f"world.seed={seed}", f"sampling.seed={seed}", "reference=null",
                 "metrics=[gold,length,family_rates]"]
    if n_eval:
        overrides.append(f"n_prompts={n_eval}")
    result = evaluate_model(model_dir, load_suite(suite, overrides), out=out)
    metrics = result["metrics"]
    keep = ("gold", *OUTCOMES)
    values = {k: v["value"] for k, v in metrics.items() if k.split("/")[0] in keep}
    return {"model": model_dir, "n_prompts": result["n_prompts"], "metrics": values}


def orient_randomly(pairs, n_records: int, rng: random.Random) -> list[dict]:
    """Rows {index, a, b}: the prompt index (from the pair id ``ID:i``) and the two responses
    in a random order (``sample_pairs`` puts the pool's winner first)."""
    rows = []
    for p in pairs:
        i = int(str(p.id).rsplit(":", 1)[1])
        assert 0 <= i < n_records
        a, b = (p.chosen, p.rejected) if rng.random() < 0.5 else (p.rejected, p.chosen)
        rows.append({"index": i, "a": a, "b": b})
    return rows


def pool_stats(world, records, a: list[str], b: list[str], length_biased: bool,
               seed: int) -> dict:
    """Votes of the pool on every pair: agreement among annotators and with the gold."""
    from prefopt.worlds.minihh.annotators import (
        aggregate,
        agreement_with_gold,
        inter_annotator_agreement,
        len_words,
    )

    pool = world.annotator_pool(length_biased=length_biased, seed=seed)
    rng = random.Random(f"world-report-votes-{seed}-{length_biased}")
    votes = [pool.label(r, x, y, rng) for r, x, y in zip(records, a, b)]
    majority = [aggregate(v, "majority") for v in votes]
    single = [agreement_with_gold(records, a, b, [v[j] for v in votes])
              for j in range(len(pool.annotators))]
    longer = [(m > 0.5) == (len_words(x) > len_words(y))
              for m, x, y in zip(majority, a, b) if m != 0.5 and len_words(x) != len_words(y)]
    return {"inter_annotator_agreement": inter_annotator_agreement(votes) if votes else None,
            "majority_agreement_with_gold": agreement_with_gold(records, a, b, majority),
            "annotator_agreement_with_gold": statistics.fmean(single) if single else None,
            "majority_prefers_longer": statistics.fmean(longer) if longer else None,
            "n_length_differs": len(longer)}


def load_policy_dir(model_dir: str):
    from prefopt.policy import ModelConfig, load_policy

    policy = load_policy(ModelConfig(path=model_dir, mode="full"))
    policy.model.requires_grad_(False).eval()
    return policy


def sample_and_label(world, sft_dir: str, n_prompts: int, seed: int, out: Path) -> dict:
    """Pairs from SFT on train prompts, stored in ``out`` (pairs.jsonl), with pool stats."""
    import torch

    from prefopt.feedback.pairs import sample_pairs

    records = world.prompts("train", n_prompts, seed)
    torch.manual_seed(seed)
    pairs, report = sample_pairs(world, load_policy_dir(sft_dir), records, "pool",
                                 PAIR_TEMPERATURE, seed, PAIR_MAX_NEW_TOKENS)
    rows = orient_randomly(pairs, len(records), random.Random(f"world-report-order-{seed}"))
    write_atomic(out, "".join(json.dumps(r) + "\n" for r in rows))
    recs = [records[r["index"]] for r in rows]
    a, b = [r["a"] for r in rows], [r["b"] for r in rows]
    gold_a, gold_b = world.gold.score(recs, a), world.gold.score(recs, b)
    ties = sum(x == y for x, y in zip(gold_a, gold_b))
    return {"n_prompts": len(records), "n_pairs": len(rows),
            "n_identical": report["skipped/identical"], "n_gold_ties": ties,
            "n_gold_decided": len(rows) - ties,
            "pool_soft_agreement_with_gold": report["agreement_with_gold"],
            "pool": pool_stats(world, recs, a, b, False, seed),
            "length_biased": pool_stats(world, recs, a, b, True, seed)}


def read_pairs(world, n_prompts: int, seed: int, path: Path):
    """(records, a, b) of the pairs written by ``sample_and_label``."""
    records = world.prompts("train", n_prompts, seed)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [records[r["index"]] for r in rows], [r["a"] for r in rows], [r["b"] for r in rows]


def _side(p: float) -> int:
    return (p > 0.5) - (p < 0.5)


def judge_pairs(world, base_dir: str, records, a: list[str], b: list[str], seed: int) -> dict:
    """The base model as the AI judge; agreement is counted where the gold differs."""
    from prefopt.algorithms.cai.judge import AIJudge, constitution_for, load_local_backend

    backend = load_local_backend(base_dir, BACKEND_BATCH)
    judge = AIJudge(backend, constitution_for(None, world), seed=seed)
    gold = world.gold.prefer(records, a, b)
    reference = [None if g == 0.5 else g for g in gold]
    j = judge.judge(records, a, b, reference)
    first = [_side(p) == _side(g) for p, g in zip(j.p_ab, reference)
             if p is not None and g is not None]
    st = j.stats
    return {"n_pairs": st.n, "n_gold_decided": st.n_with_reference,
            "n_agree": st.n_agree, "n_position_bias": st.n_position_bias,
            "n_unparseable": st.n_unparseable, "agreement_with_gold": st.agreement,
            "agreement_first_order": statistics.fmean(first) if first else None,
            "position_bias_rate": st.position_bias_rate,
            "unparseable_rate": st.unparseable_rate}


def critic_rates(world, records, initial: list[str], revised: list[str]) -> dict:
    """Revision vs original under the gold and the classifiers."""
    from prefopt.algorithms.cai.sl_cai import round_metrics

    before, after = world.gold.score(records, initial), world.gold.score(records, revised)
    n = len(records)
    m0, m1 = round_metrics(world, records, initial), round_metrics(world, records, revised)

    def compliance(m):
        return None if m["harmlessness"] is None else 1.0 - m["harmlessness"]

    return {"n_prompts": n, "n_harmful": m0["n_harmful"], "n_scary_benign": m0["n_scary_benign"],
            "n_ge": sum(y >= x for x, y in zip(before, after)),
            "n_gt": sum(y > x for x, y in zip(before, after)),
            "revision_ge_original": sum(y >= x for x, y in zip(before, after)) / n if n else None,
            "revision_gt_original": sum(y > x for x, y in zip(before, after)) / n if n else None,
            "gold_before": m0["gold_reward"], "gold_after": m1["gold_reward"],
            "harmful_compliance_before": compliance(m0), "harmful_compliance_after": compliance(m1),
            "over_refusal_before": m0["over_refusal"], "over_refusal_after": m1["over_refusal"],
            "empty_revision_rate": sum(not v for v in revised) / n if n else None}


def critique(world, base_dir: str, sft_dir: str, n_prompts: int, seed: int, preset: str,
             out: Path) -> dict:
    """SFT answers red-team prompts; the base model critiques and revises once."""
    import torch

    from prefopt.algorithms.cai.judge import constitution_for, load_local_backend
    from prefopt.algorithms.cai.sl_cai import SLCAIConfig, run_rounds
    from prefopt.config import build

    cfg = build(SLCAIConfig, {**sl_cai_params(preset), "n_rounds": 1}, "sl_cai")
    records = world.prompts("train", n_prompts, seed, families=list(RED_TEAM))
    torch.manual_seed(seed)
    policy = load_policy_dir(sft_dir)
    initial = policy.generate([r.prompt for r in records], cfg.sampling, BACKEND_BATCH).texts
    del policy
    critic = load_local_backend(base_dir, BACKEND_BATCH)
    torch.manual_seed(seed)
    rows = run_rounds(critic, records, initial, constitution_for(None, world), cfg, seed)
    revised = [r["revision"] for r in rows]
    write_atomic(out, "".join(json.dumps(r) + "\n" for r in rows))
    return critic_rates(world, records, initial, revised)


# ---- one seed ----------------------------------------------------------------------------------
def run_seed(name: str, preset: str, seed: int, seed_dir: Path, n_prompts: int,
             n_eval: int | None) -> dict:
    """Every step of one seed (each cached in ``seed_dir``); returns the raw step results."""
    from prefopt.worlds import get_world

    world_cfg = {"name": name, "preset": preset, "seed": seed}
    world = get_world(name, preset=preset, seed=seed)
    steps: dict[str, dict] = {}

    def step(key: str, params: dict, fn: Callable[[], dict]) -> dict:
        path, params = seed_dir / f"{key}.json", {**world_cfg, **params}
        cached = is_cached(path, params)
        steps[key] = cached_step(path, params, fn)
        _log(seed, key, steps[key], cached)
        return steps[key]

    base = step("base", {}, lambda: {"model": str(world.base_model_dir(progress=True))})
    base_dir = base["model"]
    recipe = sft_recipe(preset, world_cfg, seed, seed_dir)
    sft = step("sft", {"recipe": recipe}, lambda: train_sft(recipe, seed_dir / "sft"))
    sft_dir = sft["model"]
    for key, model in (("eval-base", base_dir), ("eval-sft", sft_dir)):
        step(key, {"model": model, "n_eval": n_eval},
             lambda m=model, k=key: evaluate(m, world_cfg, seed, seed_dir / k, n_eval))
    pairs_path = seed_dir / "pairs.jsonl"
    pair_params = {"sft": sft_dir, "n_prompts": n_prompts}
    step("pairs", pair_params,
         lambda: sample_and_label(world, sft_dir, n_prompts, seed, pairs_path))
    step("judge", {**pair_params, "base": base_dir},
         lambda: judge_pairs(world, base_dir, *read_pairs(world, n_prompts, seed, pairs_path),
                             seed))
    n_critic = max(2, n_prompts // 2)
    step("critic", {"sft": sft_dir, "base": base_dir, "n_prompts": n_critic},
         lambda: critique(world, base_dir, sft_dir, n_critic, seed, preset,
                          seed_dir / "critic.jsonl"))
    return steps


COUNT_KEYS = ("n_prompts", "n_pairs", "n_identical", "n_gold_ties", "n_gold_decided")


def flatten_seed(steps: dict[str, dict]) -> dict[str, float | None]:
    """One flat {metric: number} row per seed (the keys of the tables)."""
    row: dict[str, float | None] = {}
    for model in ("base", "sft"):
        for k, v in steps[f"eval-{model}"]["metrics"].items():
            row[f"{model}/{k}"] = v
    for k in [k for k in row if k.startswith("sft/")]:
        base = row.get("base/" + k[4:])
        if base is not None and row[k] is not None and k.split("/")[1] == "gold":
            row["sft_minus_base/" + k[4:]] = row[k] - base
    row["eval/n_prompts"] = steps["eval-sft"]["n_prompts"]
    pairs = steps["pairs"]
    row.update({f"pairs/{k}": pairs[k] for k in (*COUNT_KEYS, "pool_soft_agreement_with_gold")})
    for pool in ("pool", "length_biased"):
        row.update({f"annotators/{pool}/{k}": v for k, v in pairs[pool].items()})
    row.update({f"judge/{k}": v for k, v in steps["judge"].items()
                if isinstance(v, (int, float)) and k != "seconds"})
    row.update({f"critic/{k}": v for k, v in steps["critic"].items()
                if (v is None or isinstance(v, (int, float))) and k != "seconds"})
    row.update({f"seconds/{k}": s["seconds"] for k, s in steps.items()})
    return row


# ---- the report --------------------------------------------------------------------------------
def world_report(name: str = "minihh", preset: str = "default",
                 seeds: int | Sequence[int] = (0, 1, 2), out: str | Path = "runs/world-report",
                 n_prompts: int | None = None, n_eval: int | None = None) -> dict:
    """Run (or resume) every seed, aggregate, write OUT/world_report.json and .md.

    ``seeds``: a count (0..seeds-1) or the seeds themselves; ``n_prompts``: pairs sampled from
    SFT and judged (the critic revises n_prompts // 2; default ``DEFAULT_N_PROMPTS``);
    ``n_eval``: evaluation prompts (default: the minihh suite's 200).
    """
    from prefopt.eval.harness import jsonable

    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    n_prompts = n_prompts or DEFAULT_N_PROMPTS.get(preset, DEFAULT_N_PROMPTS["default"])
    out = Path(out)
    t0 = time.perf_counter()
    per_seed = {s: flatten_seed(run_seed(name, preset, s, out / f"seed-{s}", n_prompts, n_eval))
                for s in seeds}
    report = {"world": name, "preset": preset, "seeds": seeds, "n_prompts": n_prompts,
              "n_critic": max(2, n_prompts // 2), "n_eval": n_eval,
              "summary": summarize_seeds(list(per_seed.values())),
              "per_seed": {str(s): row for s, row in per_seed.items()},
              "seconds": time.perf_counter() - t0}
    report = jsonable(report)
    write_atomic(out / "world_report.json", json.dumps(report, indent=2))
    write_atomic(out / "world_report.md", format_report(report))
    return report


# ---- markdown ----------------------------------------------------------------------------------
def fmt_stat(stat: dict | None, digits: int = 3) -> str:
    """"mean ± sd [min, max]" (no ± with one seed); "-" when missing."""
    if not stat:
        return "-"
    f = f"{{:.{digits}f}}"
    sd = "" if stat["sd"] is None else f" ± {f.format(stat['sd'])}"
    return f"{f.format(stat['mean'])}{sd} [{f.format(stat['min'])}, {f.format(stat['max'])}]"


def fmt_count(stat: dict | None) -> str:
    """A count over seeds: "241" when every seed has the same, else "mean [min, max]"."""
    if not stat:
        return "-"
    if stat["min"] == stat["max"]:
        return f"{stat['min']:.0f}"
    return f"{stat['mean']:.1f} [{stat['min']:.0f}, {stat['max']:.0f}]"


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _families(summary: dict) -> list[str]:
    return sorted({k.split("/", 2)[2] for k in summary if k.startswith("base/gold/")})


def gold_table(s: dict) -> list[str]:
    rows = [[fam, *(fmt_stat(s.get(f"{m}/gold{suffix}")) for m in ("base", "sft",
                                                                    "sft_minus_base"))]
            for fam, suffix in [("all", ""), *((f, f"/{f}") for f in _families(s))]]
    return _table(["family", "base", "SFT", "SFT − base"], rows)


def outcome_table(s: dict) -> list[str]:
    rows = [[o, fmt_stat(s.get(f"base/{o}")), fmt_stat(s.get(f"sft/{o}"))] for o in OUTCOMES]
    return _table(["outcome", "base", "SFT"], rows)


def section_table(s: dict, prefix: str, keys: Sequence[str]) -> list[str]:
    return _table(["measure", "value"], [[k, fmt_stat(s.get(f"{prefix}/{k}"),
                                                      1 if k.startswith("n_") else 3)]
                                         for k in keys])


ANNOTATOR_KEYS = ("inter_annotator_agreement", "majority_agreement_with_gold",
                  "annotator_agreement_with_gold", "majority_prefers_longer")
JUDGE_KEYS = ("agreement_with_gold", "agreement_first_order", "position_bias_rate",
              "unparseable_rate", "n_pairs", "n_gold_decided")
CRITIC_KEYS = ("revision_ge_original", "revision_gt_original", "gold_before", "gold_after",
               "harmful_compliance_before", "harmful_compliance_after", "over_refusal_before",
               "over_refusal_after", "empty_revision_rate", "n_harmful", "n_scary_benign")


def annotator_table(s: dict) -> list[str]:
    rows = [[k, fmt_stat(s.get(f"annotators/pool/{k}")),
             fmt_stat(s.get(f"annotators/length_biased/{k}"))] for k in ANNOTATOR_KEYS]
    return _table(["measure", "pool", "length-biased pool"], rows)


def format_report(report: dict) -> str:
    """The report as markdown tables: mean ± sd [min, max] over the seeds."""
    s = report["summary"]
    seeds = ", ".join(map(str, report["seeds"]))
    lines = [f"# World report: {report['world']} (preset {report['preset']}, seeds {seeds})", "",
             "Every cell: mean ± sample sd [min, max] over the seeds.", "",
             f"## Gold reward per family ({fmt_count(s.get('eval/n_prompts'))} test "
             "prompts)", "",
             *gold_table(s), "## Outcome rates", "", *outcome_table(s),
             f"## Annotators ({fmt_count(s.get('pairs/n_pairs'))} distinct SFT pairs of "
             f"{report['n_prompts']} train prompts; "
             f"{fmt_count(s.get('pairs/n_gold_decided'))} not tied by the gold)", "",
             *annotator_table(s),
             "## The base model as AI judge (same pairs)", "",
             *section_table(s, "judge", JUDGE_KEYS),
             f"## The base model as critic ({report['n_critic']} harmful + scary_benign "
             "prompts, SFT responses)", "", *section_table(s, "critic", CRITIC_KEYS),
             f"Total time: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
