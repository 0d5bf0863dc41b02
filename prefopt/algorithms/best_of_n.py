"""Best-of-n: sample n responses per prompt from the policy, keep the highest-scoring one.

A baseline every comparison needs (Stiennon et al. 2020; Gao et al. 2022; Dubois et al.
2023). It trains nothing; its cost is n samples and n reward evaluations per prompt, and its
KL from the base policy is known in closed form (``prefopt.eval.stats.kl_best_of_n``):

    KL(π_best-of-n ‖ π) = log n − (n − 1)/n nats   (n = 4: 0.64, 16: 1.84, 64: 3.18),

an upper bound on the exact KL (Beirami et al. 2024). With ``algorithm: best_of_n``,
``prefopt run`` only writes ``final/prefopt_policy.json`` naming the policy, the reward and
n; the evaluation harness samples through ``best_of_n`` from that description.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prefopt.data.records import PromptRecord
from prefopt.errors import ConfigError
from prefopt.eval.stats import kl_best_of_n
from prefopt.feedback.reward_sources import Ensemble, check_reward_dir, reward_paths
from prefopt.policy.generate import SamplingConfig

POLICY_FILE = "prefopt_policy.json"


@dataclass
class BestOfNConfig:
    n: int = 16
    """Samples per prompt. KL from the policy grows as log n − (n−1)/n; so does the risk of
    exploiting a proxy reward (Gao et al. 2022)."""
    reward: str = "runs/toy/reward/final"
    """Reward source: ``gold`` (the world's gold reward, an oracle ablation), a reward-model
    directory, or comma-separated directories (an ensemble)."""
    ensemble: Ensemble = "mean"
    """How an ensemble combines its members: mean | min | mean_minus_std (Coste et al. 2023)."""
    ensemble_k: float = 1.0
    """k of mean − k·std."""
    temperature: float = 0.7
    """Sampling temperature of the n candidates."""
    max_new_tokens: int = 48
    """Longest candidate response, in tokens."""
    batch_size: int = 32
    """Rows per generation batch (n·prompts rows in all)."""


def best_of_n(policy, records: list[PromptRecord], reward_source, n: int,
              sampling: SamplingConfig | None = None,
              batch_size: int = 32) -> tuple[list[str], torch.Tensor]:
    """(best text per prompt, its score (B,)).

    Each prompt is repeated n times (rows i·n … i·n+n−1 belong to prompt i) and sampled in
    batches; the (B·n,) scores are viewed as (B, n) and the argmax of each row is kept (the
    first of tied candidates).
    """
    if n < 1:
        raise ConfigError(f"best_of_n.n must be >= 1, got {n}")
    repeated = [r for r in records for _ in range(n)]  # (B·n)
    texts = policy.generate([r.prompt for r in repeated], sampling, batch_size).texts
    scores = torch.as_tensor(reward_source.score(repeated, texts), dtype=torch.float32)
    scores = scores.view(len(records), n)  # (B, n)
    best = scores.argmax(1)  # (B,)
    picked = [texts[i * n + int(j)] for i, j in enumerate(best)]
    return picked, scores.gather(1, best.unsqueeze(1)).squeeze(1)


class BestOfN:
    """The ``best_of_n`` "algorithm": nothing to train; ``save`` writes its description."""

    name = "best_of_n"

    def __init__(self, policy_path: str, cfg: BestOfNConfig):
        self.policy_path, self.cfg = policy_path, cfg

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.cfg.max_new_tokens,
                              temperature=self.cfg.temperature)

    def description(self) -> dict:
        c = self.cfg
        return {"type": "best_of_n", "policy": self.policy_path, "reward": c.reward, "n": c.n,
                "temperature": c.temperature, "max_new_tokens": c.max_new_tokens,
                "ensemble": c.ensemble, "ensemble_k": c.ensemble_k}

    def summary(self) -> dict[str, float]:
        """What ``summary.json`` reports: n and the analytic KL from the policy."""
        return {"best_of_n/n": self.cfg.n, "best_of_n/kl_analytic": kl_best_of_n(self.cfg.n)}

    def save(self, out_dir) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / POLICY_FILE
        path.write_text(json.dumps(self.description(), indent=2))
        return path


def load_best_of_n(final_dir) -> tuple[str, BestOfNConfig]:
    """(policy path, config) from a ``final/prefopt_policy.json`` written by ``BestOfN``."""
    d = json.loads((Path(final_dir) / POLICY_FILE).read_text())
    fields = {k: v for k, v in d.items() if k in asdict(BestOfNConfig())}
    return d["policy"], BestOfNConfig(**fields)


def build(ctx) -> BestOfN:
    """Validate the recipe (n, temperature, reward directories) and describe the policy."""
    cfg = ctx.cfg.params
    if cfg.n < 1:
        raise ConfigError(f"best_of_n.n: must be >= 1, got {cfg.n}")
    if cfg.temperature <= 0:
        raise ConfigError(f"best_of_n.temperature: must be > 0, got {cfg.temperature}")
    if cfg.ensemble not in ("mean", "min", "mean_minus_std"):
        raise ConfigError(f"best_of_n.ensemble: expected mean, min or mean_minus_std, "
                          f"got {cfg.ensemble!r}")
    if cfg.reward.strip() == "gold" and ctx.cfg.world is None:
        raise ConfigError("best_of_n.reward 'gold' needs a world; set world.name")
    for p in reward_paths(cfg.reward):
        check_reward_dir(p)
    return BestOfN(ctx.cfg.model.path, cfg)
