"""Simulated annotators: Bradley-Terry probabilities, flips, length bias, pools, agreement."""

import math
import random

import pytest

from prefopt.data.records import PromptRecord, user
from prefopt.errors import ConfigError
from prefopt.worlds.minihh.annotators import (
    Annotator,
    AnnotatorPool,
    aggregate,
    agreement_with_gold,
    default_pool,
    inter_annotator_agreement,
)
from prefopt.worlds.minihh.behaviours import BEHAVIOURS, respond
from prefopt.worlds.minihh.tasks import make_prompts

ARITH = PromptRecord(prompt=user("what is 7 plus 5?"), family="arithmetic",
                     meta={"kind": "plus", "a": 7, "b": 5, "op": "plus", "answer": "12",
                           "budget": 10})
GOOD, WRONG = "7 plus 5 is 12.", "7 plus 5 is 13."          # gold 1.0 and -0.5, 5 words each
# gold 0.235 (see test_world_gold.test_verbose_breakdown), 18 words
VERBOSE = "great question! let me think. 7 plus 5 is 12. i hope this helps. i hope this helps."


class SeqRng:
    """An rng whose random() returns the given numbers in turn."""

    def __init__(self, *xs):
        self.xs = list(xs)

    def random(self):
        return self.xs.pop(0)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_bradley_terry_probability():
    ann = Annotator("a", temperature=0.5, flip_rate=0.1)
    # (1.0 - (-0.5)) / 0.5 = 3
    assert ann.p_prefer(ARITH, GOOD, WRONG) == pytest.approx(0.9525741268)
    assert ann.p_prefer(ARITH, WRONG, GOOD) == pytest.approx(1 - 0.9525741268)
    # 0.9 * 0.95257 + 0.1 * 0.04743
    assert ann.p_label(ARITH, GOOD, WRONG) == pytest.approx(0.8620593014)


def test_length_bias_flips_preference():
    plain = Annotator("plain", temperature=1.0, flip_rate=0.0)
    biased = Annotator("biased", temperature=1.0, flip_rate=0.0, length_bias=1.0)
    # gold difference 0.235 - 1.0 = -0.765; 13 extra words add 1.0 * 13 / 10 = 1.3
    assert plain.p_prefer(ARITH, VERBOSE, GOOD) == pytest.approx(sig(-0.765))
    assert biased.p_prefer(ARITH, VERBOSE, GOOD) == pytest.approx(sig(0.535))
    assert plain.p_prefer(ARITH, VERBOSE, GOOD) < 0.5 < biased.p_prefer(ARITH, VERBOSE, GOOD)


def test_label_sampling_and_flip():
    ann = Annotator("a", temperature=0.5, flip_rate=0.1)   # P(a > b) = 0.95257
    assert ann.label(ARITH, GOOD, WRONG, SeqRng(0.3, 0.9)) == 1    # vote a, no flip
    assert ann.label(ARITH, GOOD, WRONG, SeqRng(0.99, 0.9)) == 0   # vote b, no flip
    assert ann.label(ARITH, GOOD, WRONG, SeqRng(0.99, 0.05)) == 1  # vote b, flipped
    rng = random.Random(0)
    share = sum(ann.label(ARITH, GOOD, WRONG, rng) for _ in range(4000)) / 4000
    assert abs(share - 0.8620593) < 0.02


def test_aggregate():
    assert aggregate([1, 1, 0]) == 1.0
    assert aggregate([1, 0]) == 0.5
    assert aggregate([0, 0, 1]) == 0.0
    assert aggregate([1, 1, 0, 0, 1], "soft") == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="unknown aggregation 'mean'"):
        aggregate([1], "mean")


def test_pool_votes_and_prefer():
    pool = AnnotatorPool([Annotator("a", 0.5, 0.1), Annotator("b", 1.0, 0.0)])
    # two draws per annotator: the Bradley-Terry vote, then the flip
    assert pool.label(ARITH, GOOD, WRONG, SeqRng(0.3, 0.9, 0.99, 0.5)) == [1, 0]
    # mean of 0.8620593 and sigmoid(1.5) = 0.8175745
    assert pool.prefer([ARITH], [GOOD], [WRONG])[0] == pytest.approx(0.8398169)
    assert pool.label_aggregated(ARITH, GOOD, WRONG, SeqRng(0.3, 0.9, 0.2, 0.5), "soft") == 1.0


def test_inter_annotator_agreement():
    votes = [[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]]
    # pairs (0,1): 3/4, (0,2): 2/4, (1,2): 3/4 -> mean 2/3
    assert inter_annotator_agreement(votes) == pytest.approx(2 / 3)


def test_agreement_with_gold():
    recs = [ARITH] * 4
    a = [GOOD, WRONG, GOOD, GOOD]
    b = [WRONG, GOOD, GOOD, WRONG]
    labels = [1, 1, 1, 0.5]   # agree, disagree, gold tie (dropped), label tie (dropped)
    assert agreement_with_gold(recs, a, b, labels) == 0.5
    assert math.isnan(agreement_with_gold(recs[:1], [GOOD], [GOOD], [1]))


def test_default_pools():
    pool = default_pool()
    assert [a.temperature for a in pool.annotators] == [0.3, 0.5, 0.6, 0.8, 1.0]
    assert [a.flip_rate for a in pool.annotators] == [0.05, 0.1, 0.1, 0.15, 0.2]
    assert all(a.length_bias == 0.0 for a in pool.annotators)
    jittered = default_pool(seed=1)
    assert jittered.annotators == default_pool(seed=1).annotators
    for a, b in zip(jittered.annotators, pool.annotators):
        assert 0.8 * b.temperature <= a.temperature <= 1.2 * b.temperature
    biased = default_pool(length_biased=True)
    assert pool.prefer([ARITH], [VERBOSE], [GOOD])[0] < 0.5
    assert biased.prefer([ARITH], [VERBOSE], [GOOD])[0] > 0.5


def test_pools_on_sampled_pairs():
    """The plain pool mostly agrees with gold; the length-biased one much less."""
    rng = random.Random(0)
    recs, a, b = [], [], []
    for r in make_prompts("validation", 150, seed=0):
        b1, b2 = rng.sample(BEHAVIOURS, 2)
        recs.append(r)
        a.append(respond(r, b1, rng))
        b.append(respond(r, b2, rng))
    rates = {}
    for biased in (False, True):
        pool = default_pool(length_biased=biased)
        votes = [pool.label(r, x, y, rng) for r, x, y in zip(recs, a, b)]
        rates[biased] = agreement_with_gold(recs, a, b, [aggregate(v) for v in votes])
        assert 0.55 < inter_annotator_agreement(votes) < 0.85
    assert rates[False] > 0.85
    assert rates[True] < rates[False] - 0.1
