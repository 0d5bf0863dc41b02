"""DPO and the losses built on the log-ratio difference h = ρ_w − ρ_l.

Each function maps ``PairLogps`` (tensors (B,)) to per-example losses (B,); the caller
takes the mean. Notation and the soft-label convention are in ``prefopt.losses.pair``:
a soft label p gives p·L(w, l) + (1 − p)·L(l, w), exactly L(w, l) at p = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefopt.losses.pair import (
    PairLogps,
    check_label,
    lengths,
    log_ratios,
    logistic,
    mix,
    require_hard_label,
)


def _h(p: PairLogps, loss: str) -> Tensor:
    rho_w, rho_l = log_ratios(p, loss)
    return rho_w - rho_l  # (B,)


def _h_per_token(p: PairLogps, loss: str) -> Tensor:
    rho_w, rho_l = log_ratios(p, loss)
    len_w, len_l = lengths(p)
    return rho_w / len_w - rho_l / len_l  # (B,)


def dpo_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): ℓ(β·h), ℓ(z) = −log σ(z).

    Soft label p: −[p·log σ(βh) + (1 − p)·log σ(−βh)]. (B,) → (B,).
    Gradient wrt log π_θ(y_w): −β·σ(−βh) per example.
    """
    return logistic(beta * _h(p, "dpo"), check_label(label, p.chosen))


def conservative_dpo_loss(p: PairLogps, beta: float, label: Tensor | None = None,
                          label_smoothing: float = 0.1) -> Tensor:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"):
    (1 − ε)·ℓ(βh) + ε·ℓ(−βh), ε = ``label_smoothing``: labels are assumed flipped w.p. ε.

    Soft label p: the smoothing applies to p, i.e. the logistic loss with target
    q = (1 − ε)·p + ε·(1 − p). (B,) → (B,).
    """
    label = check_label(label, p.chosen)
    p_w = torch.ones_like(p.chosen) if label is None else label
    q = (1 - label_smoothing) * p_w + label_smoothing * (1 - p_w)
    return logistic(beta * _h(p, "conservative_dpo"), q)


def robust_dpo_loss(p: PairLogps, beta: float, label: Tensor | None = None,
                    eps: float = 0.1) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, "Provably robust DPO", eq. 8), flip rate ε ∈ [0, ½):
    R(βh) = [(1 − ε)·ℓ(βh) − ε·ℓ(−βh)] / (1 − 2ε), an unbiased estimate of the clean loss.

    Soft label p: p·R(βh) + (1 − p)·R(−βh). (B,) → (B,).
    """
    if not 0 <= eps < 0.5:
        raise ValueError(f"robust_dpo needs 0 <= eps < 0.5, got {eps}")
    z = beta * _h(p, "robust_dpo")

    def robust(z: Tensor) -> Tensor:
        return ((1 - eps) * F.softplus(-z) - eps * F.softplus(z)) / (1 - 2 * eps)

    label = check_label(label, p.chosen)
    return mix(label, robust(z), None if label is None else robust(-z))


def ipo_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """IPO (Azar et al. 2023, eq. 17): (h̄ − 1/(2β))², β = the paper's τ.

    h̄ uses per-token-averaged log-ratios, h̄ = ρ_w/|y_w| − ρ_l/|y_l| (the common
    implementation; the paper writes sums). Soft label p: p·(h̄ − 1/(2β))² +
    (1 − p)·(h̄ + 1/(2β))², minimised at h̄ = (2p − 1)/(2β) as in the paper's
    population objective. (B,) → (B,).
    """
    h_bar = _h_per_token(p, "ipo")
    label = check_label(label, p.chosen)
    target = 1 / (2 * beta)
    return mix(label, (h_bar - target) ** 2, None if label is None else (h_bar + target) ** 2)


def hinge_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """Hinge loss of SLiC (Zhao et al. 2023) / RSO (Liu et al. 2024): max(0, 1 − βh).

    β is the inverse margin 1/δ. Soft label p: p·max(0, 1 − βh) + (1 − p)·max(0, 1 + βh).
    (B,) → (B,).
    """
    z = beta * _h(p, "hinge")
    label = check_label(label, p.chosen)
    return mix(label, F.relu(1 - z), None if label is None else F.relu(1 + z))


def ln_dpo_loss(p: PairLogps, beta: float, label: Tensor | None = None) -> Tensor:
    """Length-normalised DPO: ℓ(β·(ρ_w/|y_w| − ρ_l/|y_l|)); removes DPO's pull toward longer
    completions (Park et al. 2024, "Disentangling length from quality").

    Soft label as DPO. (B,) → (B,).
    """
    return logistic(beta * _h_per_token(p, "ln_dpo"), check_label(label, p.chosen))


def rpo_loss(p: PairLogps, beta: float, label: Tensor | None = None,
             alpha: float = 1.0) -> Tensor:
    """RPO (Pang et al. 2024, "Iterative reasoning preference optimization", eq. 1):
    ℓ(βh) + α·NLL(y_w)/|y_w|, NLL(y_w) = −log π_θ(y_w|x).

    Soft label p applies to the DPO part only; the NLL term always anchors the completion
    stored as ``chosen`` (it keeps the chosen log-prob from falling). (B,) → (B,).
    """
    len_w, _ = lengths(p)
    return dpo_loss(p, beta, label) + alpha * (-p.chosen / len_w)


def discopop_loss(p: PairLogps, beta: float, label: Tensor | None = None,
                  tau: float = 0.05) -> Tensor:
    """DiscoPOP (Lu et al. 2024, "Discovering preference optimization algorithms", LRML):
    (1 − m)·ℓ(βh) + m·exp(−βh), m = σ(βh/τ), τ = 0.05.

    A discovered, asymmetric blend with no probabilistic reading: hard labels only.
    (B,) → (B,).
    """
    require_hard_label(label, "discopop")
    z = beta * _h(p, "discopop")
    m = torch.sigmoid(z / tau)
    return (1 - m) * F.softplus(-z) + m * torch.exp(-z)


def exo_pair_loss(p: PairLogps, beta: float, label: Tensor | None = None,
                  eps: float = 1e-3) -> Tensor:
    """EXO, pairwise (Ji et al. 2024, "Towards efficient exact optimization", eq. 12):
    KL(p_θ ‖ p_label) with p_θ = softmax(β[ρ_w, ρ_l]) = [σ(βh), σ(−βh)] and
    p_label = [1 − ε, ε], ε = 1e-3 keeping the reverse KL finite:
    σ(βh)·(log σ(βh) − log(1 − ε)) + σ(−βh)·(log σ(−βh) − log ε).

    Soft label p: p_label = [q, 1 − q], q = (1 − ε)·p + ε·(1 − p). (B,) → (B,).
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"exo_pair needs 0 < eps < 0.5, got {eps}")
    z = beta * _h(p, "exo_pair")
    label = check_label(label, p.chosen)
    p_w = torch.ones_like(z) if label is None else label
    q = (1 - eps) * p_w + eps * (1 - p_w)  # target P(y_w wins)
    q_bar = (1 - eps) * (1 - p_w) + eps * p_w  # 1 − q, without cancellation in 1 − q
    return (torch.sigmoid(z) * (F.logsigmoid(z) - torch.log(q))
            + torch.sigmoid(-z) * (F.logsigmoid(-z) - torch.log(q_bar)))
