"""Inputs and shared pieces of the pairwise (DPO-family) objectives.

Notation (docs/algorithms.md): log π(y|x) is the SUM of completion-token log-probs,
ρ_w = log π_θ(y_w|x) − log π_ref(y_w|x), ρ_l likewise, h = ρ_w − ρ_l, ℓ(z) = −log σ(z),
avg(y) = log π_θ(y|x) / |y|. Every tensor below has shape (B,).

Soft labels. ``label`` is p = P(y_w ≻ y_l) (e.g. a vote share). A loss written for the
hard label, L(w, l), becomes the expectation over which completion won,
p·L(w, l) + (1 − p)·L(l, w); for the logistic loss that is −[p·log σ(z) + (1−p)·log σ(−z)].
At p = 1 every soft form is exactly the hard loss (the second term is multiplied by 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class PairLogps:
    """Sequence log-probs of a batch of B preference pairs (all tensors (B,))."""

    chosen: Tensor
    """Σ_t log π_θ(y_w,t | x, y_w,<t) over completion tokens."""
    rejected: Tensor
    """Σ_t log π_θ(y_l,t | ...) over completion tokens."""
    chosen_len: Tensor
    """|y_w|, the number of completion tokens (float or long)."""
    rejected_len: Tensor
    """|y_l|."""
    ref_chosen: Tensor | None = None
    """log π_ref(y_w|x); None for reference-free losses (SimPO, CPO, ORPO)."""
    ref_rejected: Tensor | None = None
    """log π_ref(y_l|x)."""

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None and self.ref_rejected is not None


def log_ratios(p: PairLogps, loss: str = "this loss") -> tuple[Tensor, Tensor]:
    """(ρ_w, ρ_l) = (log π_θ(y_w) − log π_ref(y_w), log π_θ(y_l) − log π_ref(y_l)), (B,) each."""
    if not p.has_reference:
        raise ValueError(f"{loss} needs reference log-probs (PairLogps.ref_chosen/ref_rejected)")
    return p.chosen - p.ref_chosen, p.rejected - p.ref_rejected


def lengths(p: PairLogps) -> tuple[Tensor, Tensor]:
    """(|y_w|, |y_l|) as floating tensors of the log-probs' dtype, (B,) each."""
    return p.chosen_len.to(p.chosen.dtype), p.rejected_len.to(p.rejected.dtype)


def avg_logps(p: PairLogps) -> tuple[Tensor, Tensor]:
    """(avg(y_w), avg(y_l)) = per-token mean log-probs log π_θ(y|x)/|y|, (B,) each."""
    len_w, len_l = lengths(p)
    return p.chosen / len_w, p.rejected / len_l


def check_label(label: Tensor | float | None, like: Tensor) -> Tensor | None:
    """Validate a soft label p ∈ [0, 1] and broadcast it to ``like``'s shape (B,)."""
    if label is None:
        return None
    label = torch.as_tensor(label, dtype=like.dtype, device=like.device).expand_as(like)
    if bool(((label < 0) | (label > 1) | torch.isnan(label)).any()):
        raise ValueError("preference labels must be probabilities in [0, 1]")
    return label


def require_hard_label(label: Tensor | float | None, loss: str) -> None:
    """Raise ValueError unless ``label`` is None or all ones (losses with no soft form)."""
    if label is None:
        return
    if not bool((torch.as_tensor(label) == 1).all()):
        raise ValueError(f"{loss} has no soft-label form; pass label=None or all ones "
                         "(see prefopt.losses.ACCEPTS_SOFT_LABELS)")


def mix(label: Tensor | None, loss_w: Tensor, loss_l: Tensor | None) -> Tensor:
    """p·loss_w + (1 − p)·loss_l: the hard loss when y_w won and when y_l won, weighted by p.

    With ``label`` None the result is ``loss_w`` and ``loss_l`` is not needed (may be None).
    """
    if label is None:
        return loss_w
    return label * loss_w + (1 - label) * loss_l


def logistic(z: Tensor, label: Tensor | None = None) -> Tensor:
    """Soft logistic loss −[p·log σ(z) + (1 − p)·log σ(−z)] = p·ℓ(z) + (1 − p)·ℓ(−z).

    ℓ(z) = −log σ(z) = softplus(−z), computed stably. (B,) → (B,).
    """
    return mix(label, F.softplus(-z), None if label is None else F.softplus(z))


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x < 0, stably (Mächler 2012, "Accurately computing log(1 − exp(−|a|))").

    log1p(−exp(x)) for x < −log 2, log(−expm1(x)) otherwise; −inf at x = 0.
    """
    log_half = -0.6931471805599453
    # Each branch sees a clamped input so the unused branch has a finite gradient.
    far = torch.log1p(-torch.exp(torch.clamp(x, max=log_half)))
    near = torch.log(-torch.expm1(torch.clamp(x, min=log_half)))
    return torch.where(x < log_half, far, near)
