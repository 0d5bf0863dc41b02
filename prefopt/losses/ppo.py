"""Clipped PPO objectives (Schulman et al. 2017) and group baselines (RLOO, GRPO).

Token tensors are (B, T), ``mask`` 1 on response tokens; means are over all masked tokens
of the batch (token-level averaging).
"""

from __future__ import annotations

import torch
from torch import Tensor

from prefopt.losses.masked import masked_mean


def ppo_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor,
                    clip: float = 0.2) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:
    mean_m(max(−Â·ρ_t, −Â·clip(ρ_t, 1 − ε, 1 + ε))), ρ_t = exp(log π_θ − log π_old), ε = clip.

    Metrics: policy/clipfrac = fraction of tokens where the clipped term is the active one
    (strictly larger); policy/approxkl = mean_m(½·(log π_θ − log π_old)²), the k2 estimate
    of KL(π_old ‖ π_θ) that Huang et al. (2023) log. Shapes: (B, T) each → loss ().
    """
    log_ratio = logp - old_logp  # (B, T)
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        metrics = {
            "policy/clipfrac": masked_mean((pg_loss2 > pg_loss1).to(logp.dtype), mask).item(),
            "policy/approxkl": masked_mean(0.5 * log_ratio**2, mask).item(),
        }
    return loss, metrics


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   clip: float = 0.2, coef: float = 0.1) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss (Huang et al. 2023, detail "value function loss clipping"):
    c_vf·½·mean_m(max((V − G)², (V_clip − G)²)), V_clip = V_old + clip(V − V_old, −ε_v, ε_v).

    Metric value/clipfrac = fraction of tokens where the clipped error is strictly larger.
    Shapes: (B, T) each → loss ().
    """
    values_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    vf_loss1 = (values - returns) ** 2
    vf_loss2 = (values_clipped - returns) ** 2
    loss = coef * 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((vf_loss2 > vf_loss1).to(values.dtype), mask).item()
    return loss, {"value/clipfrac": clipfrac}


def _groups(rewards: Tensor, k: int, name: str) -> Tensor:
    if rewards.dim() != 1 or rewards.numel() % k != 0:
        raise ValueError(f"{name}: rewards must be (N,) with N a multiple of the group size "
                         f"{k}, got shape {tuple(rewards.shape)}")
    return rewards.view(-1, k)  # (N/k, k): consecutive samples share a prompt


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, eq. 6; Kool et al. 2019):
    A_i = r_i − (1/(k−1))·Σ_{j≠i} r_j within each group of k samples of one prompt.

    Consecutive blocks of k entries are one prompt's samples. (N,) → (N,).
    """
    if k < 2:
        raise ValueError(f"rloo needs k >= 2 samples per prompt, got {k}")
    r = _groups(rewards, k, "rloo_advantages")  # (N/k, k)
    baseline = (r.sum(-1, keepdim=True) - r) / (k - 1)
    return (r - baseline).reshape(-1)


def grpo_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4,
                    scale: bool = True) -> Tensor:
    """GRPO outcome advantages (Shao et al. 2024, §4.1.2): Â_i = (r_i − mean(r))/(std(r) + eps)
    within each group of ``group_size`` consecutive samples; std is the unbiased (N−1)
    standard deviation, as in the common implementation. ``scale=False`` only centres,
    Â_i = r_i − mean(r) (Liu et al. 2025, "Dr. GRPO"). (N,) → (N,).
    """
    if group_size < 2:
        raise ValueError(f"grpo needs group_size >= 2, got {group_size}")
    r = _groups(rewards, group_size, "grpo_advantages")  # (N/G, G)
    centred = r - r.mean(-1, keepdim=True)
    if scale:
        centred = centred / (r.std(-1, keepdim=True) + eps)
    return centred.reshape(-1)
