"""RL-CAI: reinforcement learning from AI feedback (Bai et al. 2022, sec. 4; Lee et al. 2023).

Two responses per prompt are sampled from the SL-CAI model (``model.path``) and labelled by
the AI judge (``prefopt.algorithms.cai.judge.AIJudge``: one principle per comparison, soft
labels from the (A)/(B) log-probs, both orders averaged). Then, by ``target``:

- ``reward``: a preference model trained on the soft labels with the soft Bradley–Terry
  loss (``prefopt.algorithms.reward.RewardModule``), for PPO in a second run;
- ``dpo``: DPO directly on the AI-labelled pairs (``prefopt.algorithms.dpo.DPO``);
- ``dpo_revisions``: the cheap open variant, DPO on (revision ≻ original response) pairs
  read from an SL-CAI ``revisions.jsonl`` (no sampling, no judge).

The modules are built directly from the in-memory pairs (no derived config, no reload);
the pairs are also written to ``RUN_DIR/data/ai_labels.jsonl`` in the preference-file
format, so they can be inspected or reused by a plain ``reward``/``dpo`` recipe. Labeler
quality (agreement with the gold or human reference, position-bias rate, unparseable share)
goes to ``summary.json["data"]["labeler"]`` on every run.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from prefopt.algorithms.cai.judge import JudgeConfig, constitution_for, judge_from_config
from prefopt.algorithms.cai.labels import LabelStats
from prefopt.algorithms.cai.sl_cai import red_team_prompts, write_jsonl
from prefopt.algorithms.dpo import DPOConfig
from prefopt.algorithms.reward import RewardConfig
from prefopt.data.records import PreferencePair, PromptRecord
from prefopt.errors import ConfigError
from prefopt.policy.generate import SamplingConfig


@dataclass
class RLCAIConfig:
    target: Literal["reward", "dpo", "dpo_revisions"] = "reward"
    """reward: train a preference model on the AI labels (then PPO); dpo: DPO on the AI
    labelled pairs; dpo_revisions: DPO on (revision ≻ original) pairs of ``revisions``."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The AI labeler: backend, chain of thought, clamp (see JudgeConfig)."""
    constitution: str | None = None
    """Constitution YAML; None = the world's constitution, or prefopt's default."""
    n_prompts: int = 256
    """Prompts to sample pairs for (world prompts, or the first n of a prompt file; 0 =
    all of the file). Each costs two generations and two judge calls."""
    prompt_families: list[str] | None = None
    """World families of the prompts; None = all families (the constitution covers
    helpfulness as well as harmlessness)."""
    temperature: float = 1.0
    """Sampling temperature of the two responses (lower: more identical, dropped pairs)."""
    max_new_tokens: int = 48
    generation_batch_size: int = 32
    pairs: str | None = None
    """A preference-pair file to relabel instead of sampling; its own labels (human) are
    the reference for the labeler's agreement."""
    revisions: str = "runs/toy/sl_cai/data/revisions.jsonl"
    """target=dpo_revisions: the SL-CAI run's revisions file."""
    eval_fraction: float = 0.1
    """Share of the labelled pairs held out for the module's evaluation."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """target=reward: the preference model's settings."""
    dpo: DPOConfig = field(default_factory=DPOConfig)
    """target=dpo / dpo_revisions: the DPO settings (soft labels by default)."""


@dataclass
class Comparisons:
    """Pairs to label: records[i] with responses a[i], b[i]; ``reference`` labels or None."""

    records: list[PromptRecord]
    a: list[str]
    b: list[str]
    reference: list[float | None]
    reference_name: str | None = None
    n_identical: int = 0


# ---- where the pairs come from -----------------------------------------------------------
def gold_reference(world, records, a, b) -> list[float | None]:
    """1 / 0 as the gold reward prefers a / b; None on a gold tie (left out of agreement)."""
    g_a, g_b = world.gold.score(records, a), world.gold.score(records, b)
    return [None if x == y else float(x > y) for x, y in zip(g_a, g_b)]


def drop_identical(records, a, b) -> tuple[list, list, list, int]:
    """Pairs whose two responses differ, and how many were identical."""
    keep = [i for i, (x, y) in enumerate(zip(a, b)) if x.strip() != y.strip()]
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return pick(records), pick(a), pick(b), len(a) - len(keep)


