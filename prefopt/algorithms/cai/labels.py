"""AI preference labels from a judge's answer (Bai et al. 2022 sec. 4; Lee et al. 2023).

The judge sees "Options: (A) ... (B) ... The answer is:" and its soft label is the
normalised probability of the two answers. Each pair is judged in both orders and the two
labels are averaged to cancel position bias (Lee et al. 2023, sec. 2.1.1); chain-of-thought
labels are clamped to [0.4, 0.6] because they are over-confident (Bai et al. 2022, sec. 4.1).

Notation: p_ab = P(first shown wins) with the pair shown as (x, y); p_ba = P(first shown
wins) with the pair shown as (y, x). The label is P(x ≻ y).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch

_ANSWER_CUE = re.compile(r"the answer is\s*:?", re.IGNORECASE)
_AFTER_CUE = re.compile(r"\s*(?i:response|option)?\s*\(?([AB])(?![A-Za-z])")
_PAREN = re.compile(r"\(([AB])\)")
_LEADING = re.compile(r"\s*\(([AB])\)")
_BARE = re.compile(r"\s*\(?([AB])\)?[.:]?\s*")


def soft_label_from_logprobs(logp_a: float, logp_b: float) -> float:
    """P(A) = exp(a) / (exp(a) + exp(b)), the softmax over the two answers.

    Computed as the logistic of d = a − b in the branch that never overflows; log-probs
    of −inf are allowed for one answer (giving 0 or 1). Bai et al. 2022, sec. 4.1.
    """
    d = logp_a - logp_b
    if math.isnan(d):
        raise ValueError(f"soft label undefined for log-probs ({logp_a}, {logp_b})")
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


def soft_labels_from_logprobs(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """Batched :func:`soft_label_from_logprobs`: softmax([a, b])[0] = sigmoid(a − b).

    logp_a, logp_b: (B,) -> (B,) P(A).
    """
    return torch.sigmoid(logp_a - logp_b)


def swap_average(p_ab, p_ba):
    """P(x ≻ y) = (p_ab + (1 − p_ba)) / 2, the mean over the two presentation orders.

    Works elementwise on floats or tensors. Lee et al. 2023, sec. 2.1.1.
    """
    return (p_ab + (1 - p_ba)) / 2


def position_bias(p_ab: float, p_ba: float) -> bool:
    """True when the judge prefers the same position in both orders (both > 0.5 or both < 0.5).

    Lee et al. 2023 report this for 18% (large) to 56% (small labeler) of pairs.
    """
    return (p_ab > 0.5 and p_ba > 0.5) or (p_ab < 0.5 and p_ba < 0.5)


def position_bias_mask(p_ab: torch.Tensor, p_ba: torch.Tensor) -> torch.Tensor:
    """Batched :func:`position_bias`: (B,), (B,) -> (B,) bool."""
    return ((p_ab > 0.5) & (p_ba > 0.5)) | ((p_ab < 0.5) & (p_ba < 0.5))


def clamp_label(p, lo: float = 0.4, hi: float = 0.6):
    """min(max(p, lo), hi): the 40-60 clamp for chain-of-thought labels (Bai et al. 2022).

    Works on floats or tensors.
    """
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"clamp bounds must satisfy 0 <= lo <= hi <= 1, got ({lo}, {hi})")
    if isinstance(p, torch.Tensor):
        return p.clamp(lo, hi)
    return min(max(p, lo), hi)


def parse_answer(text: str) -> Literal["A", "B"] | None:
    """The judge's choice in generated text, or None when absent or ambiguous.

    In order: the letter after the last "The answer is:" ("(A)", "A", "Response (A)");
    a reply that starts with "(A)"/"(B)"; a reply that is only "A"/"B"; the single letter
    among all "(A)"/"(B)" in the text (None when both appear).
    """
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        m = _AFTER_CUE.match(text, cues[-1].end())
        return m.group(1) if m else None   # a cue without a letter: don't guess
    m = _LEADING.match(text)
    if m:
        return m.group(1)
    m = _BARE.fullmatch(text)
    if m:
        return m.group(1)
    letters = {m.group(1) for m in _PAREN.finditer(text)}
    return letters.pop() if len(letters) == 1 else None


def _side(p: float) -> int:
    """−1, 0 or +1 as p is below, at or above 0.5."""
    return (p > 0.5) - (p < 0.5)


@dataclass
class LabelStats:
    """Running counts over AI labels, for logging.

    Agreement: the label and the reference fall on the same side of 0.5 (0.5 agrees only
    with 0.5); pairs with an unparseable label are left out of it.
    """

    n: int = 0
    n_unparseable: int = 0
    n_position_bias: int = 0
    n_with_reference: int = 0
    n_agree: int = 0

    def add(self, label: float | None, *, biased: bool = False,
            reference: float | None = None) -> None:
        """Record one pair: its label (None when the judge's answer was unparseable)."""
        self.n += 1
        self.n_unparseable += label is None
        self.n_position_bias += bool(biased)
        if reference is not None and label is not None:
            self.n_with_reference += 1
            self.n_agree += _side(label) == _side(reference)

    def add_swapped(self, p_ab: float | None, p_ba: float | None, *,
                    reference: float | None = None) -> float | None:
        """Record a pair judged in both orders; return swap_average or None if either failed."""
        if p_ab is None or p_ba is None:
            self.add(None)
            return None
        label = swap_average(p_ab, p_ba)
        self.add(label, biased=position_bias(p_ab, p_ba), reference=reference)
        return label

    def merge(self, other: LabelStats) -> LabelStats:
        """Sum of two tallies (e.g. from two workers)."""
        return LabelStats(*(a + b for a, b in zip(self._counts(), other._counts())))

    def _counts(self) -> tuple[int, ...]:
        return (self.n, self.n_unparseable, self.n_position_bias, self.n_with_reference,
                self.n_agree)

    @property
    def unparseable_rate(self) -> float:
        """n_unparseable / n (0.0 when n = 0)."""
        return self.n_unparseable / self.n if self.n else 0.0

    @property
    def position_bias_rate(self) -> float:
        """n_position_bias / n (0.0 when n = 0)."""
        return self.n_position_bias / self.n if self.n else 0.0

    @property
    def agreement(self) -> float | None:
        """n_agree / n_with_reference (None when no pair had a reference)."""
        return self.n_agree / self.n_with_reference if self.n_with_reference else None

    def as_dict(self, prefix: str = "labels/") -> dict[str, float | int | None]:
        """Counts and rates keyed for a metrics sink."""
        return {f"{prefix}{k}": v for k, v in (
            ("n", self.n), ("n_unparseable", self.n_unparseable),
            ("n_position_bias", self.n_position_bias),
            ("n_with_reference", self.n_with_reference), ("n_agree", self.n_agree),
            ("unparseable_rate", self.unparseable_rate),
            ("position_bias_rate", self.position_bias_rate), ("agreement", self.agreement))}
