"""Reference-free pair losses: SimPO, CPO, ORPO (no π_ref; ``PairLogps.ref_*`` unused).

Shapes: ``PairLogps`` (B,) → losses (B,). Soft labels follow ``prefopt.losses.pair``:
p·L(w, l) + (1 − p)·L(l, w) on the preference term; the NLL terms of CPO and ORPO always
fit the completion stored as ``chosen``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prefopt.losses.pair import PairLogps, avg_logps, check_label, log1mexp, logistic, mix

MAX_AVG_LOGP = -1e-6
"""ORPO clamps avg(y) to at most this, so that log odds stays finite when P rounds to 1."""


def _nll_per_token(p: PairLogps) -> Tensor:
    avg_w, _ = avg_logps(p)
    return -avg_w  # (B,) NLL(y_w)/|y_w|


def simpo_loss(p: PairLogps, beta: float, label: Tensor | None = None,
               gamma: float = 0.5) -> Tensor:
    """SimPO (Meng et al. 2024, eq. 6): ℓ(β·avg(y_w) − β·avg(y_l) − γ), target margin γ.

    Soft label p: p·ℓ(βΔ − γ) + (1 − p)·ℓ(−βΔ − γ), Δ = avg(y_w) − avg(y_l): the margin
    is demanded in the direction of whichever completion won. (B,) → (B,).
    """
    avg_w, avg_l = avg_logps(p)
    z = beta * (avg_w - avg_l)
    label = check_label(label, p.chosen)
    return mix(label, F.softplus(-(z - gamma)), None if label is None else F.softplus(z + gamma))


def cpo_loss(p: PairLogps, beta: float, label: Tensor | None = None,
             alpha: float = 1.0) -> Tensor:
    """CPO (Xu et al. 2024, "Contrastive preference optimization", eq. 7):
    ℓ(β·(log π_θ(y_w) − log π_θ(y_l))) + α·NLL(y_w)/|y_w|, α = 1.

    The NLL is averaged per token (the common implementation's cross-entropy). Soft label p
    applies to the preference term. (B,) → (B,).
    """
    z = beta * (p.chosen - p.rejected)
    return logistic(z, check_label(label, p.chosen)) + alpha * _nll_per_token(p)


def log_odds(avg_logp: Tensor) -> Tensor:
    """log odds(y) = log P − log(1 − P) with P = exp(avg(y)): avg − log1mexp(avg). (B,)."""
    avg_logp = torch.clamp(avg_logp, max=MAX_AVG_LOGP)
    return avg_logp - log1mexp(avg_logp)


def orpo_loss(p: PairLogps, beta: float, label: Tensor | None = None,
              lam: float = 0.1) -> Tensor:
    """ORPO (Hong et al. 2024, eqs. 6–7): NLL(y_w)/|y_w| − λ·log σ(log odds(y_w) − log odds(y_l)),
    odds(y) = P/(1 − P), P = exp(avg(y)), λ = 0.1.

    β does not enter the loss (it only scales the reported implicit rewards); the odds-ratio
    weight is ``lam``. Soft label p applies to the odds-ratio term. (B,) → (B,).
    """
    avg_w, avg_l = avg_logps(p)
    z = log_odds(avg_w) - log_odds(avg_l)
    return _nll_per_token(p) + lam * logistic(z, check_label(label, p.chosen))
