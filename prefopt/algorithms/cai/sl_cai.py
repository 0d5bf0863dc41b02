"""SL-CAI: supervised learning on critiqued and revised responses (Bai et al. 2022, sec. 3).

1. The policy at ``model.path`` (the SFT model) answers each red-team prompt.
2. For ``n_rounds`` rounds, for every response: one principle is sampled at random, the
   critic (the ``critic`` backend) is asked, after the constitution's few-shot examples,
   for a critique under that principle and then for a revision; the revision is the
   response critiqued in the next round.
3. The revisions of *every* round become demonstrations (Bai et al. fine-tune on all of
   them), mixed with helpfulness demonstrations (the paper mixes in helpful samples so that
   harmlessness training does not erase helpfulness).
4. The SFT module (``prefopt.algorithms.sft.SFT``) fine-tunes the policy on that mix.

Every critique/revision is written to ``RUN_DIR/data/revisions.jsonl``; per-round
harmlessness and helpfulness under the world's classifiers go to ``summary.json["data"]``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prefopt.algorithms.cai.backends import ChatBackend
from prefopt.algorithms.cai.constitution import Constitution
from prefopt.algorithms.cai.judge import BackendConfig, backend_from_spec, constitution_for
from prefopt.algorithms.cai.prompts import critique_messages, few_shot_prefix, revision_messages
from prefopt.algorithms.sft import SFT, SFTConfig
from prefopt.data.records import Demonstration, PromptRecord
from prefopt.errors import ConfigError
from prefopt.policy.generate import SamplingConfig

RED_TEAM = ["harmful", "scary_benign"]
HELPFUL = ["arithmetic", "wordlist", "facts", "scary_benign", "open"]


@dataclass
class SLCAIConfig:
    n_rounds: int = 1
    """Critique/revision rounds per response (the paper: 4; open recipes: 1). Harmlessness
    rises with each round; each round costs two critic generations per prompt."""
    n_red_team: int = 256
    """Red-team prompts (world prompts of ``red_team_families``; with a prompt file in
    ``data.train``, its first n rows, 0 = all)."""
    red_team_families: list[str] = field(default_factory=lambda: list(RED_TEAM))
    """World families of the red-team prompts."""
    helpful_mix: float = 1.0
    """Helpfulness demonstrations mixed in per kept revision (1.0: as many as revisions;
    0: none). Fewer helpful samples make the model more evasive."""
    helpful_data: str | None = None
    """A demonstrations file for the helpfulness mix; None = the world's demonstrations of
    ``helpful_families``."""
    helpful_families: list[str] = field(default_factory=lambda: list(HELPFUL))
    """World families of the helpfulness demonstrations."""
    critic: BackendConfig = field(default_factory=BackendConfig)
    """Who critiques and revises: policy (the model being fine-tuned, before training),
    world (the world's base model), a model directory or an http(s):// server."""
    constitution: str | None = None
    """Constitution YAML; None = the world's constitution, or prefopt's default."""
    few_shot: bool = True
    """Prepend the constitution's worked critique/revision examples to every request."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the policy samples the initial responses."""
    critique_max_new_tokens: int = 64
    revision_max_new_tokens: int = 64
    critic_temperature: float = 0.7
    """Sampling temperature of critiques and revisions (0 = greedy, reproducible but less
    varied revisions)."""
    generation_batch_size: int = 32
    """Prompts per generate call of the policy."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The fine-tuning settings of the SFT module (completion_only, group_by_length)."""

    def validate(self) -> None:
        if self.n_rounds < 1:
            raise ConfigError(f"sl_cai.n_rounds must be >= 1, got {self.n_rounds}")
        if self.helpful_mix < 0:
            raise ConfigError(f"sl_cai.helpful_mix must be >= 0, got {self.helpful_mix}")


# ---- the critique/revision loop ----------------------------------------------------------
def critique_and_revise(critic: ChatBackend, records: list[PromptRecord], responses: list[str],
                        principles, prefix, cfg: SLCAIConfig) -> tuple[list[str], list[str]]:
    """One round: critique each response under its principle, then revise it."""
    convs = [critique_messages(r.prompt, y, p, prefix)
             for r, y, p in zip(records, responses, principles)]
    critiques = critic.generate(convs, cfg.critique_max_new_tokens, cfg.critic_temperature)
    convs = [revision_messages(r.prompt, y, c, p, prefix)
             for r, y, c, p in zip(records, responses, critiques, principles)]
    revisions = critic.generate(convs, cfg.revision_max_new_tokens, cfg.critic_temperature)
    return [c.strip() for c in critiques], [v.strip() for v in revisions]


def run_rounds(critic: ChatBackend, records: list[PromptRecord], initial: list[str],
               constitution: Constitution, cfg: SLCAIConfig, seed: int = 0) -> list[dict]:
    """``n_rounds`` critique/revision rounds; one row per (round, prompt), round-major.

    A principle is drawn uniformly at random for every critique/revision step (Bai et al.
    2022, sec. 3.1), from ``random.Random(seed)`` in (round, prompt) order.
    """
    rng = random.Random(seed)
    prefix = few_shot_prefix(constitution) if cfg.few_shot else []
    rows, current = [], list(initial)
    for k in range(1, cfg.n_rounds + 1):
        principles = [rng.choice(constitution.principles) for _ in records]
        critiques, revisions = critique_and_revise(critic, records, current, principles,
                                                   prefix, cfg)
        for r, p, y, c, v in zip(records, principles, current, critiques, revisions):
            rows.append({"id": r.id, "prompt": r.prompt, "family": r.family, "meta": r.meta,
                         "round": k, "principle": p.name, "response": y, "critique": c,
                         "revision": v})
        current = revisions
    return rows


# ---- metrics -------------------------------------------------------------------------------
def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def round_metrics(world, records: list[PromptRecord], responses: list[str]) -> dict:
    """Per-round quality of the responses.

    mean_words = mean whitespace word count. With a world, on its own prompts:
    harmlessness = 1 − (1/|H|) Σ_{x∈H} 1[harmful_compliance(x, y)] over harmful prompts H;
    over_refusal = (1/|S|) Σ_{x∈S} 1[refusal(x, y)] over scary_benign prompts S;
    gold_reward = mean gold reward over all of them (helpfulness + harmlessness + concision).
    """
    out = {"mean_words": _mean([float(len(y.split())) for y in responses])}
    if world is None:
        return out
    pairs = [(r, y) for r, y in zip(records, responses) if r.family in world.families]
    labels = [(r.family, world.classify(r, y)) for r, y in pairs]
    harmful = [c["harmful_compliance"] for f, c in labels if f == "harmful"]
    benign = [c["refusal"] for f, c in labels if f == "scary_benign"]
    gold = list(world.gold.score([r for r, _ in pairs], [y for _, y in pairs])) if pairs else []
    out.update(harmlessness=None if not harmful else 1 - _mean([float(h) for h in harmful]),
               over_refusal=_mean([float(b) for b in benign]), gold_reward=_mean(gold),
               n_harmful=len(harmful), n_scary_benign=len(benign))
    return out


def per_round_metrics(world, records, initial: list[str], rows: list[dict],
                      n_rounds: int) -> list[dict]:
    """``round_metrics`` of round 0 (the initial responses) and of each round's revisions."""
    n = len(records)
    out = [{"round": 0, **round_metrics(world, records, initial)}]
    for k in range(1, n_rounds + 1):
        revisions = [row["revision"] for row in rows[(k - 1) * n:k * n]]
        out.append({"round": k, **round_metrics(world, records, revisions)})
    return out


# ---- data ----------------------------------------------------------------------------------
def red_team_prompts(ctx, n: int, families: list[str]) -> list[PromptRecord]:
    """World prompts of ``families`` (train split) when ``data.train`` is a world source,
    else the first n prompts of the ``data.train`` file (all when n = 0)."""
    from prefopt.data import sources

    spec = ctx.cfg.data.train
    if spec.startswith("world:"):
        if ctx.world is None:
            raise ConfigError(f"data.train '{spec}' needs a world; set world.name")
        return ctx.world.prompts("train", n, ctx.cfg.train.seed, families=families)
    records = sources.prompts(ctx, "train")
    return records[:n] if n else records


def helpful_demonstrations(ctx, cfg: SLCAIConfig, n: int) -> list[Demonstration]:
    """n helpfulness demonstrations: a seeded sample of ``helpful_data``, or the world's
    demonstrations whose prompt family (the id prefix) is in ``helpful_families``."""
    if n == 0:
        return []
    seed = ctx.cfg.train.seed
    if cfg.helpful_data:
        from prefopt.data.loaders import load_demonstrations

        demos = load_demonstrations(cfg.helpful_data)
        return random.Random(seed).sample(demos, min(n, len(demos)))
    if ctx.world is None:
        raise ConfigError("sl_cai.helpful_mix > 0 needs sl_cai.helpful_data or a world")
    keep = set(cfg.helpful_families)
    demos = ctx.world.demonstrations("train", 2 * n + 16, seed)
    return [d for d in demos if d.id.rsplit("-", 1)[0] in keep][:n]


def revision_demonstrations(rows: list[dict]) -> list[Demonstration]:
    """One demonstration per non-empty revision, of every round."""
    return [Demonstration(r["prompt"], r["revision"], f"{r['id']}:round{r['round']}")
            for r in rows if r["revision"]]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def build(ctx) -> SFT:
    """SL-CAI from a recipe: generate, critique and revise, then the SFT module."""
    from prefopt.policy import load_policy

    cfg, params = ctx.cfg, ctx.cfg.params
    params.validate()
    device = ctx.accelerator.device
    policy = load_policy(cfg.model)
    policy.model.to(device)
    constitution = constitution_for(params.constitution, ctx.world)
    records = red_team_prompts(ctx, params.n_red_team, params.red_team_families)
    if not records:
        raise ConfigError("sl_cai: no red-team prompts")
    initial = policy.generate([r.prompt for r in records], params.sampling,
                              params.generation_batch_size).texts
    critic = backend_from_spec(params.critic, policy=policy, model_path=cfg.model.path,
                               world=ctx.world, device=device)
    rows = run_rounds(critic, records, initial, constitution, params, cfg.train.seed)
    del critic  # a separate critic model is freed before training
    revisions = revision_demonstrations(rows)
    helpful = helpful_demonstrations(ctx, params, round(params.helpful_mix * len(revisions)))
    ctx.reports["sl_cai"] = {
        "n_prompts": len(records), "n_rounds": params.n_rounds, "n_revisions": len(rows),
        "n_empty_revisions": len(rows) - len(revisions), "n_helpful": len(helpful),
        "n_train": len(revisions) + len(helpful), "constitution": constitution.name,
        "principles": dict(Counter(r["principle"] for r in rows)),
        "rounds": per_round_metrics(ctx.world, records, initial, rows, params.n_rounds)}
    if ctx.accelerator.is_main_process:
        write_jsonl(ctx.out / "data" / "revisions.jsonl", rows)
    from prefopt.data.sources import demonstrations

    return SFT(policy, revisions + helpful, params.sft,
               cfg.data.max_length, cfg.train.batch_size, cfg.train.seed,
               demonstrations(ctx, "eval"), shard=ctx.shard)
