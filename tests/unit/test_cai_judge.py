"""AIJudge against a fake backend with fixed log-probs: every number worked out by hand."""

import math
import re

import pytest
import torch

from prefopt.algorithms.cai.backends import LocalHFBackend
from prefopt.algorithms.cai.constitution import Constitution, Principle
from prefopt.algorithms.cai.http_backend import OpenAIChatBackend
from prefopt.algorithms.cai.judge import (
    AIJudge,
    BackendConfig,
    backend_from_spec,
    hard_label,
    soft_label,
)
from prefopt.algorithms.cai.labels import LabelStats
from prefopt.algorithms.cai.prompts import ANSWER_CUE, COT_CUE
from prefopt.algorithms.cai.rl_cai import (
    Comparisons,
    drop_identical,
    labeler_report,
    labelled_pairs,
    split_held_out,
)
from prefopt.data.records import PromptRecord, user
from prefopt.errors import ConfigError

CONST = Constitution("t", tuple(Principle(f"p{i}", f"crit{i}", f"rev{i}", f"Q{i}?")
                                for i in range(4)))
SHOWN = re.compile(r"\n\(A\) (.*)\n\(B\) (.*)\n")
PAIRS = [("x", "y"), ("u", "v"), ("s", "t")]
log = math.log


def shown(conv):
    """(first option, second option) of a comparison conversation."""
    return SHOWN.search(conv[0]["content"]).groups()


class FakeBackend:
    """Log-probs / replies looked up by the (A, B) texts shown; records every call."""

    def __init__(self, logprobs=None, texts=None):
        self.logprobs, self.texts = logprobs or {}, texts or {}
        self.scored, self.generated = [], []

    def choice_logprobs(self, convs, choices):
        assert tuple(choices) == ("(A)", "(B)")
        self.scored += convs
        return [self.logprobs.get(shown(c)) for c in convs]

    def generate(self, convs, max_new_tokens, temperature):
        self.generated += convs
        return [self.texts[shown(c)] for c in convs]


def _judge(backend, **kw):
    records = [PromptRecord(user(f"q{i}"), id=f"r{i}") for i in range(len(PAIRS))]
    a, b = [x for x, _ in PAIRS], [y for _, y in PAIRS]
    return AIJudge(backend, CONST, **kw), records, a, b


def test_soft_labels_swap_average_and_position_bias():
    """Per order p = e^{ℓA} / (e^{ℓA} + e^{ℓB}); label = (p_ab + 1 − p_ba) / 2.

    (x, y): p_ab = .6/(.6+.2) = .75, p_ba = .1/(.1+.3) = .25 -> (.75 + .75)/2 = .75, unbiased
    (u, v): p_ab = .8/(.8+.2) = .8,  p_ba = .6/(.6+.4) = .6  -> (.8 + .4)/2 = .6, biased
    (s, t): p_ab = σ(−1 − (−3)) = σ(2) = .880797..., p_ba = σ(0) = .5
            -> (.880797 + .5)/2 = .690399, unbiased (.5 is neither side)
    Reference [1, 0, None]: .75 agrees with 1, .6 disagrees with 0, the third has none.
    """
    backend = FakeBackend({("x", "y"): [log(.6), log(.2)], ("y", "x"): [log(.1), log(.3)],
                           ("u", "v"): [log(.8), log(.2)], ("v", "u"): [log(.6), log(.4)],
                           ("s", "t"): [-1.0, -3.0], ("t", "s"): [-2.0, -2.0]})
    judge, records, a, b = _judge(backend)
    j = judge.judge(records, a, b, reference=[1.0, 0.0, None])
    sigma2 = 1 / (1 + math.exp(-2))
    assert j.p_ab == pytest.approx([.75, .8, sigma2])
    assert j.p_ba == pytest.approx([.25, .6, .5])
    assert j.labels == pytest.approx([.75, .6, (sigma2 + .5) / 2])
    assert (sigma2 + .5) / 2 == pytest.approx(0.6903985389889412)
    assert (j.stats.n, j.stats.n_position_bias, j.stats.n_unparseable) == (3, 1, 0)
    assert (j.stats.n_with_reference, j.stats.n_agree, j.stats.agreement) == (2, 1, 0.5)
    assert j.n_from_text == 0 and backend.generated == []
    # one backend call: the three (a, b) orders, then the three (b, a) orders
    assert [shown(c) for c in backend.scored] == [("x", "y"), ("u", "v"), ("s", "t"),
                                                  ("y", "x"), ("v", "u"), ("t", "s")]
    assert judge.metrics()["labels/position_bias_rate"] == pytest.approx(1 / 3)


