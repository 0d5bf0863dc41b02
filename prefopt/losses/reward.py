"""Reward-model objectives: the Bradley–Terry loss and calibration."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefopt.losses.pair import check_label


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, label: Tensor | None = None,
                       margin: Tensor | None = None,
                       center_coef: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Mean Bradley–Terry loss of a scalar reward model and detached metrics.

    Δ = r_w − r_l − m (margin m, Touvron et al. 2023, Llama 2 §3.2.2);
    loss = −[p·log σ(Δ) + (1 − p)·log σ(−Δ)] with soft label p (1 if None), averaged,
    + c·mean((r_w + r_l)²), the reward centering of Eisenstein et al. (2023), c = center_coef.
    Shapes: r_chosen, r_rejected, label, margin (B,) → loss ().

    Metrics: ``accuracy`` = fraction of pairs where the model orders the pair as the label
    does (r_w > r_l when p > ½, r_w < r_l when p < ½; pairs with p = ½ are left out, NaN if
    none remain); ``margin`` = mean(r_w − r_l).
    """
    delta = r_chosen - r_rejected  # (B,)
    z = delta if margin is None else delta - margin
    if label is None:
        losses = F.softplus(-z)
    else:
        label = check_label(label, z)
        losses = label * F.softplus(-z) + (1 - label) * F.softplus(z)
    loss = losses.mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    with torch.no_grad():
        p = torch.ones_like(delta) if label is None else label
        decided = p != 0.5
        agree = ((delta > 0) == (p > 0.5)) & decided
        n = int(decided.sum())
        metrics = {
            "accuracy": agree.sum().item() / n if n else float("nan"),
            "margin": delta.mean().item(),
        }
    return loss, metrics


def expected_calibration_error(probs: Tensor, outcomes: Tensor, n_bins: int = 10) -> float:
    """ECE = Σ_b (n_b/N)·|mean(outcome_b) − mean(prob_b)| (Guo et al. 2017, eq. 3).

    ``probs`` = σ(r_w − r_l), the predicted P(chosen wins); ``outcomes`` = 1 where the label
    says chosen won (label > ½), else 0. Bins are n_bins equal-width intervals over [0, 1]:
    bin b = [b/n, (b+1)/n), the last one closed at 1; empty bins contribute 0. Both sides of
    ½ are binned (a reliability diagram over P(chosen wins), not over max(p, 1 − p)).
    Shapes: (N,), (N,) → float.
    """
    probs = probs.detach().flatten().double()
    outcomes = outcomes.detach().flatten().double()
    if probs.numel() == 0:
        raise ValueError("expected_calibration_error needs at least one prediction")
    bins = torch.clamp((probs * n_bins).floor().long(), 0, n_bins - 1)  # (N,)
    sum_p = torch.bincount(bins, weights=probs, minlength=n_bins)  # (n_bins,)
    sum_o = torch.bincount(bins, weights=outcomes, minlength=n_bins)
    # Σ_b (n_b/N)·|Σo/n_b − Σp/n_b| = Σ_b |Σo − Σp| / N
    return ((sum_o - sum_p).abs().sum() / probs.numel()).item()
