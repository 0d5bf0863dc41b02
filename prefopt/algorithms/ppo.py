"""PPO for language models (Ziegler et al. 2019; Huang et al. 2023, 2024; Zheng et al. 2023).

Per rollout (``PPO.rollout``), with B sequences and per-token tensors (B, T-1):

    k_t     = KL estimate(log π_old, log π_ref)                    (k1 default, k3 option)
    r_t     = −β·k_t + [t = last response token]·clip(score, ±c)     (token_rewards)
    Â, G    = GAE(r, V_old; γ = 1, λ = 0.95);  Â ← whiten(Â)
Per optimizer step (``PPO.loss``), on shuffled minibatches for ``ppo_epochs`` epochs:

    L = −mean_m min(ρ_t Â_t, clip(ρ_t, 1 ± ε) Â_t)
        + c_vf·½·mean_m max((V − G)², (clip(V, V_old ± ε_v) − G)²),   ρ_t = π_θ/π_old.

The math lives in ``prefopt.losses``; this module wires models, rollout and controller.
Every detail, its default and its source: docs/ppo.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from prefopt.algorithms.rollout import (
    Experience,
    batched,
    experience_metrics,
    make_experience,
    minibatch_updates,
    prompt_batches,
)
from prefopt.engine.distributed import global_whiten
from prefopt.engine.module import Module
from prefopt.errors import ConfigError
from prefopt.feedback.reward_sources import load_reward_source, reward_paths
from prefopt.losses import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    ppo_policy_loss,
    ppo_value_loss,
    token_rewards,
)
from prefopt.policy.generate import SamplingConfig
from prefopt.policy.heads import ScalarModel, load_scalar_model, new_scalar_model
from prefopt.policy.load import ModelConfig, add_adapter, load_tokenizer
from prefopt.policy.policy import Policy


@dataclass
class PPOConfig:
    reward: str = "runs/toy/reward/final"
    """Reward source: a reward-model directory, comma-separated directories (an ensemble),
    or ``gold`` (the world's gold reward)."""
    ensemble: Literal["mean", "min", "mean_minus_std"] = "mean"
    """How an ensemble's members combine (Coste et al. 2023)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Rollout sampling; T = 0.7 (Huang et al. 2024). Training log-probs use logits/T too."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL in the reward: k1 = log π_θ − log π_ref (Ziegler et al. 2019), k3 =
    (r − 1) − log r, r = π_ref/π_θ (Schulman 2020; non-negative, lower variance)."""
    kl_coef: float = 0.05
    """β of the KL penalty; fixed 0.05 in the N+ recipe (Huang et al. 2024); the adaptive
    controller's initial value (0.15 in Ziegler et al. 2019)."""
    adaptive_kl: bool = False
    """Adapt β towards ``kl_target`` (Ziegler et al. 2019, §2.2) instead of keeping it fixed."""
    kl_target: float = 6.0
    """Target KL (nats per sequence) of the adaptive controller (Ziegler et al. 2019)."""
    kl_horizon: int = 10000
    """Horizon (episodes) of the adaptive controller (Ziegler et al. 2019)."""
    gamma: float = 1.0
    """GAE discount γ (Huang et al. 2023: 1 for the terminal-reward LM episode)."""
    lam: float = 0.95
    """GAE λ (Huang et al. 2023, 2024)."""
    whiten_advantages: bool = True
    """Advantages to zero mean, unit (biased) variance per rollout (Huang et al. 2023)."""
    whiten_rewards: bool = False
    """Scale token rewards to unit variance keeping the mean (Huang et al. 2023, off in N+)."""
    reward_clip: float = 0.0
    """Clip scores to [−c, c] before they enter the reward (Zheng et al. 2023); 0 = off."""
    cliprange: float = 0.2
    """ε of the clipped policy ratio (Schulman et al. 2017; Huang et al. 2024)."""
    cliprange_value: float = 0.2
    """ε_v of the clipped value loss (Huang et al. 2023)."""
    vf_coef: float = 0.1
    """c_vf, weight of the value loss in the one shared loss (Huang et al. 2023, 2024)."""
    value_init: Literal["reward", "policy"] = "reward"
    """Critic initialisation: from the reward model (Ziegler et al. 2019; Zheng et al. 2023),
    or a fresh head on a copy of the policy backbone."""
    value_path: str | None = None
    """Reward-model directory the critic starts from; None = the (first) ``reward`` dir."""
    missing_eos_penalty: float | None = -1.0
    """Score of a response with no EOS ("EOS trick", −1 in Huang et al. 2024); None = off."""
    eos_penalty_mode: Literal["replace", "add"] = "replace"
    """replace: score ← penalty (N+ recipe); add: score ← score + penalty."""
    ppo_epochs: int = 4
    """Passes over each rollout (4 in Huang et al. 2024)."""
    n_minibatches: int = 1
    """Minibatches (optimizer steps) per epoch (1 in Huang et al. 2024)."""
    forward_batch_size: int = 8
    """Rows per no-grad forward in the rollout (log-probs, reference, values)."""
    generation_batch_size: int = 64
    """Prompts per ``generate`` call."""


class PPO(Module):
    """PPO with a separate critic; one AdamW over policy and critic parameters."""

    name = "ppo"

    def __init__(self, policy: Policy, value_model: ScalarModel, source, prompts: list,
                 cfg: PPOConfig, batch_size: int, seed: int = 0, shard=(0, 1)):
        if batch_size < cfg.n_minibatches:
            raise ConfigError(f"ppo.n_minibatches ({cfg.n_minibatches}) exceeds the "
                              f"{batch_size} rollouts per batch")
        self.policy, self.value_model, self.source, self.cfg = policy, value_model, source, cfg
        self.prompts, self.batch_size = prompts, batch_size
        self.seed, self.shard = seed, shard
        self.kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
                       if cfg.adaptive_kl else FixedKLController(cfg.kl_coef))
        self.updates_per_batch = cfg.ppo_epochs * cfg.n_minibatches
        self.n_rollouts = 0
        self._metrics: dict[str, float] = {}
        self._last_kl, self._last_rows = 0.0, 0
        policy.freeze_reference()

    # ---- engine contract -------------------------------------------------------------
    def models(self):
        return [self.policy.model, self.value_model]

    def trainable_parameters(self):
        value = [p for p in self.value_model.parameters() if p.requires_grad]
        return self.policy.trainable_parameters() + value

    def train_batches(self, epoch):
        return prompt_batches(self.prompts, self.batch_size, self.seed, epoch, self.shard)

    def rollout(self, batch) -> Experience:
        cfg, beta = self.cfg, self.kl_ctl.value
        exp, timings = make_experience(
            self.policy, batch, self.source, cfg.sampling, 1, cfg.kl_estimator,
            cfg.missing_eos_penalty, cfg.eos_penalty_mode, cfg.forward_batch_size,
            cfg.generation_batch_size)
        mask = exp.response_mask
        values = self._old_values(exp)  # (B, T-1)
        score = exp.scores  # (B,)
        if cfg.reward_clip > 0:
            score = score.clamp(-cfg.reward_clip, cfg.reward_clip)
        rewards = token_rewards(score, exp.kl, mask, beta)  # (B, T-1)
        if cfg.whiten_rewards:
            rewards = global_whiten(rewards, mask, shift_mean=False)  # over all processes
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # (B, T-1) each
        if cfg.whiten_advantages:
            advantages = global_whiten(advantages, mask)
        exp.extras = {"values": values, "advantages": advantages, "returns": returns}
        self._metrics = {**experience_metrics(exp, beta), **timings, "kl_coef": beta,
                         "value/explained_variance": explained_variance(values, returns, mask)}
        self._last_kl, self._last_rows = self._metrics["objective/kl"], exp.rows
        self.n_rollouts += 1
        return exp

    @torch.no_grad()
    def _old_values(self, exp: Experience) -> torch.Tensor:
        """V_old(s_t) (B, T-1): the critic at position t, the state that emits token t+1."""
        def values(ids, attn):
            return self.value_model.values(ids, attn)[:, :-1].float()
        return batched(values, exp.input_ids, exp.attention_mask, self.cfg.forward_batch_size)

    def updates(self, experience: Experience, micro_batch_size: int):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.n_rollouts)
        return minibatch_updates(experience, self.cfg.ppo_epochs, self.cfg.n_minibatches,
                                 micro_batch_size, gen)

    def loss(self, mb: Experience):
        cfg, x = self.cfg, mb.extras
        ids, attn, mask = mb.input_ids, mb.attention_mask, mb.response_mask
        logp = self.policy.token_logprobs(ids, attn, cfg.sampling.temperature,
                                          where=mask)  # (b, T-1), 0 off the response
        values = self.value_model.values(ids, attn)[:, :-1].float()  # (b, T-1)
        pg_loss, pg_metrics = ppo_policy_loss(logp, mb.old_logps, x["advantages"], mask,
                                              cfg.cliprange)
        vf_loss, vf_metrics = ppo_value_loss(values, x["values"], x["returns"], mask,
                                             cfg.cliprange_value, cfg.vf_coef)
        metrics = {**pg_metrics, **vf_metrics, "policy/loss": pg_loss.item(),
                   "value/loss": vf_loss.item(), "tokens": float(attn.sum())}
        return pg_loss + vf_loss, metrics

    def loss_weight(self, mb: Experience) -> float:
        """Both terms are means over response tokens: the engine weights by their count."""
        return float(mb.response_mask.sum())

    def rollout_metrics(self):
        return dict(self._metrics)

    def after_step(self, step: int) -> None:
        """Adaptive KL: β ← β·(1 + clip(KL/target − 1, ±0.2)·B/horizon) after each rollout."""
        self.kl_ctl.update(self._last_kl, self._last_rows)

    def state_dict(self):
        return {"kl_coef": self.kl_ctl.value, "n_rollouts": self.n_rollouts}

    def load_state_dict(self, state):
        self.kl_ctl.value = float(state.get("kl_coef", self.kl_ctl.value))
        self.n_rollouts = int(state.get("n_rollouts", self.n_rollouts))

    def save(self, out_dir):
        """The policy in standard format (the critic is a training-only model)."""
        self.policy.save(out_dir)


