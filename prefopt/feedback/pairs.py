"""Preference pairs sampled from a policy and labelled by the world's annotators.

For each prompt two responses are sampled from the policy (the SFT model, as in Ouyang et
al. 2022 and AlpacaFarm), then labelled: ``pool`` gives the soft label = vote share of the
simulated annotators (each vote a Bradley–Terry sample from the gold with its own noise);
``majority`` the hard majority vote; ``length_biased`` the vote share of annotators with a
length bias; ``gold`` the oracle label sign(r*(a) − r*(b)) (an ablation). The pair is
oriented so that ``chosen`` is the preferred response and ``label`` ≥ 0.5. Identical
responses carry no preference and are counted and dropped, and so are pairs with an empty
response (the data loaders refuse empty completions, so such a pair could not be read back). The pairs are written to
``RUN/data/pairs-SPLIT.jsonl`` and a report lands in summary.json.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

from prefopt.data.records import PreferencePair, PromptRecord
from prefopt.policy.generate import SamplingConfig


def label_pairs(world, records: list[PromptRecord], a: list[str], b: list[str],
                annotators: str, seed: int) -> list[float]:
    """P(a ≻ b) for each pair from the chosen labeller."""
    rng = random.Random(seed)
    if annotators == "gold":
        ra, rb = world.gold.score(records, a), world.gold.score(records, b)
        return [1.0 if x > y else 0.0 if x < y else 0.5 for x, y in zip(ra, rb)]
    pool = world.annotator_pool(length_biased=annotators == "length_biased", seed=seed)
    votes = [pool.label(r, x, y, rng) for r, x, y in zip(records, a, b)]
    if annotators == "majority":
        return [1.0 if 2 * sum(v) > len(v) else 0.0 for v in votes]
    return [sum(v) / len(v) for v in votes]


def orient(record: PromptRecord, a: str, b: str, p: float, pid: str,
           annotator: str) -> PreferencePair:
    """chosen = the preferred response, label = P(chosen ≻ rejected) ≥ 0.5."""
    if p >= 0.5:
        return PreferencePair(record.prompt, a, b, label=p, annotator=annotator, id=pid)
    return PreferencePair(record.prompt, b, a, label=1.0 - p, annotator=annotator, id=pid)


def sample_pairs(world, policy, records: list[PromptRecord], annotators: str,
                 temperature: float, seed: int, max_new_tokens: int = 48):
    """Two samples per prompt, labelled; returns (pairs, report)."""
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    prompts = [r.prompt for r in records]
    a = policy.generate(prompts, sampling).texts
    b = policy.generate(prompts, sampling).texts
    labels = label_pairs(world, records, a, b, annotators, seed)
    gold = world.gold.score(records, a), world.gold.score(records, b)
    pairs, identical, empty, agree, decided = [], 0, 0, 0, 0
    for i, (r, x, y, p) in enumerate(zip(records, a, b, labels)):
        if x == y:
            identical += 1
            continue
        if not x.strip() or not y.strip():
            empty += 1
            continue
        pairs.append(orient(r, x, y, p, f"{r.id}:{i}", annotators))
        if gold[0][i] != gold[1][i] and p != 0.5:
            decided += 1
            agree += (p > 0.5) == (gold[0][i] > gold[1][i])
    report = {"prompts": len(records), "pairs": len(pairs), "skipped/identical": identical,
              "skipped/empty": empty,
              "agreement_with_gold": agree / max(decided, 1), "annotators": annotators}
    return pairs, report


def world_pairs(ctx, world, policy, split: str, n: int) -> list[PreferencePair]:
    """Pairs for a run, sampled once and cached in the run directory."""
    from prefopt.errors import ConfigError

    path = Path(ctx.out) / "data" / f"pairs-{split}.jsonl"
    if path.is_file():
        from prefopt.data.loaders import load_preferences

        return load_preferences(path)
    if policy is None:
        raise ConfigError("data source world:pairs samples from a policy; this algorithm "
                          "gave none. Pass a pairs file in data.train instead.")
    data = ctx.cfg.data
    records = world.prompts(split, n, ctx.cfg.train.seed)
    pairs, report = sample_pairs(world, policy, records, data.annotators,
                                 data.pair_temperature, ctx.cfg.train.seed)
    write_pairs(pairs, path)
    ctx.reports[f"pairs/{split}"] = report
    return pairs


def write_pairs(pairs: list[PreferencePair], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    tmp.rename(path)
