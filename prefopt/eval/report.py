"""The compare report: ``results.json``, ``report.md`` and PNG plots.

The table marks the best value of each column in bold (highest gold, win rates and
correctness; lowest harmful compliance and over-refusal); KL and length are context, not
goals. A short reading is generated from the numbers by fixed rules, never written by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from prefopt.eval.plots import plot_frontier, plot_overoptimisation, plot_training

COLUMNS = [  # (metric, header, better)
    ("gold", "gold reward", "max"),
    ("win_rate", "win rate vs ref", "max"),
    ("lc_win_rate", "LC win rate", "max"),
    ("correct", "correct", "max"),
    ("harmful_compliance", "harmful compliance", "min"),
    ("over_refusal", "over-refusal", "min"),
    ("kl", "KL(π‖ref) nats", None),
    ("length", "length (words)", None),
]
BUDGET_KEYS = [("train/steps", "optimizer steps"), ("time/total_s", "wall s"),
               ("mem/peak_rss_mb", "peak RSS MiB"), ("gen/tokens", "tokens generated"),
               ("gen/prompts", "prompts sampled")]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect_results(cfg, out: Path, seeds: int) -> dict:
    """Every metric per method and seed, the seed aggregate, and each stage's budget."""
    from prefopt.eval.harness import evaluate_many

    methods, stages = {}, {}
    for name in cfg.methods:
        per_seed = [_read(out / f"seed-{s}" / name / "eval" / "eval.json") for s in range(seeds)]
        per_seed = [r for r in per_seed if r is not None]
        agg = evaluate_many(per_seed)["metrics"] if len(per_seed) > 1 else \
            per_seed[0]["metrics"]
        methods[name] = {"aggregate": agg,
                         "per_seed": [{k: v["value"] for k, v in r["metrics"].items()}
                                      for r in per_seed]}
    for name in cfg.stages:
        summaries = [_read(out / f"seed-{s}" / name / "summary.json") for s in range(seeds)]
        stages[name] = [_budget(s) for s in summaries if s is not None]
    results = {"methods": methods, "stages": stages, "seeds": seeds,
               "reference": cfg.reference, "suite": cfg.suite, "budget_notes": cfg.budget,
               "world": cfg.world, "curves": _curves(cfg, out, seeds)}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=float))
    tmp.rename(out / "results.json")
    return results


def _budget(summary: dict) -> dict:
    row = {label: summary.get(key) for key, label in BUDGET_KEYS}
    labels = {}
    for key, rep in (summary.get("data") or {}).items():
        if key.startswith("pairs/") and isinstance(rep, dict):
            labels[f"annotator labels ({key.split('/')[1]})"] = rep.get("pairs")
        if key == "labeler" and isinstance(rep, dict):
            labels["AI labels"] = rep.get("labels/n", rep.get("n"))
    return {**row, **labels}


def _curves(cfg, out: Path, seeds: int) -> dict:
    """Per tracked stage and seed: the eval/* rows logged along training."""
    from prefopt.engine.metrics import read_metrics

    curves = {}
    for name in cfg.stages:
        runs = []
        for s in range(seeds):
            rows = read_metrics(out / f"seed-{s}" / name / "metrics.jsonl")
            runs.append([{k: v for k, v in r.items() if k == "step" or k.startswith("eval/")
                          or k in ("loss", "objective/scores", "objective/kl")} for r in rows])
        curves[name] = runs
    return curves


def _fmt(m: dict | None) -> str:
    if m is None or m.get("value") is None:
        return "–"
    v = f"{m['value']:.3f}"
    if m.get("ci_low") is not None:
        v += f" [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"
    return v


