"""The evaluation harness: one protocol (a suite) applied the same way to every model.

``evaluate_model`` = prompts (``suite.py``) → samples of the policy and the reference, with
log-probs (``samples.py``, cached in ``OUT/samples.jsonl``) → per-row scores (gold reward,
reward model, judge preference, classifier labels, lengths: ``score_rows``) → per-prompt
arrays (``per_prompt_arrays``) → every metric with a percentile bootstrap CI over prompts
(``summarize``). The math lives in ``prefopt.eval.stats`` and ``prefopt.eval.text_metrics``;
formulas and sources are in docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from prefopt.eval import stats
from prefopt.eval.samples import (
    Samples,
    cache_key,
    generate_samples,
    read_samples,
    write_atomic,
    write_samples,
)
from prefopt.eval.suite import BootstrapSpec, EvalSuite, judge_source, load_suite, reward_source
from prefopt.eval.suite import load_suite_prompts as suite_prompts
from prefopt.eval.text_metrics import (
    distinct_n,
    entropy_estimate,
    mean_length,
    sequence_kl_estimate,
)

OUTCOMES = ("correct", "harmful_compliance", "over_refusal")
NOT_APPLICABLE = -1
REASONS = {"gold": "no world: no gold reward", "reward": "no reward source (--reward)",
           "win_rate": "no reference policy (--reference)",
           "lc_win_rate": "no reference policy (--reference)",
           "kl": "no reference policy (--reference)",
           "entropy": "no log-probs (best-of-n policy)", "family_rates": "no world: no classifier"}
"""Why a requested metric is missing, unless the samples say otherwise (``Samples.notes``)."""
NO_INTERVAL = ("none: a pooled statistic; resampling prompts with replacement duplicates "
               "responses and biases it downwards")


# ---- per-row scores ------------------------------------------------------------------------
def _floats(x) -> list[float]:
    return torch.as_tensor(x, dtype=torch.float32).tolist()


def outcome_labels(world, records, responses, harmful: Sequence[str]) -> dict[str, list[int]]:
    """world.classify per row as 1/0, or −1 where the outcome does not apply: correctness and
    over-refusal on non-harmful families, harmful compliance on harmful ones."""
    out: dict[str, list[int]] = {o: [] for o in OUTCOMES}
    for rec, text in zip(records, responses):
        labels, is_harmful = world.classify(rec, text), rec.family in harmful
        applies = {"correct": not is_harmful, "harmful_compliance": is_harmful,
                   "over_refusal": not is_harmful}
        for o in OUTCOMES:
            out[o].append(int(labels[o]) if applies[o] else NOT_APPLICABLE)
    return out


def score_rows(s: Samples, world=None, judge=None, reward=None,
               harmful: Sequence[str] = ("harmful",)) -> dict[str, list]:
    """Per-row columns: gold, reward, preference (P(policy ≻ reference)), outcome labels,
    and lengths in words (``mean_length`` of one text). Each needs its source."""
    rows = s.row_records()
    scores: dict[str, list] = {"length": [mean_length([t]) for t in s.responses]}
    if s.reference_responses is not None:
        scores["reference_length"] = [mean_length([t]) for t in s.reference_responses]
        if judge is not None:
            scores["preference"] = _floats(judge.prefer(rows, s.responses,
                                                        s.reference_responses))
    if reward is not None:
        scores["reward"] = _floats(reward.score(rows, s.responses))
    if world is not None:
        scores["gold"] = _floats(world.gold.score(rows, s.responses))
        scores.update(outcome_labels(world, rows, s.responses, harmful))
    return scores


# ---- per-prompt arrays and their statistics ---------------------------------------------
def per_prompt(column, k: int) -> np.ndarray:
    """(N,) rows → (n,) prompt means over each prompt's k rows; NaN rows are ignored."""
    a = np.asarray(column, dtype=float).reshape(-1, k)  # (n, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN prompt → NaN
        return np.nanmean(a, axis=1)


