"""Preference sources: ``prefer(records, a, b) -> Tensor (B,)`` of P(a ≻ b).

Online methods (online DPO, best-of-n labelling, ...) label pairs of their own samples
through this one contract. Sources:

- ``RewardPreference(reward_source)``: σ((r(a) − r(b))/T) (Bradley-Terry on a reward
  source, ``prefopt.feedback.reward_sources``), or hard: 1, 0 or ½ by the sign of r(a) − r(b);
- ``GoldPreference(world)``: the same on the world's gold reward (an oracle ablation);
- ``AnnotatorPreference(world)``: the world's simulated annotator pool votes (each vote
  sampled); the label is the vote share (soft) or the majority (1, 0 or ½ on a tie);
- an AI judge: the CAI labeler, reached through ``register_preference_source`` (below).

``load_preference_source(spec, ctx)`` builds one from a recipe string:
``reward:<dir>[,<dir>...]`` | ``annotators`` | ``annotators_length_biased`` | ``gold`` |
``judge[:<arg>]``.
"""

from __future__ import annotations

import importlib
import itertools
import random
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import torch

from prefopt.data.records import PromptRecord
from prefopt.errors import ConfigError


@runtime_checkable
class PreferenceSource(Protocol):
    def prefer(self, records: Sequence[PromptRecord], a: Sequence[str],
               b: Sequence[str]) -> torch.Tensor:
        """P(a_i ≻ b_i) for each i, (B,) float32 on the CPU."""
        ...


def compare(r_a: torch.Tensor, r_b: torch.Tensor, hard: bool,
            temperature: float = 1.0) -> torch.Tensor:
    """P(a ≻ b) from two score vectors (B,): σ((r_a − r_b)/T), or (sign(r_a − r_b) + 1)/2."""
    diff = r_a.float() - r_b.float()
    if hard:
        return (torch.sign(diff) + 1) / 2
    return torch.sigmoid(diff / temperature)


class RewardPreference:
    """Bradley-Terry preferences from a reward source (``score(records, responses)``)."""

    def __init__(self, reward_source, hard: bool = False, temperature: float = 1.0):
        if temperature <= 0:
            raise ConfigError("RewardPreference: temperature must be > 0")
        self.source, self.hard, self.temperature = reward_source, hard, temperature

    def prefer(self, records, a, b) -> torch.Tensor:
        r_a = torch.as_tensor(self.source.score(records, a), dtype=torch.float32)
        r_b = torch.as_tensor(self.source.score(records, b), dtype=torch.float32)
        return compare(r_a, r_b, self.hard, self.temperature)


class GoldPreference:
    """The world's gold reward as the labeller (oracle ablation); hard by default."""

    def __init__(self, world, hard: bool = True, temperature: float = 1.0):
        if world is None:
            raise ConfigError("labeler 'gold' needs a world; set world.name in the recipe")
        self.world, self.hard, self.temperature = world, hard, temperature

    def score(self, records, responses) -> torch.Tensor:
        return torch.tensor(list(self.world.gold.score(records, responses)), dtype=torch.float32)

    def prefer(self, records, a, b) -> torch.Tensor:
        r_a, r_b = self.score(records, a), self.score(records, b)
        return compare(r_a, r_b, self.hard, self.temperature)


class AnnotatorPreference:
    """The world's simulated annotators: every annotator votes on every comparison.

    Votes are sampled with a private ``random.Random(seed)``, so labels are noisy like real
    annotations and reproducible for a seed. ``soft``: label = share of votes for a;
    ``majority``: 1 or 0 by majority, ½ on a tie. ``metrics()`` reports the mean pairwise
    inter-annotator agreement of the last call.
    """

    def __init__(self, world, length_biased: bool = False,
                 aggregation: Literal["soft", "majority"] = "soft", seed: int = 0):
        if world is None:
            raise ConfigError("labeler 'annotators' needs a world; set world.name in the recipe")
        if aggregation not in ("soft", "majority"):
            raise ConfigError(f"annotator aggregation: expected soft or majority, got "
                              f"{aggregation!r}")
        self.pool = world.annotator_pool(length_biased)
        self.aggregation, self.rng = aggregation, random.Random(seed)
        self._agreement = float("nan")

    def votes(self, records, a, b) -> list[list[int]]:
        """votes[i][j] = 1 when annotator j prefers a_i."""
        return [list(self.pool.label(r, x, y, self.rng)) for r, x, y in zip(records, a, b)]

    def prefer(self, records, a, b) -> torch.Tensor:
        votes = self.votes(records, a, b)
        share = torch.tensor([sum(v) / len(v) for v in votes], dtype=torch.float32)  # (B,)
        self._agreement = pairwise_agreement(votes)
        if self.aggregation == "soft":
            return share
        return (torch.sign(share - 0.5) + 1) / 2

    def metrics(self) -> dict[str, float]:
        return {"labels/annotator_agreement": self._agreement}


def pairwise_agreement(votes: list[list[int]]) -> float:
    """Mean over annotator pairs (j, k) of the share of items where their votes match."""
    if not votes or len(votes[0]) < 2:
        return float("nan")
    n = len(votes[0])
    rates = [sum(v[j] == v[k] for v in votes) / len(votes)
             for j, k in itertools.combinations(range(n), 2)]
    return sum(rates) / len(rates)


# ---- from recipe strings --------------------------------------------------------------
Factory = Callable[[object, str], PreferenceSource]
"""(ctx, argument after the colon) -> a preference source."""


def _reward(ctx, arg: str) -> PreferenceSource:
    from prefopt.feedback.reward_sources import load_reward_source

    if not arg:
        raise ConfigError("labeler 'reward:<dir>' needs a reward-model directory (or "
                          "comma-separated directories for an ensemble)")
    return RewardPreference(load_reward_source(arg, ctx.world))


def _judge(ctx, arg: str) -> PreferenceSource:
    """The AI-judge hook: ``prefopt.algorithms.cai.judge.build_judge_preference(ctx, arg)``
    returns an object with this module's ``prefer`` contract (the CAI labeler)."""
    try:
        module = importlib.import_module("prefopt.algorithms.cai.judge")
        factory = module.build_judge_preference
    except (ImportError, AttributeError) as e:
        raise ConfigError("labeler 'judge' needs the CAI judge "
                          "(prefopt.algorithms.cai.judge.build_judge_preference), which is "
                          f"not available: {e}") from None
    return factory(ctx, arg)


_SOURCES: dict[str, Factory] = {
    "reward": _reward,
    "annotators": lambda ctx, arg: AnnotatorPreference(ctx.world, False, arg or "soft",
                                                       ctx.cfg.train.seed),
    "annotators_length_biased": lambda ctx, arg: AnnotatorPreference(
        ctx.world, True, arg or "soft", ctx.cfg.train.seed),
    "gold": lambda ctx, arg: GoldPreference(ctx.world),
    "judge": _judge,
}


def register_preference_source(name: str, factory: Factory) -> None:
    """Make ``name[:arg]`` a labeler in recipes (replaces an existing entry)."""
    _SOURCES[name] = factory


def known_preference_sources() -> list[str]:
    return sorted(_SOURCES)


def load_preference_source(spec: str, ctx) -> PreferenceSource:
    """A preference source from ``name[:arg]`` (see the module docstring)."""
    name, _, arg = spec.strip().partition(":")
    if name not in _SOURCES:
        import difflib

        close = difflib.get_close_matches(name, list(_SOURCES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown labeler '{spec}'{hint} (known: "
                          f"{', '.join(known_preference_sources())})")
    return _SOURCES[name](ctx, arg.strip())