# ---- building ------------------------------------------------------------------------
def value_model_from_reward(path: str, model_cfg: ModelConfig) -> ScalarModel:
    """A trainable critic initialised from a saved reward model, in the policy's mode.

    An adapter reward model keeps training its adapter (on a 4-bit base under QLoRA); a full
    reward model trains fully in full mode, or gets a fresh LoRA adapter in lora/qlora mode.
    """
    is_adapter = (Path(path) / "adapter_config.json").is_file()
    if is_adapter or model_cfg.mode == "full":
        return load_scalar_model(path, mode=model_cfg.mode, dtype=model_cfg.dtype,
                                 trainable=True)
    model = load_scalar_model(path, mode=model_cfg.mode, dtype=model_cfg.dtype)
    model.backbone = add_adapter(model.backbone, replace(model_cfg, path=path, adapter=None))
    model.head.requires_grad_(True)
    return model


def build_value_model(value_init: str, value_path: str | None, reward: str,
                      model_cfg: ModelConfig, tokenizer) -> ScalarModel:
    """The critic per ``value_init``: from the reward model, or a copy of the policy."""
    if value_init == "policy":
        return new_scalar_model(model_cfg, tokenizer)
    path = value_path or next(iter(reward_paths(reward)), None)
    if path is None:
        raise ConfigError("value_init: reward needs a reward-model directory (set value_path, "
                          "or use value_init: policy with the gold reward)")
    if load_tokenizer(path).get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"value model '{path}': its tokenizer differs from the policy's; "
                          "use value_init: policy")
    return value_model_from_reward(path, model_cfg)


def build_rl_parts(ctx, cfg):
    """(policy, reward source, train prompts) shared by PPO, RLOO and GRPO."""
    from prefopt.data.sources import prompts
    from prefopt.policy import load_policy

    policy = load_policy(ctx.cfg.model)
    policy.model.to(ctx.accelerator.device)
    source = load_reward_source(cfg.reward, ctx.world, ensemble=cfg.ensemble,
                                device=ctx.accelerator.device)
    return policy, source, prompts(ctx, "train")


def build(ctx) -> PPO:
    """PPO from a recipe: policy per ``model``, prompts per ``data.train``, critic and reward
    per the ``ppo`` section; one batch = ``train.batch_size`` prompts."""
    cfg, run = ctx.cfg.params, ctx.cfg
    policy, source, train = build_rl_parts(ctx, cfg)
    value = build_value_model(cfg.value_init, cfg.value_path, cfg.reward, run.model,
                              policy.tokenizer).to(ctx.accelerator.device)
    return PPO(policy, value, source, train, cfg, run.train.batch_size, run.train.seed,
               ctx.shard)