def test_fallback_parses_text_and_counts_unparseable():
    """No log-probs -> the reply is generated and parsed: (A) = 1, (B) = 0.

    (x, y): log-probs .9/.1 -> p_ab = .9; (y, x) "(B) is better" -> p_ba = 0 -> (.9 + 1)/2 = .95
    (u, v): "(A)" and (v, u) "The answer is: (A)" -> 1, 1 -> (1 + 0)/2 = .5, biased
    (s, t): "I cannot decide" (and (t, s) "(B)") -> unparseable -> label None (NaN from
            prefer), counted once for the pair
    """
    texts = {("y", "x"): "(B) is better", ("u", "v"): "(A)", ("v", "u"): "The answer is: (A)",
             ("s", "t"): "I cannot decide", ("t", "s"): "(B)"}
    backend = FakeBackend({("x", "y"): [log(.9), log(.1)]}, texts)
    judge, records, a, b = _judge(backend)
    j = judge.judge(records, a, b)
    assert j.labels[0] == pytest.approx(.95) and j.labels[1:] == [.5, None]
    assert j.p_ab[1:] == [1.0, None] and j.p_ba == [0.0, 1.0, 0.0]
    assert (j.stats.n, j.stats.n_unparseable, j.stats.n_position_bias) == (3, 1, 1)
    assert j.n_from_text == 5   # every order but (x, y)
    assert ("x", "y") not in [shown(c) for c in backend.generated]
    p = judge.prefer(records, a, b)
    assert p.dtype == torch.float32 and p[:2].tolist() == pytest.approx([.95, .5])
    assert math.isnan(p[2].item())


@pytest.mark.parametrize("clamp, expected", [((0.4, 0.6), .6), ((0.2, 0.8), .75)])
def test_chain_of_thought_clamps_each_order(clamp, expected):
    """Reasoning, then the (A)/(B) log-probs after "The answer is:".

    (x, y): p_ab = .9, p_ba = .3; clamp 40-60: .6 and .4 -> (.6 + .6)/2 = .6;
            clamp 20-80: .8 and .3 -> (.8 + .7)/2 = .75
    (u, v): no log-probs; reasoning ends "(B)" / "(A)" -> 0 / 1 -> clamped lo / hi
            -> (lo + 1 − hi)/2 = lo
    """
    backend = FakeBackend({("x", "y"): [log(.9), log(.1)], ("y", "x"): [log(.3), log(.7)]},
                          {("x", "y"): "x is safer.", ("y", "x"): "y is worse.",
                           ("u", "v"): "v is better. The answer is: (B)",
                           ("v", "u"): "v. The answer is: (A)",
                           ("s", "t"): "hmm", ("t", "s"): "hmm"})
    judge, records, a, b = _judge(backend, chain_of_thought=True, clamp=clamp)
    j = judge.judge(records, a, b)
    assert j.labels[0] == pytest.approx(expected)
    assert j.labels[1] == pytest.approx(clamp[0]) and j.labels[2] is None
    assert all(c[-1]["content"].endswith(COT_CUE) for c in backend.generated)
    follow = backend.scored[0]
    assert [m["role"] for m in follow] == ["user", "assistant", "user"]
    assert follow[1]["content"] == "x is safer." and follow[2]["content"] == ANSWER_CUE
    assert j.n_from_text == 4 and j.stats.n_unparseable == 1


def test_one_principle_per_comparison_seeded():
    """random.Random(0).choice over 4 principles, 6 times: p3 p3 p0 p2 p3 p3; both orders of
    a comparison ask the same principle's question."""
    n = 6
    backend = FakeBackend({(f"a{i}", f"b{i}"): [0.0, 0.0] for i in range(n)}
                          | {(f"b{i}", f"a{i}"): [0.0, 0.0] for i in range(n)})
    judge = AIJudge(backend, CONST, seed=0)
    records = [PromptRecord(user("q"))] * n
    j = judge.judge(records, [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)])
    assert j.principles == ["p3", "p3", "p0", "p2", "p3", "p3"]
    for i, name in enumerate(j.principles):
        question = f"Q{name[1]}?"
        assert question in backend.scored[i][0]["content"]
        assert question in backend.scored[n + i][0]["content"]
    assert j.labels == [0.5] * n and j.stats.n_position_bias == 0
    other = AIJudge(FakeBackend(backend.logprobs), CONST, seed=1)
    assert other.judge(records, [f"a{i}" for i in range(n)],
                       [f"b{i}" for i in range(n)]).principles != j.principles