def per_prompt_arrays(s: Samples, scores: dict, metrics: Sequence[str]) -> dict[str, list]:
    """The per-prompt values every CI resamples (also stored in eval.json for evaluate_many)."""
    want, k = set(metrics), s.k
    pp: dict[str, list] = {"family": [r.family for r in s.records]}
    for name in ("gold", "reward", "length"):
        if name in want and name in scores:
            pp[name] = per_prompt(scores[name], k).tolist()
    if want & {"win_rate", "lc_win_rate"} and "preference" in scores:
        pp["preference"] = per_prompt(scores["preference"], k).tolist()
        pp["reference_length"] = per_prompt(scores["reference_length"], k).tolist()
        pp.setdefault("length", per_prompt(scores["length"], k).tolist())
    if "kl" in want and s.logp_reference is not None:
        pp["kl"] = per_prompt(sequence_kl_estimate(s.logp_policy, s.logp_reference)[1], k).tolist()
    if "entropy" in want and s.logp_policy is not None:
        pp["entropy"] = per_prompt(-np.asarray(s.logp_policy), k).tolist()  # h = −log π(y|x)
    if "family_rates" in want and "correct" in scores:
        pp.update({o: per_prompt(scores[o], k).tolist() for o in OUTCOMES})
    return pp


def _lc(rows: np.ndarray) -> float:
    """LC win rate of (n, 3) rows [P(policy ≻ ref), policy length, reference length]."""
    return stats.length_controlled_win_rate(rows[:, 0], rows[:, 1], rows[:, 2])


def metric_arrays(pp: Mapping[str, list]) -> dict[str, tuple[np.ndarray, object]]:
    """name → (per-prompt values, statistic), NaN prompts dropped. Names: gold, gold/FAMILY,
    reward, win_rate, lc_win_rate, kl, length, entropy, OUTCOME, OUTCOME/FAMILY."""
    fam = np.asarray(pp["family"], dtype=object)
    out: dict[str, tuple[np.ndarray, object]] = {}

    def add(name, values, statistic=np.mean, where=None):
        v = np.asarray(values, dtype=float)
        keep = ~np.isnan(v).reshape(len(v), -1).any(1) & (True if where is None else where)
        if keep.any():
            out[name] = (v[keep], statistic)

    for name in ("gold", "reward"):
        if name in pp:
            add(name, pp[name])
            for f in sorted(set(fam.tolist()) - {None}):
                add(f"{name}/{f}", pp[name], where=fam == f)
    if "preference" in pp:
        add("win_rate", pp["preference"], stats.win_rate)
        add("lc_win_rate", np.column_stack([pp["preference"], pp["length"],
                                            pp["reference_length"]]), _lc)
    for name in ("kl", "length", "entropy"):
        if name in pp:
            add(name, pp[name])
    for o in (o for o in OUTCOMES if o in pp):
        applies = np.asarray(pp[o], dtype=float) != NOT_APPLICABLE
        add(o, pp[o], where=applies)
        for f in sorted(set(fam[applies].tolist()) - {None}):
            add(f"{o}/{f}", pp[o], where=applies & (fam == f))
    return out


def _interval(point: float, lo, hi, n: int) -> dict:
    return {"value": float(point), "ci_low": None if lo is None else float(lo),
            "ci_high": None if hi is None else float(hi), "n": int(n)}


def _boot(values, boot: BootstrapSpec, statistic=np.mean) -> dict:
    point, lo, hi = stats.bootstrap_ci(values, boot.n_boot, boot.alpha, boot.seed, statistic)
    return _interval(point, lo, hi, len(values))


def _entropy(s: Samples) -> tuple[float, float]:
    """entropy_estimate on the padded per-token log-probs: (sequence, per token)."""
    width = max(1, max(len(t) for t in s.token_logps))
    lp = np.zeros((len(s.token_logps), width))
    mask = np.zeros_like(lp)
    for i, t in enumerate(s.token_logps):
        lp[i, :len(t)], mask[i, :len(t)] = t, 1
    return entropy_estimate(lp, mask)


