"""Rewards, KL and advantages for RL fine-tuning (PPO, RLOO, GRPO).

Sources: Ziegler et al. 2019 ("Fine-tuning language models from human preferences"),
Schulman et al. 2016 (GAE), Huang et al. 2023/2024 ("The N (+) implementation details of
RLHF with PPO"), Schulman 2020 ("Approximating KL divergence", k1/k2/k3).
Token tensors are (B, T) over response tokens, right-padded, ``mask`` 1 on real tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from samples of π_θ, log r = log π_ref − log π_θ:

    k1 = −log r = log π_θ − log π_ref (unbiased, can be negative);
    k2 = ½·(log r)² (biased, low variance);
    k3 = (r − 1) − log r (unbiased, ≥ 0; GRPO's KL term, Shao et al. 2024 eq. 4).
    Shapes: (…) → (…).
    """
    log_r = ref_logp - logp
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator '{kind}' (valid: k1, k2, k3)")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last position where ``mask`` is 1 in each row. (B, T) → (B,) long.

    Raises ValueError if a row has no response token.
    """
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)  # (T,) 1-based
    last = (positions * (mask != 0)).amax(dim=-1) - 1  # (B,)
    if bool((last < 0).any()):
        raise ValueError("a response has no tokens (mask row of zeros)")
    return last


def token_rewards(score: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """r_t = −β·kl_t + [t = last response token]·score, 0 on padding (Ziegler et al. 2019 eq. 2;
    Huang et al. 2023). Shapes: score (B,), kl (B, T), mask (B, T) → (B, T).
    """
    m = mask.to(kl.dtype)
    rewards = -beta * kl * m  # (B, T)
    last = last_token_index(mask).unsqueeze(-1)  # (B, 1)
    return rewards.scatter_add(-1, last, score.to(rewards.dtype).unsqueeze(-1))


def eos_penalty(score: Tensor, has_eos: Tensor, penalty: float = -1.0,
                mode: str = "replace") -> Tensor:
    """The "EOS trick" (Huang et al. 2024): responses cut off before EOS get a low score.

    mode "replace": score ← ``penalty`` where no EOS (the N+ recipe, penalty −1);
    mode "add": score ← score + ``penalty`` where no EOS (keeps the ranking among truncated
    responses; use a negative penalty). Shapes: score, has_eos (bool) (B,) → (B,).
    """
    no_eos = ~has_eos.bool()
    if mode == "replace":
        return torch.where(no_eos, torch.full_like(score, penalty), score)
    if mode == "add":
        return score + penalty * no_eos.to(score.dtype)
    raise ValueError(f"unknown eos_penalty mode '{mode}' (valid: replace, add)")


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    δ_t = r_t + γ·V_{t+1} − V_t, Â_t = δ_t + γλ·Â_{t+1}, returns G_t = Â_t + V_t.
    Values (and rewards) outside the mask are taken as 0, so V after the last response
    token is 0 and padding gets Â = G = 0. Shapes: (B, T) each → (B, T), (B, T).
    """
    m = mask.to(values.dtype)
    values, rewards = values * m, rewards * m
    T = rewards.shape[-1]
    next_value = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=-1)  # V_{t+1}
    delta = rewards + gamma * next_value - values  # (B, T)
    advantage_next = torch.zeros_like(delta[:, 0])  # (B,) Â_{T} = 0
    advantages = []
    for t in reversed(range(T)):
        advantage_next = delta[:, t] + gamma * lam * advantage_next
        advantages.append(advantage_next)
    advantages = torch.stack(advantages[::-1], dim=-1) * m  # (B, T)
    return advantages, advantages + values


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, §2.2):
    e = clip(KL/target − 1, −0.2, 0.2), β ← β·(1 + e·n_steps/horizon).

    ``current_kl`` is the observed KL(π_θ ‖ π_ref) per sequence in nats; ``n_steps`` the number
    of samples (episodes) since the last update.
    """

    def __init__(self, init: float = 0.15, target: float = 6.0, horizon: int = 10000):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """Constant KL coefficient (β = 0.05 in the N+ recipe); ``update`` changes nothing."""

    def __init__(self, value: float):
        self.value = value

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value
