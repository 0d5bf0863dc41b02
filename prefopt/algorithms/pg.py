"""Critic-free policy gradient with k samples per prompt: RLOO and GRPO.

Both sample k responses per prompt (consecutive rows of the experience), give each response
one sequence-level advantage A_i, broadcast it to the response's tokens and minimise the
clipped ratio objective of ``prefopt.losses.ppo_policy_loss``, ρ_t = π_θ/π_old (training
log-probs from logits/T as in rollout.py). They differ in the advantage and the KL:

RLOO (Ahmadian et al. 2024, REINFORCE leave-one-out): the KL is folded into the reward at
sequence level, R_i = score_i − β·Σ_t k_t, and A_i = R_i − (1/(k−1))·Σ_{j≠i} R_j. With one
epoch and one minibatch ρ = 1 and the gradient is REINFORCE with the leave-one-out baseline.

GRPO (Shao et al. 2024): A_i = (score_i − mean_G(score))/(std_G(score) + eps) over the group,
and the KL to the reference is a term of the loss, + β·mean_m(k3(π_θ, π_ref)).

Details, defaults and sources: docs/ppo.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from prefopt.algorithms.ppo import build_rl_parts
from prefopt.algorithms.rollout import (
    Experience,
    experience_metrics,
    make_experience,
    minibatch_updates,
    prompt_batches,
)
from prefopt.engine.distributed import global_whiten
from prefopt.engine.module import Module
from prefopt.errors import ConfigError
from prefopt.losses import (
    grpo_advantages,
    kl_estimate,
    masked_mean,
    ppo_policy_loss,
    rloo_advantages,
)
from prefopt.policy.generate import SamplingConfig


@dataclass
class PGConfig:
    """Fields shared by RLOO and GRPO."""

    reward: str = "runs/toy/reward/final"
    """Reward source: a reward-model directory, comma-separated directories (an ensemble),
    or ``gold`` (the world's gold reward)."""
    ensemble: Literal["mean", "min", "mean_minus_std"] = "mean"
    """How an ensemble's members combine (Coste et al. 2023)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Rollout sampling; training log-probs use logits/T with the same T (Huang et al. 2024)."""
    cliprange: float = 0.2
    """ε of the clipped ratio (Schulman et al. 2017; Shao et al. 2024)."""
    missing_eos_penalty: float | None = -1.0
    """Score of a response with no EOS ("EOS trick", Huang et al. 2024); None = off."""
    eos_penalty_mode: Literal["replace", "add"] = "replace"
    """replace: score ← penalty; add: score ← score + penalty."""
    ppo_epochs: int = 1
    """Passes over each rollout (1: on-policy, ρ = 1; μ = 1 in Shao et al. 2024)."""
    n_minibatches: int = 1
    """Minibatches (optimizer steps) per epoch."""
    forward_batch_size: int = 8
    """Rows per no-grad forward in the rollout (log-probs and reference)."""
    generation_batch_size: int = 64
    """Prompts per ``generate`` call."""


@dataclass
class RLOOConfig(PGConfig):
    rloo_k: int = 4
    """Samples per prompt k (Ahmadian et al. 2024 use k = 2 and 4)."""
    kl_coef: float = 0.05
    """β of the sequence-level KL penalty folded into the reward."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL summed into the sequence penalty (k1 = log π_θ − log π_ref)."""
    normalize_advantages: bool = False
    """Whiten the advantages over the batch (off in Ahmadian et al. 2024)."""


@dataclass
class GRPOConfig(PGConfig):
    group_size: int = 4
    """Samples per prompt G (64 in Shao et al. 2024; small for the toy world)."""
    beta: float = 0.04
    """Coefficient of the k3 KL-to-reference term of the loss (Shao et al. 2024); 0 = off."""
    scale_rewards: bool = True
    """Divide by the group's std (Shao et al. 2024); off = centre only (Liu et al. 2025)."""


class PolicyGradient(Module):
    """k samples per prompt, sequence-level advantages, clipped ratio loss; no critic."""

    name = "pg"
    kl_in_loss = False
    """True: the KL is a k3 term of the loss, + β·mean_m(k3) (GRPO); False: it is in the
    reward (RLOO)."""

    def __init__(self, policy, source, prompts: list, cfg: PGConfig, k: int, batch_size: int,
                 seed: int = 0, shard=(0, 1), kl_estimator: str = "k1", kl_coef: float = 0.0):
        if k < 2:
            raise ConfigError(f"{self.name}: needs at least 2 samples per prompt, got {k}")
        if batch_size * k < cfg.n_minibatches:
            raise ConfigError(f"{self.name}.n_minibatches ({cfg.n_minibatches}) exceeds the "
                              f"{batch_size * k} samples per batch")
        self.policy, self.source, self.prompts, self.cfg = policy, source, prompts, cfg
        self.k, self.batch_size, self.seed, self.shard = k, batch_size, seed, shard
        self.kl_estimator, self.kl_coef = kl_estimator, kl_coef
        self.updates_per_batch = cfg.ppo_epochs * cfg.n_minibatches
        self.n_rollouts = 0
        self._metrics: dict[str, float] = {}
        policy.freeze_reference()

    def sequence_advantages(self, exp: Experience) -> torch.Tensor:
        """(B,) one advantage per sampled response."""
        raise NotImplementedError

    def train_batches(self, epoch):
        return prompt_batches(self.prompts, self.batch_size, self.seed, epoch, self.shard)

    def rollout(self, batch) -> Experience:
        cfg = self.cfg
        exp, timings = make_experience(
            self.policy, batch, self.source, cfg.sampling, self.k, self.kl_estimator,
            cfg.missing_eos_penalty, cfg.eos_penalty_mode, cfg.forward_batch_size,
            cfg.generation_batch_size)
        adv = self.sequence_advantages(exp)  # (B,)
        exp.extras = {"advantages": adv.unsqueeze(1) * exp.response_mask}  # (B, T-1)
        self._metrics = {**experience_metrics(exp, self.kl_coef), **timings,
                         "kl_coef": self.kl_coef, "advantages/std": adv.std().item()}
        self.n_rollouts += 1
        return exp

    def updates(self, experience: Experience, micro_batch_size: int):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.n_rollouts)
        return minibatch_updates(experience, self.cfg.ppo_epochs, self.cfg.n_minibatches,
                                 micro_batch_size, gen)

    def loss(self, mb: Experience):
        ids, attn, mask = mb.input_ids, mb.attention_mask, mb.response_mask
        logp = self.policy.token_logprobs(ids, attn, self.cfg.sampling.temperature,
                                          where=mask)  # (b, T-1), 0 off the response
        pg_loss, metrics = ppo_policy_loss(logp, mb.old_logps, mb.extras["advantages"], mask,
                                           self.cfg.cliprange)
        loss = pg_loss
        if self.kl_in_loss and self.kl_coef > 0:
            kl = masked_mean(kl_estimate(logp, mb.ref_logps, "k3"), mask)  # ()
            loss = loss + self.kl_coef * kl
            metrics["policy/kl_ref"] = kl.item()
        metrics.update({"policy/loss": pg_loss.item(), "tokens": float(attn.sum())})
        return loss, metrics

    def loss_weight(self, mb: Experience) -> float:
        """The loss terms are means over response tokens: the engine weights by their count."""
        return float(mb.response_mask.sum())

    def rollout_metrics(self):
        return dict(self._metrics)

    def state_dict(self):
        return {"n_rollouts": self.n_rollouts}

    def load_state_dict(self, state):
        self.n_rollouts = int(state.get("n_rollouts", self.n_rollouts))

    def save(self, out_dir):
        self.policy.save(out_dir)