def table(results: dict) -> str:
    methods = results["methods"]
    best = {}
    for key, _, better in COLUMNS:
        vals = {n: m["aggregate"].get(key, {}).get("value") for n, m in methods.items()}
        vals = {n: v for n, v in vals.items() if v is not None and math.isfinite(v)}
        if better and vals:
            best[key] = (max if better == "max" else min)(vals, key=vals.get)
    head = "| method | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for n, m in methods.items():
        cells = []
        for key, _, _ in COLUMNS:
            cell = _fmt(m["aggregate"].get(key))
            cells.append(f"**{cell}**" if best.get(key) == n else cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_table(results: dict) -> str:
    keys = []
    for rows in results["stages"].values():
        for r in rows:
            keys += [k for k in r if k not in keys]
    lines = ["| stage | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for name, rows in results["stages"].items():
        if not rows:
            continue
        cells = []
        for k in keys:
            vals = [r.get(k) for r in rows if r.get(k) is not None]
            cells.append("–" if not vals else f"{sum(vals) / len(vals):.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reading(results: dict) -> list[str]:
    """A few sentences derived from the numbers by fixed rules."""
    methods, ref = results["methods"], results["reference"]
    gold = {n: m["aggregate"].get("gold", {}).get("value") for n, m in methods.items()}
    gold = {n: v for n, v in gold.items() if v is not None}
    out = []
    if gold:
        top = max(gold, key=gold.get)
        out.append(f"Highest gold reward: **{top}** ({gold[top]:.3f}).")
        if ref in gold:
            above = [n for n in gold if n != ref and gold[n] > gold[ref]]
            below = [n for n in gold if n != ref and gold[n] <= gold[ref]]
            out.append(f"Above {ref} ({gold[ref]:.3f}) on the gold reward: "
                       f"{', '.join(above) or 'none'}; not above: {', '.join(below) or 'none'}.")
    out += _overopt_sentences(results)
    out += _tradeoff_sentences(methods, ref)
    return out


def _overopt_sentences(results: dict) -> list[str]:
    out = []
    for name, runs in results["curves"].items():
        rows = [r for r in (runs[0] if runs else []) if "eval/gold" in r and "eval/proxy" in r]
        if len(rows) < 3:
            continue
        gold = [r["eval/gold"] for r in rows]
        proxy = [r["eval/proxy"] for r in rows]
        peak = int(np.argmax(gold))
        shape = ("peaked and fell" if peak < len(gold) - 1 and gold[-1] < gold[peak] - 0.02
                 else "did not fall")
        out.append(f"{name}: the proxy score went {proxy[0]:.2f} → {proxy[-1]:.2f} while "
                   f"the gold reward went {gold[0]:.2f} → max {gold[peak]:.2f} at step "
                   f"{rows[peak]['step']} → {gold[-1]:.2f} ({shape}).")
    return out


def _tradeoff_sentences(methods: dict, ref: str) -> list[str]:
    if ref not in methods:
        return []
    base = methods[ref]["aggregate"]
    out = []
    for n, m in methods.items():
        if n == ref or "cai" not in n:
            continue
        a = m["aggregate"]
        hc, orf = a.get("harmful_compliance"), a.get("over_refusal")
        bhc, borf = base.get("harmful_compliance"), base.get("over_refusal")
        if hc and bhc and orf and borf:
            out.append(f"{n}: harmful compliance {bhc['value']:.2f} → {hc['value']:.2f}, "
                       f"over-refusal {borf['value']:.2f} → {orf['value']:.2f} vs {ref}.")
    return out


def write_report(cfg, results: dict, out: Path) -> Path:
    plots = {"frontier": plot_frontier(results, out / "frontier.png"),
             "overoptimisation": plot_overoptimisation(results, out / "overoptimisation.png"),
             "training": plot_training(results, out / "training.png")}
    lines = [f"# prefopt compare: {', '.join(results['methods'])}", "",
             f"World `{results['world']}`, suite `{results['suite']}`, {results['seeds']} "
             f"seed(s); win rates and KL against `{results['reference']}`. Values are means "
             "with 95% bootstrap intervals (over prompts, and over seeds when there are "
             "several); **bold** marks the best of a column.", "", table(results), "",
             "## Reading", "", *[f"- {s}" for s in reading(results)], "",
             "## Budgets per stage (mean over seeds)", "", budget_table(results), ""]
    if results.get("budget_notes"):
        lines += ["How budgets were matched:", "",
                  *[f"- {k}: {v}" for k, v in results["budget_notes"].items()], ""]
    lines += ["## Plots", "", *[f"![{k}]({p.name})" for k, p in plots.items()], ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