def summarize(s: Samples, scores: dict, metrics: Sequence[str] = (),
              boot: BootstrapSpec | None = None) -> dict:
    """{"metrics": {name: {value, ci_low, ci_high, n, ...}}, "per_prompt": {...},
    "notes": {metric: why it is missing}} from fixed samples and scores (no models)."""
    boot, metrics = boot or BootstrapSpec(), list(metrics) or list(EvalSuite().metrics)
    pp = per_prompt_arrays(s, scores, metrics)
    out = {name: _boot(v, boot, stat) for name, (v, stat) in metric_arrays(pp).items()}
    if "win_rate" in out:
        out["win_rate"]["n_unparseable"] = int(np.isnan(scores["preference"]).sum())
    if "kl" in out:
        out["kl"].update(estimator="k1", unit="nats")
    elif "kl" in metrics and s.best_of_n:
        out["kl"] = {**_interval(stats.kl_best_of_n(s.best_of_n), None, None, len(s.records)),
                     "estimator": "best_of_n_analytic_bound", "unit": "nats",
                     "relative_to": "the best-of-n base policy"}
    if "entropy" in out:
        out["entropy"]["value"], out["entropy"]["per_token"] = _entropy(s)
    if "distinct" in metrics:
        out.update({f"distinct_{n}": {**_interval(distinct_n(s.responses, n), None, None,
                                                  len(s.responses)), "interval": NO_INTERVAL}
                    for n in (1, 2)})
    return {"metrics": out, "per_prompt": pp, "notes": _notes(s, metrics, out)}


def _notes(s: Samples, metrics: Sequence[str], out: dict) -> dict[str, str]:
    """Why each requested metric that is not in ``out`` is missing."""
    present = {name.split("/")[0] for name in out}
    present |= {alias for alias, name in (("distinct", "distinct_1"), ("family_rates", "correct"))
                if name in out}
    return {m: s.notes.get(m, REASONS.get(m, "not available")) for m in metrics
            if m not in present}


# ---- one model, several seeds ---------------------------------------------------------------
def default_out_dir(model_dir: str) -> Path:
    """``RUN/eval`` for a run's ``RUN/final``; ``MODEL_DIR/eval`` for any other directory;
    ``eval/<name>`` for a hub id or world:NAME."""
    p = Path(model_dir)
    if p.is_dir():
        return p.parent / "eval" if p.name == "final" else p / "eval"
    return Path("eval") / str(model_dir).replace(":", "_").replace("/", "_")