class RLOO(PolicyGradient):
    name = "rloo"

    def sequence_advantages(self, exp: Experience) -> torch.Tensor:
        """A_i = R_i − mean_{j≠i} R_j, R_i = score_i − β·Σ_t k_t. (B,) -> (B,)."""
        rewards = exp.scores - self.kl_coef * exp.kl.sum(1)  # (B,)
        adv = rloo_advantages(rewards, self.k)
        if self.cfg.normalize_advantages:
            adv = global_whiten(adv, torch.ones_like(adv))  # over all processes' rows
        return adv


class GRPO(PolicyGradient):
    name = "grpo"
    kl_in_loss = True

    def sequence_advantages(self, exp: Experience) -> torch.Tensor:
        """A_i = (score_i − mean_G)/(std_G + eps) within each group of G. (B,) -> (B,)."""
        return grpo_advantages(exp.scores, self.k, scale=self.cfg.scale_rewards)


def build_rloo(ctx) -> RLOO:
    """RLOO from a recipe: ``train.batch_size`` prompts × ``rloo.rloo_k`` samples per batch."""
    cfg, run = ctx.cfg.params, ctx.cfg
    policy, source, train = build_rl_parts(ctx, cfg)
    return RLOO(policy, source, train, cfg, cfg.rloo_k, run.train.batch_size, run.train.seed,
                ctx.shard, cfg.kl_estimator, cfg.kl_coef)


def build_grpo(ctx) -> GRPO:
    """GRPO from a recipe: ``train.batch_size`` prompts × ``grpo.group_size`` samples; the
    logged KL is the k3 estimate that the loss penalises."""
    cfg, run = ctx.cfg.params, ctx.cfg
    policy, source, train = build_rl_parts(ctx, cfg)
    return GRPO(policy, source, train, cfg, cfg.group_size, run.train.batch_size,
                run.train.seed, ctx.shard, "k3", cfg.beta)