def sampled_comparisons(policy, records: list[PromptRecord], cfg: RLCAIConfig,
                        world=None) -> Comparisons:
    """Two samples per prompt from ``policy``; identical pairs dropped; gold reference."""
    prompts = [r.prompt for r in records]
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature)
    texts = policy.generate(prompts + prompts, sampling, cfg.generation_batch_size).texts
    n = len(records)
    records, a, b, n_same = drop_identical(records, texts[:n], texts[n:])
    known = world is not None and all(r.family in world.families for r in records)
    ref = gold_reference(world, records, a, b) if known else [None] * len(records)
    return Comparisons(records, a, b, ref, "gold" if known else None, n_same)


def file_comparisons(path: str) -> Comparisons:
    """The pairs of a preference file, their labels as the (human) reference."""
    from prefopt.data.loaders import load_preferences

    pairs = load_preferences(path)
    return Comparisons([PromptRecord(p.prompt, id=p.id) for p in pairs],
                       [p.chosen for p in pairs], [p.rejected for p in pairs],
                       [p.label for p in pairs], "human")


def revision_comparisons(path: str | Path, world=None) -> Comparisons:
    """(revision, original response) of every row of an SL-CAI revisions.jsonl; label 1."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"rl_cai.revisions: {path} not found (run recipes/toy/sl_cai.yaml "
                          "first, or point rl_cai.revisions at its data/revisions.jsonl)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    records = [PromptRecord(r["prompt"], f"{r['id']}:round{r['round']}", r.get("family"),
                            r.get("meta") or {}) for r in rows]
    records, a, b, n_same = drop_identical(records, [r["revision"] for r in rows],
                                           [r["response"] for r in rows])
    known = world is not None and all(r.family in world.families for r in records)
    ref = gold_reference(world, records, a, b) if known else [None] * len(records)
    return Comparisons(records, a, b, ref, "gold" if known else None, n_same)


# ---- labels to pairs ---------------------------------------------------------------------
def labelled_pairs(c: Comparisons, labels: list[float | None],
                   annotators: list[str]) -> list[PreferencePair]:
    """PreferencePairs oriented so ``chosen`` is the AI's pick (label = max(p, 1 − p));
    unparseable (None) labels are dropped."""
    out = []
    for r, x, y, p, who in zip(c.records, c.a, c.b, labels, annotators):
        if p is None:
            continue
        chosen, rejected, label = (x, y, p) if p >= 0.5 else (y, x, 1.0 - p)
        out.append(PreferencePair(r.prompt, chosen, rejected, label, annotator=who, id=r.id))
    return out


def labeler_report(stats: LabelStats, c: Comparisons, principles: list[str],
                   labels: list[float | None], n_from_text: int = 0) -> dict:
    """Counts and rates of the labeler (formulas in docs/cai.md); n = pairs judged,
    n_labelled + n_unparseable = n, n + n_identical = pairs sampled."""
    kept = [p for p in labels if p is not None]
    return {**stats.as_dict(prefix=""), "n_labelled": len(kept), "n_identical": c.n_identical,
            "n_from_text": n_from_text, "reference": c.reference_name,
            "mean_confidence": sum(abs(2 * p - 1) for p in kept) / len(kept) if kept else None,
            "principles": dict(Counter(principles))}


def split_held_out(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out): a seeded ``fraction`` held out, at least one pair kept to train."""
    order = random.Random(seed).sample(range(len(pairs)), len(pairs))
    n_eval = min(round(fraction * len(pairs)), max(len(pairs) - 1, 0))
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def write_pairs(path: Path, pairs: list[PreferencePair]) -> None:
    write_jsonl(path, [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                        "label": p.label, "annotator": p.annotator, "id": p.id} for p in pairs])