def test_label_helpers():
    assert soft_label([log(.3), log(.1)]) == pytest.approx(.75)
    assert soft_label([-math.inf, -math.inf]) is None
    assert soft_label([0.0, -math.inf]) == 1.0
    assert (hard_label("A"), hard_label("B"), hard_label(None)) == (1.0, 0.0, None)
    with pytest.raises(ValueError):
        AIJudge(FakeBackend(), CONST, clamp=(0.7, 0.3))


def test_labelled_pairs_orientation_and_report_counts():
    """Labels [.75, .2, None, .5]: a wins (.75); b wins -> swapped with 1 − .2 = .8; None
    dropped; .5 kept as a wins. mean_confidence = (|.5| + |−.6| + 0)/3 = 1.1/3."""
    records = [PromptRecord(user(f"q{i}"), id=f"r{i}") for i in range(4)]
    c = Comparisons(records, ["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"],
                    [1.0, 1.0, 0.0, None], "human", n_identical=2)
    labels = [.75, .2, None, .5]
    pairs = labelled_pairs(c, labels, ["ai:p0", "ai:p1", "ai:p2", "ai:p0"])
    assert [(p.chosen, p.rejected) for p in pairs] == [("a0", "b0"), ("b1", "a1"),
                                                       ("a3", "b3")]
    assert [p.label for p in pairs] == pytest.approx([.75, .8, .5])
    assert [p.id for p in pairs] == ["r0", "r1", "r3"]
    stats = LabelStats()
    for lab, ref in zip(labels, c.reference):
        stats.add(lab, reference=ref)
    rep = labeler_report(stats, c, ["p0", "p1", "p2", "p0"], labels)
    assert rep["n"] == 4 and rep["n_labelled"] + rep["n_unparseable"] == rep["n"]
    assert rep["n_identical"] == 2 and rep["reference"] == "human"
    assert (rep["n_with_reference"], rep["n_agree"]) == (2, 1)   # .75 vs 1 yes; .2 vs 1 no
    assert rep["mean_confidence"] == pytest.approx(1.1 / 3)
    assert rep["principles"] == {"p0": 2, "p1": 1, "p2": 1}


def test_drop_identical_and_split():
    recs, a, b, n = drop_identical([1, 2, 3], ["x", "y ", "z"], ["x ", "w", "z"])
    assert (recs, a, b, n) == ([2], ["y "], ["w"], 2)
    train, held = split_held_out(list(range(10)), 0.2, seed=0)
    assert len(train) == 8 and len(held) == 2 and sorted(train + held) == list(range(10))
    assert split_held_out([7], 0.5, 0) == ([7], [])


class _Tok:
    eos_token_id, pad_token_id = 3, 0


class _Policy:
    model, tokenizer = torch.nn.Linear(1, 1), _Tok()


def test_backend_from_spec(tiny_llama, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "secret")
    http = backend_from_spec(BackendConfig("http://localhost:8000", http_model="m",
                                           api_key_env="JUDGE_KEY"))
    assert isinstance(http, OpenAIChatBackend)
    assert http.url == "http://localhost:8000/v1/chat/completions" and http.model == "m"
    with pytest.raises(ConfigError, match="http_model"):
        backend_from_spec(BackendConfig("https://x"))

    class World:
        calls = 0

        def base_model_dir(self):
            World.calls += 1
            return tiny_llama

    world, pol = World(), _Policy()
    local = backend_from_spec(BackendConfig("policy"), policy=pol, world=world)
    assert isinstance(local, LocalHFBackend) and local.model is pol.model
    assert World.calls == 0                      # "world" is only resolved when named
    assert isinstance(backend_from_spec(BackendConfig("world"), world=world), LocalHFBackend)
    assert World.calls == 1
    with pytest.raises(ConfigError, match="needs a world"):
        backend_from_spec(BackendConfig("world"))
    with pytest.raises(ConfigError, match="not a model directory"):
        backend_from_spec(BackendConfig("/no/such/model"))