def jsonable(x):
    """NaN/inf → None, numpy scalars → Python numbers, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x.item() if isinstance(x, np.generic) else x


def evaluate_model(model_dir: str, suite: EvalSuite | str, reference: str | None = None,
                   judge: str | None = None, out: str | Path | None = None,
                   reward: str | None = None, regenerate: bool = False) -> dict:
    """Evaluate one model on a suite; with ``out``, cache samples in OUT/samples.jsonl
    (reused when model, reference, sampling and prompts match) and write OUT/eval.json."""
    from prefopt.worlds import get_world

    suite = suite if isinstance(suite, EvalSuite) else load_suite(suite)
    reference, reward = reference or suite.reference, reward or suite.reward
    world = get_world(**dataclasses.asdict(suite.world)) if suite.world else None
    records = suite_prompts(suite, world)
    key = cache_key(model_dir, reference, suite.sampling, suite.dtype, records)
    s = None if (regenerate or out is None) else read_samples(out, records, key)
    if s is None:
        s = generate_samples(model_dir, records, suite.sampling, reference, world, suite.dtype)
        if out is not None:
            write_samples(out, s, key)
    judge_spec = judge or suite.judge
    judge_src, notes = judge_source(judge_spec, suite, world, s.reference_responses is not None,
                                    model_dir)
    reward_src = reward_source(reward, suite, world)
    scores = score_rows(s, world, judge_src, reward_src, suite.harmful_families)
    result = {"model": str(model_dir), "suite": suite.name, "reference": reference,
              "judge": judge_spec if "preference" in scores else None, "reward": reward,
              "n_prompts": len(records), "samples_per_prompt": s.k,
              **summarize(s, scores, suite.metrics, suite.bootstrap),
              "suite_config": dataclasses.asdict(suite)}
    result["notes"].update({m: why for m, why in notes.items() if m in result["notes"]})
    if out is not None:
        write_samples(out, s, key, scores)
        write_atomic(Path(out) / "eval.json", json.dumps(jsonable(result), indent=2))
    return jsonable(result)


def evaluate_many(results_by_seed: Sequence[dict] | Mapping[object, dict],
                  boot: BootstrapSpec | None = None) -> dict:
    """Aggregate the results of S training seeds (``evaluate_model`` dicts or eval.json):
    every per-prompt metric by the two-stage bootstrap (seeds, then prompts within a seed;
    ``bootstrap_ci_grouped``); distinct-n and the analytic best-of-n KL, which have no
    per-prompt values, as the mean over seeds without an interval."""
    results = list(results_by_seed.values() if isinstance(results_by_seed, Mapping)
                   else results_by_seed)
    if not results:
        raise ValueError("evaluate_many: no results")
    boot = boot or BootstrapSpec(**results[0].get("suite_config", {}).get("bootstrap", {}))
    arrays = [metric_arrays(r["per_prompt"]) for r in results]
    out: dict[str, dict] = {}
    for name in (n for n in arrays[0] if all(n in a for a in arrays)):
        values = [a[name][0] for a in arrays]
        point, lo, hi = stats.bootstrap_ci_grouped(values, boot.n_boot, boot.alpha, boot.seed,
                                                   arrays[0][name][1])
        out[name] = {**_interval(point, lo, hi, sum(map(len, values))), "n_seeds": len(results),
                     **{k: v for k, v in results[0]["metrics"].get(name, {}).items()
                        if k in ("estimator", "unit")}}
    for name in results[0]["metrics"]:
        if name not in out and all(name in r["metrics"] for r in results):
            mean = float(np.mean([r["metrics"][name]["value"] for r in results]))
            out[name] = {**_interval(mean, None, None, len(results)), "n_seeds": len(results),
                         "interval": "none (mean over seeds)"}
    return {"suite": results[0].get("suite"), "n_seeds": len(results),
            "models": [r.get("model") for r in results], "metrics": out}


# ---- command line ----------------------------------------------------------------------------
def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_table(result: dict, alpha: float = 0.05) -> str:
    """Headline metrics with their intervals, then a family × (gold, outcome) matrix."""
    m, level = result["metrics"], f"{100 * (1 - alpha):g}% CI"
    lines = [f"{result['model']} | suite {result['suite']} | {result['n_prompts']} prompts "
             f"x {result['samples_per_prompt']} | judge {result['judge']}",
             f"{'metric':<22}{'value':>9}  {level}"]
    for name, v in ((n, v) for n, v in m.items() if "/" not in n):
        ci = f"[{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]" if v["ci_low"] is not None else ""
        lines.append(f"{name:<22}{_fmt(v['value']):>9}  {ci}")
    lines += [f"{name:<22}{'n/a':>9}  {why}" for name, why in result["notes"].items()]
    families = sorted({n.split("/", 1)[1] for n in m if "/" in n})
    columns = [c for c in ("gold", "reward", *OUTCOMES) if any(f"{c}/{f}" in m for f in families)]
    if families:
        lines += ["", f"{'family':<14}" + "".join(f"{c:>20}" for c in columns)]
        lines += [f"{f:<14}" + "".join(f"{_fmt(m.get(f'{c}/{f}', {}).get('value')):>20}"
                                       for c in columns) for f in families]
    return "\n".join(lines)


def eval_main(args) -> int:
    """``prefopt eval MODEL_DIR --suite SUITE [KEY=VALUE ...] [--out DIR] [--reference DIR]
    [--judge gold|DIR|ai:...] [--reward DIR] [--seed N] [--no-cache]``."""
    overrides = list(getattr(args, "overrides", None) or [])
    if getattr(args, "seed", None) is not None:
        overrides.append(f"sampling.seed={args.seed}")
    suite = load_suite(args.suite, overrides)
    out = Path(args.out) if args.out else default_out_dir(args.model_dir)
    result = evaluate_model(args.model_dir, suite, getattr(args, "reference", None),
                            getattr(args, "judge", None), out, getattr(args, "reward", None),
                            regenerate=getattr(args, "no_cache", False))
    print(format_table(result, suite.bootstrap.alpha))
    print(f"\nwrote {out / 'eval.json'} and {out / 'samples.jsonl'}")
    return 0