# ---- the modules -------------------------------------------------------------------------
def label_with_judge(ctx, policy, c: Comparisons) -> list[PreferencePair]:
    """Judge ``c`` (backend "policy" = ``policy``), report, return the labelled pairs."""
    params = ctx.cfg.params
    judge = judge_from_config(params.judge, constitution_for(params.constitution, ctx.world),
                              ctx.cfg.train.seed, policy=policy, model_path=ctx.cfg.model.path,
                              world=ctx.world, device=ctx.accelerator.device)
    j = judge.judge(c.records, c.a, c.b, c.reference)
    ctx.reports["labeler"] = labeler_report(j.stats, c, j.principles, j.labels, j.n_from_text)
    return labelled_pairs(c, j.labels, [f"ai:{name}" for name in j.principles])


def label_revisions(ctx) -> list[PreferencePair]:
    """(revision ≻ original) pairs with label 1, reported like judge labels (P = 1)."""
    c = revision_comparisons(ctx.cfg.params.revisions, ctx.world)
    labels = [1.0] * len(c.records)
    stats = LabelStats()
    for ref in c.reference:
        stats.add(1.0, reference=ref)
    ctx.reports["labeler"] = labeler_report(stats, c, [], labels)
    return labelled_pairs(c, labels, ["sl_cai_revision"] * len(labels))


def comparisons_for(ctx, policy) -> Comparisons:
    """The pairs to judge: a preference file (``rl_cai.pairs``) or two policy samples."""
    params = ctx.cfg.params
    if params.pairs:
        return file_comparisons(params.pairs)
    records = red_team_prompts(ctx, params.n_prompts, params.prompt_families)
    return sampled_comparisons(policy, records, params, ctx.world)


def build_reward(ctx, train, held_out):
    """RewardModule on the AI-labelled pairs (soft Bradley–Terry), as reward.build does."""
    from prefopt.algorithms.reward import RewardModule, sample_prompts
    from prefopt.policy import ModelConfig
    from prefopt.policy.heads import new_scalar_model
    from prefopt.policy.load import load_tokenizer

    cfg, params = ctx.cfg, ctx.cfg.params
    sft = ModelConfig(path=cfg.model.path, mode="full", dtype=cfg.model.dtype,
                      trust_remote_code=cfg.model.trust_remote_code)
    norm = sample_prompts([p.prompt for p in train], params.reward.n_normalize, cfg.train.seed)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    model = new_scalar_model(cfg.model, tokenizer)
    model.to(ctx.accelerator.device)
    return RewardModule(model, tokenizer, train, params.reward, cfg.data.max_length,
                        cfg.train.batch_size, cfg.train.seed, held_out, norm, sft,
                        shard=ctx.shard)


def build_dpo(ctx, policy, train, held_out):
    from prefopt.algorithms.dpo import DPO

    cfg = ctx.cfg
    dpo = cfg.params.dpo
    cache = dpo.ref_cache_dir or ctx.out / "reference_cache"
    return DPO(policy, train, dpo, cfg.data.max_length, cfg.train.batch_size, cfg.train.seed,
               held_out, shard=ctx.shard, cache_dir=cache, reports=ctx.reports)


def build(ctx):
    """RL-CAI from a recipe: pairs, AI labels, labeler report, then the target module."""
    from prefopt.policy import load_policy

    cfg, params = ctx.cfg, ctx.cfg.params
    if params.target != "reward":
        params.dpo.validate(cfg.model.mode)
    # DPO trains the sampling policy itself; the preference model needs it only to sample
    # (or to judge, with judge.backend=policy).
    policy = None
    if params.target != "reward" or not params.pairs or params.judge.backend == "policy":
        policy_cfg = cfg.model if params.target != "reward" else replace(cfg.model, mode="full")
        policy = load_policy(policy_cfg)
        policy.model.to(ctx.accelerator.device)
    if params.target == "dpo_revisions":
        pairs = label_revisions(ctx)
    else:
        pairs = label_with_judge(ctx, policy, comparisons_for(ctx, policy))
    if not pairs:
        raise ConfigError("rl_cai: no labelled pairs (all identical or unparseable): "
                          + json.dumps(ctx.reports["labeler"]))
    if ctx.accelerator.is_main_process:
        write_pairs(ctx.out / "data" / "ai_labels.jsonl", pairs)
    train, held_out = split_held_out(pairs, params.eval_fraction, cfg.train.seed)
    if params.target == "reward":
        del policy  # not held while the preference model trains
        return build_reward(ctx, train, held_out)
    return build_dpo(ctx, policy, train, held_out)
