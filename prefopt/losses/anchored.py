"""Losses that act on ρ_w and ρ_l separately (anchored to the reference), not only on h.

DPO only sees h = ρ_w − ρ_l, so both log-probs may fall together; these losses also
push ρ_w up and/or ρ_l down in absolute terms. Shapes: ``PairLogps`` (B,) → losses (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefopt.losses.pair import PairLogps, check_label, log_ratios, mix, require_hard_label


def nca_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """NCA, pairwise (Chen et al. 2024, "Noise contrastive alignment", K = 2):
    −log σ(βρ_w) − ½·log σ(−βρ_w) − ½·log σ(−βρ_l).

    Soft label p (the paper's NCA with soft targets [p, 1 − p]):
    −p·log σ(βρ_w) − (1 − p)·log σ(βρ_l) − ½·log σ(−βρ_w) − ½·log σ(−βρ_l). (B,) → (B,).
    """
    rho_w, rho_l = log_ratios(p, "nca")
    a_w, a_l = beta * rho_w, beta * rho_l
    label = check_label(label, p.chosen)
    # ℓ(z) = −log σ(z) = softplus(−z); the "noise" terms are shared by both orientations
    noise = 0.5 * F.softplus(a_w) + 0.5 * F.softplus(a_l)
    return mix(label, F.softplus(-a_w), None if label is None else F.softplus(-a_l)) + noise


def apo_zero_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored preference optimization"):
    (1 − σ(βρ_w)) + σ(βρ_l): raise the chosen likelihood, lower the rejected one.

    For chosen outputs better than the model's own; hard labels only (the anchoring is
    asymmetric by design). (B,) → (B,).
    """
    require_hard_label(label, "apo_zero")
    rho_w, rho_l = log_ratios(p, "apo_zero")
    return (1 - torch.sigmoid(beta * rho_w)) + torch.sigmoid(beta * rho_l)


def apo_down_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024): σ(βρ_w) + (1 − σ(β(ρ_w − ρ_l))): lower both
    likelihoods, the rejected one more. For chosen outputs worse than the model's own;
    hard labels only. (B,) → (B,).
    """
    require_hard_label(label, "apo_down")
    rho_w, rho_l = log_ratios(p, "apo_down")
    return torch.sigmoid(beta * rho_w) + (1 - torch.sigmoid(beta * (rho_w - rho_l)))


def sppo_hard_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """SPPO with hard win probabilities (Wu et al. 2024, "Self-play preference optimization",
    eq. 4.3 with P(y_w ≻ π) = 1, P(y_l ≻ π) = 0, η = 1/β):
    (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))².

    The hard variant by definition: soft labels raise ValueError. (B,) → (B,).
    """
    require_hard_label(label, "sppo_hard")
    rho_w, rho_l = log_ratios(p, "sppo_hard")
    half = 1 / (2 * beta)
    return (rho_w - half) ** 2 + (rho_l + half) ** 2
