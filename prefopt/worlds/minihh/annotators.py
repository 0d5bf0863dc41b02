"""Simulated annotators (in the spirit of AlpacaFarm's simulated pool, Dubois et al. 2023).

An annotator compares two responses with the Bradley-Terry model on the gold reward r*,
optionally biased towards the longer response, then flips its label with ``flip_rate``:

    P(a > b) = sigmoid((r*(a) - r*(b) + length_bias * (len_words(a) - len_words(b)) / 10)
                       / temperature)
    P(label = 1) = (1 - flip_rate) * P(a > b) + flip_rate * (1 - P(a > b))

A label is 1 when ``a`` is preferred, 0 when ``b`` is.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from prefopt.data.records import PromptRecord
from prefopt.errors import ConfigError, DataError
from prefopt.worlds.minihh.gold import gold_reward, words

AGGREGATIONS = ("majority", "soft")


def len_words(text: str) -> int:
    """Length in words, as the gold reward counts them."""
    return len(words(text))


def sigmoid(x: float) -> float:
    """Numerically safe logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Annotator:
    """One simulated annotator: Bradley-Terry noise (temperature), label flips, length bias."""

    name: str
    temperature: float
    flip_rate: float
    length_bias: float = 0.0

    def __post_init__(self):
        if self.temperature <= 0:
            raise ConfigError(f"annotator '{self.name}': temperature must be > 0")
        if not 0.0 <= self.flip_rate <= 0.5:
            raise ConfigError(f"annotator '{self.name}': flip_rate must be in [0, 0.5]")

    def logit(self, record: PromptRecord, a: str, b: str) -> float:
        """(r*(a) - r*(b) + length_bias * (len(a) - len(b)) / 10) / temperature."""
        diff = gold_reward(record, a) - gold_reward(record, b)
        diff += self.length_bias * (len_words(a) - len_words(b)) / 10.0
        return diff / self.temperature

    def p_prefer(self, record: PromptRecord, a: str, b: str) -> float:
        """P(a > b) before label flips."""
        return sigmoid(self.logit(record, a, b))

    def p_label(self, record: PromptRecord, a: str, b: str) -> float:
        """P(label = 1) after label flips."""
        p = self.p_prefer(record, a, b)
        return (1.0 - self.flip_rate) * p + self.flip_rate * (1.0 - p)

    def label(self, record: PromptRecord, a: str, b: str, rng: random.Random) -> int:
        """Sample a Bradley-Terry label, then flip it with probability flip_rate."""
        vote = int(rng.random() < self.p_prefer(record, a, b))
        if rng.random() < self.flip_rate:
            vote = 1 - vote
        return vote


def aggregate(votes: Sequence[int], method: str = "majority") -> float:
    """``majority``: 1.0 / 0.0 by majority, 0.5 on a tie; ``soft``: share of votes for a."""
    if method not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation '{method}'; choose from {', '.join(AGGREGATIONS)}")
    if not votes:
        raise DataError("no votes to aggregate")
    share = sum(votes) / len(votes)
    if method == "soft":
        return share
    return 0.5 if share == 0.5 else float(share > 0.5)


class AnnotatorPool:
    """A pool of annotators that each vote on every comparison."""

    def __init__(self, annotators: Sequence[Annotator], aggregation: str = "majority"):
        if not annotators:
            raise ConfigError("an annotator pool needs at least one annotator")
        aggregate([1], aggregation)  # validates the name
        self.annotators = tuple(annotators)
        self.aggregation = aggregation

    def label(self, record: PromptRecord, a: str, b: str, rng: random.Random) -> list[int]:
        """One vote per annotator, in pool order."""
        return [ann.label(record, a, b, rng) for ann in self.annotators]

    def label_aggregated(self, record: PromptRecord, a: str, b: str, rng: random.Random,
                         method: str | None = None) -> float:
        """The pool's label for one comparison (``aggregate`` of the votes)."""
        return aggregate(self.label(record, a, b, rng), method or self.aggregation)

    def prefer(self, prompts: Sequence[PromptRecord], responses_a: Sequence[str],
               responses_b: Sequence[str]) -> list[float]:
        """Expected vote share for a (mean of the annotators' P(label = 1)); no sampling."""
        return [sum(ann.p_label(p, a, b) for ann in self.annotators) / len(self.annotators)
                for p, a, b in zip(prompts, responses_a, responses_b)]


DEFAULT_TEMPERATURES = (0.3, 0.5, 0.6, 0.8, 1.0)
DEFAULT_FLIP_RATES = (0.05, 0.1, 0.1, 0.15, 0.2)
LENGTH_BIASES = (1.0, 1.25, 1.5, 1.5, 2.0)


def default_pool(length_biased: bool = False, seed: int = 0) -> AnnotatorPool:
    """Five annotators, temperatures 0.3-1.0 and flip rates 0.05-0.2.

    ``length_biased`` gives each a strong length bias (1-2 logits per 10 words), enough to
    prefer a padded correct answer to a concise one. ``seed`` 0 gives the listed values;
    another seed jitters each temperature and flip rate by up to +-20% (deterministically).
    """
    rng = random.Random(f"minihh-pool-{seed}")
    pool = []
    for i, (t, f) in enumerate(zip(DEFAULT_TEMPERATURES, DEFAULT_FLIP_RATES)):
        if seed != 0:
            t, f = t * rng.uniform(0.8, 1.2), f * rng.uniform(0.8, 1.2)
        bias = LENGTH_BIASES[i] if length_biased else 0.0
        pool.append(Annotator(f"annotator{i}", t, f, bias))
    return AnnotatorPool(pool)


def agreement_with_gold(records: Sequence[PromptRecord], responses_a: Sequence[str],
                        responses_b: Sequence[str], labels: Sequence[float]) -> float:
    """Share of comparisons where the label (> 0.5 means a) picks the gold's winner.

    Comparisons that the gold ties, or whose label is exactly 0.5, are left out; with none
    left the rate is nan.
    """
    hits = total = 0
    for rec, a, b, lab in zip(records, responses_a, responses_b, labels):
        ra, rb = gold_reward(rec, a), gold_reward(rec, b)
        if ra == rb or lab == 0.5:
            continue
        total += 1
        hits += (lab > 0.5) == (ra > rb)
    return hits / total if total else float("nan")


def inter_annotator_agreement(votes: Sequence[Sequence[int]]) -> float:
    """Pairwise agreement: for each pair of annotators the share of items where their votes
    match, averaged over pairs. ``votes[i][j]`` is annotator j's vote on item i."""
    if not votes or len(votes[0]) < 2:
        raise DataError("inter-annotator agreement needs items with at least two votes")
    n_ann = len(votes[0])
    rates = [sum(v[j] == v[k] for v in votes) / len(votes)
             for j, k in itertools.combinations(range(n_ann), 2)]
    return sum(rates) / len(rates)
