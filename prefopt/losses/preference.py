"""Registry of the pair losses, implicit rewards and the mean-loss wrapper with metrics."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from prefopt.errors import ConfigError
from prefopt.losses.anchored import apo_down_loss, apo_zero_loss, nca_loss, sppo_hard_loss
from prefopt.losses.dpo import (
    conservative_dpo_loss,
    discopop_loss,
    dpo_loss,
    exo_pair_loss,
    hinge_loss,
    ipo_loss,
    ln_dpo_loss,
    robust_dpo_loss,
    rpo_loss,
)
from prefopt.losses.pair import PairLogps, lengths
from prefopt.losses.reference_free import cpo_loss, orpo_loss, simpo_loss

PAIR_LOSSES: dict[str, Callable[..., Tensor]] = {
    "dpo": dpo_loss,
    "conservative_dpo": conservative_dpo_loss,
    "robust_dpo": robust_dpo_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "ln_dpo": ln_dpo_loss,
    "rpo": rpo_loss,
    "nca": nca_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "sppo_hard": sppo_hard_loss,
    "discopop": discopop_loss,
    "exo_pair": exo_pair_loss,
    "simpo": simpo_loss,
    "cpo": cpo_loss,
    "orpo": orpo_loss,
}
"""name → loss(p: PairLogps, beta, label=None, **hparams) -> (B,) per-example losses."""

REFERENCE_FREE: frozenset[str] = frozenset({"simpo", "orpo", "cpo"})
"""Losses that never read π_ref (no reference pass needed)."""

HARD_LABEL_ONLY: frozenset[str] = frozenset({"apo_zero", "apo_down", "sppo_hard", "discopop"})
"""Losses with no soft-label form: a label other than all ones raises ValueError."""

ACCEPTS_SOFT_LABELS: frozenset[str] = frozenset(PAIR_LOSSES) - HARD_LABEL_ONLY
"""Losses that take a soft label p = P(y_w ≻ y_l) ∈ [0, 1]."""

PER_TOKEN_REWARDS: frozenset[str] = frozenset({"ipo", "ln_dpo", "simpo", "orpo"})
"""Losses that compare per-token-averaged log-probs; their implicit rewards are averaged too."""


def implicit_rewards(p: PairLogps, beta: float, average: bool = False) -> tuple[Tensor, Tensor]:
    """Detached implicit rewards (r_w, r_l), (B,) each.

    Reference-based (ref log-probs present): r = β·(log π_θ(y|x) − log π_ref(y|x))
    (Rafailov et al. 2023, §5). Reference-free: r = β·log π_θ(y|x) (CPO). With
    ``average`` the log-(ratio) is divided by |y| first: β·avg(y) is SimPO's reward
    (Meng et al. 2024, eq. 4). ``preference_loss`` averages for ``PER_TOKEN_REWARDS``.
    """
    with torch.no_grad():
        r_w, r_l = p.chosen, p.rejected
        if p.has_reference:
            r_w, r_l = r_w - p.ref_chosen, r_l - p.ref_rejected
        if average:
            len_w, len_l = lengths(p)
            r_w, r_l = r_w / len_w, r_l / len_l
        return (beta * r_w).detach(), (beta * r_l).detach()


def _closest(name: str, valid: list[str]) -> str:
    return difflib.get_close_matches(name, valid, n=1, cutoff=0.0)[0]


def get_pair_loss(name: str) -> Callable[..., Tensor]:
    """The loss registered as ``name``; ConfigError naming the closest valid name otherwise."""
    if name not in PAIR_LOSSES:
        raise ConfigError(f"unknown preference loss '{name}'; did you mean "
                          f"'{_closest(name, list(PAIR_LOSSES))}'? "
                          f"valid: {', '.join(PAIR_LOSSES)}")
    return PAIR_LOSSES[name]


def loss_hparams(name: str) -> dict[str, object]:
    """The extra hyperparameters of loss ``name`` with their defaults (e.g. simpo: gamma)."""
    params = list(inspect.signature(get_pair_loss(name)).parameters.values())[3:]
    return {q.name: q.default for q in params}


def preference_loss(name: str, p: PairLogps, beta: float, label: Tensor | None = None,
                    **hparams: float) -> tuple[Tensor, dict[str, float]]:
    """Mean of loss ``name`` over the batch, and detached metrics (batch means):
    rewards/chosen, rewards/rejected, rewards/margins (r_w − r_l), rewards/accuracies
    (fraction with r_w > r_l), logps/chosen, logps/rejected (summed log π_θ). Rewards of
    reference-free losses ignore any reference log-probs in ``p``.

    Unknown names or hyperparameters raise ConfigError with the closest valid name.
    """
    fn = get_pair_loss(name)
    valid = loss_hparams(name)
    for key in hparams:
        if key not in valid:
            hint = f"; did you mean '{_closest(key, list(valid))}'?" if valid else ""
            raise ConfigError(f"loss '{name}' has no hyperparameter '{key}'{hint} "
                              f"(valid: {', '.join(valid) or 'none'})")
    loss = fn(p, beta, label, **hparams).mean()
    p_reward = replace(p, ref_chosen=None, ref_rejected=None) if name in REFERENCE_FREE else p
    r_w, r_l = implicit_rewards(p_reward, beta, average=name in PER_TOKEN_REWARDS)
    metrics = {
        "rewards/chosen": r_w.mean().item(),
        "rewards/rejected": r_l.mean().item(),
        "rewards/margins": (r_w - r_l).mean().item(),
        "rewards/accuracies": (r_w > r_l).float().mean().item(),
        "logps/chosen": p.chosen.detach().mean().item(),
        "logps/rejected": p.rejected.detach().mean().item(),
    }
    return loss, metrics
