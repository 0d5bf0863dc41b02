"""The evaluation harness on fixed samples (hand-worked numbers), suite validation, and
generation on the tiny llama (determinism, KL of a policy against itself)."""

import math
import re

import numpy as np
import pytest
import torch

from prefopt.data.records import PromptRecord, user
from prefopt.errors import ConfigError
from prefopt.eval.harness import evaluate_many, format_table, score_rows, summarize
from prefopt.eval.samples import Samples, generate_samples, read_samples, write_samples
from prefopt.eval.stats import bootstrap_ci, bootstrap_ci_grouped, rates_by_group
from prefopt.eval.suite import (
    BootstrapSpec,
    SamplingSpec,
    ai_judge_config,
    load_suite,
    parse_suite,
)

BOOT = BootstrapSpec(n_boot=200, alpha=0.05, seed=0)


def records(families):
    return [PromptRecord(user(f"q{i}"), id=f"p{i}", family=f) for i, f in enumerate(families)]


def fixed_samples():
    """Four prompts, one sample each, with log-probs under π and π_ref."""
    s = Samples(records(["arithmetic", "harmful", "facts", "harmful"]), 1,
                responses=["a b a", "b c", "no", "sure here is how"],
                reference_responses=["x", "y y", "z", "w w w w"],
                logp_policy=[-1.0, -2.0, -3.0, -4.0], logp_reference=[-2.0, -1.5, -3.5, -4.0],
                token_logps=[[-0.5, -0.5], [-2.0], [-1.0, -2.0], [-4.0]])
    scores = {"gold": [1.0, -0.5, 0.0, 2.0], "preference": [1.0, 0.0, 0.5, 1.0],
              "length": [3.0, 2.0, 1.0, 4.0], "reference_length": [1.0, 2.0, 1.0, 4.0],
              "correct": [1, -1, 0, -1], "harmful_compliance": [-1, 1, -1, 0],
              "over_refusal": [0, -1, 1, -1]}
    return s, scores


def test_summarize_hand_worked():
    """gold = (1 − 0.5 + 0 + 2)/4 = 0.625; gold/harmful = (−0.5 + 2)/2 = 0.75;
    win rate = (1 + 0 + 0.5 + 1)/4 = 0.625 (tie = ½); k1 = [1, −0.5, 0.5, 0] → KL 0.25;
    entropy h = −log π = [1, 2, 3, 4] → 2.5 per sequence, 10/6 per token (6 tokens);
    length (3 + 2 + 1 + 4)/4 = 2.5 words; correct on helpful rows [1, 0] → 0.5, harmful
    compliance on harmful rows [1, 0] → 0.5, over-refusal on helpful rows [0, 1] → 0.5;
    distinct-1 = 8 unique of 10 words ("a b a", "b c", "no", "sure here is how")."""
    s, scores = fixed_samples()
    r = summarize(s, scores, boot=BOOT)
    m = r["metrics"]
    assert m["gold"]["value"] == 0.625 and m["gold"]["n"] == 4
    assert m["gold/harmful"]["value"] == 0.75 and m["gold/arithmetic"]["value"] == 1.0
    assert m["win_rate"]["value"] == 0.625 and m["win_rate"]["n_unparseable"] == 0
    assert m["kl"]["value"] == 0.25 and m["kl"]["estimator"] == "k1"
    assert m["entropy"]["value"] == 2.5 and m["entropy"]["per_token"] == pytest.approx(10 / 6)
    assert m["length"]["value"] == 2.5
    assert m["correct"]["value"] == 0.5 and m["correct"]["n"] == 2
    assert m["correct/arithmetic"]["value"] == 1.0 and m["correct/facts"]["value"] == 0.0
    assert m["harmful_compliance/harmful"]["value"] == 0.5
    assert m["over_refusal"]["value"] == 0.5 and "over_refusal/harmful" not in m
    assert m["distinct_1"]["value"] == 0.8 and m["distinct_1"]["ci_low"] is None
    assert r["notes"] == {"reward": "no reward source (--reward)"}


def test_intervals_are_the_stats_bootstrap():
    """Every CI is bootstrap_ci over the per-prompt values with the suite's seed; family
    rates equal rates_by_group (which drops the not-applicable −1 rows)."""
    s, scores = fixed_samples()
    m = summarize(s, scores, boot=BOOT)["metrics"]
    assert (m["gold"]["value"], m["gold"]["ci_low"], m["gold"]["ci_high"]) == bootstrap_ci(
        scores["gold"], n_boot=200, seed=0)
    k1 = np.array([1.0, -0.5, 0.5, 0.0])
    assert (m["kl"]["ci_low"], m["kl"]["ci_high"]) == bootstrap_ci(k1, n_boot=200)[1:]
    rates = rates_by_group(["all"] * 4, scores["correct"], n_boot=200)["all"]
    assert (m["correct"]["value"], m["correct"]["ci_low"]) == (rates["rate"], rates["ci_low"])


def test_lc_win_rate_equal_length_gaps_is_raw():
    """Policy − reference lengths are [2, 0, 0, 0]: not all equal, so the fit runs; with all
    gaps 0 the feature is 0 and the LC win rate is the raw win rate, 0.625."""
    s, scores = fixed_samples()
    scores["reference_length"] = scores["length"]
    m = summarize(s, scores, boot=BOOT)["metrics"]
    assert m["lc_win_rate"]["value"] == pytest.approx(0.625, abs=1e-9)


def test_k_samples_average_per_prompt_and_unparseable_dropped():
    """k = 2: prompt means of the preferences [1, nan | nan, nan | 0, 0.5] are
    [1, (dropped), 0.25] → win rate 0.625 over 2 prompts, 3 unparseable judgements;
    gold [1, 3 | 0, 0 | −1, −1] → prompt means [2, 0, −1] → 1/3."""
    s = Samples(records(["a", "b", "c"]), 2, responses=["r"] * 6, reference_responses=["q"] * 6)
    scores = {"preference": [1, math.nan, math.nan, math.nan, 0, 0.5],
              "gold": [1, 3, 0, 0, -1, -1], "length": [1] * 6, "reference_length": [1] * 6}
    m = summarize(s, scores, ["gold", "win_rate"], BOOT)["metrics"]
    assert m["win_rate"]["value"] == 0.625 and m["win_rate"]["n"] == 2
    assert m["win_rate"]["n_unparseable"] == 3
    assert m["gold"]["value"] == pytest.approx(1 / 3) and m["gold"]["n"] == 3


def test_best_of_n_reports_the_analytic_kl():
    """n = 4: KL ≤ log 4 − 3/4 = 0.6363 nats; no log-probs, so entropy is missing."""
    s = Samples(records(["a", "b"]), 1, responses=["x", "y"], best_of_n=4)
    r = summarize(s, {"length": [1.0, 1.0]}, ["kl", "entropy", "length"], BOOT)
    assert r["metrics"]["kl"]["value"] == pytest.approx(math.log(4) - 0.75)
    assert r["metrics"]["kl"]["estimator"] == "best_of_n_analytic_bound"
    assert r["notes"] == {"entropy": "no log-probs (best-of-n policy)"}


class FakeWorld:
    """Gold = number of words; classify: "no" refuses, "sure" complies."""

    class Gold:
        def score(self, recs, responses):
            return [float(len(t.split())) for t in responses]

    gold = Gold()

    def classify(self, record, response):
        refusal, comply = response.startswith("no"), response.startswith("sure")
        return {"correct": not refusal, "harmful_compliance": comply,
                "over_refusal": refusal, "refusal": refusal}


class FakeJudge:
    def __init__(self):
        self.calls = []

    def prefer(self, recs, a, b):
        self.calls.append((list(a), list(b)))
        return torch.tensor([float(len(x) > len(y)) for x, y in zip(a, b)])


def test_score_rows_columns():
    """The judge sees (policy, reference) in that order; outcomes are −1 where they do not
    apply (correct/over-refusal on harmful prompts, harmful compliance elsewhere)."""
    s = Samples(records(["facts", "harmful"]), 1, responses=["no way", "sure thing now"],
                reference_responses=["a", "bbbbbbbbbbbbbbbbbb"])
    judge = FakeJudge()
    scores = score_rows(s, FakeWorld(), judge, FakeWorld.Gold())
    assert judge.calls == [(s.responses, s.reference_responses)]
    assert scores["preference"] == [1.0, 0.0]
    assert scores["gold"] == scores["reward"] == [2.0, 3.0]
    assert scores["length"] == [2.0, 3.0] and scores["reference_length"] == [1.0, 1.0]
    assert scores["correct"] == [0, -1] and scores["over_refusal"] == [1, -1]
    assert scores["harmful_compliance"] == [-1, 1]


def test_evaluate_many_two_stage_bootstrap():
    """Two seeds: gold per-prompt [1, 2] and [3, 5] → point (1.5 + 4)/2 = 2.75, the interval
    is bootstrap_ci_grouped's; distinct-1 (no per-prompt values) is the mean over seeds."""
    def result(gold, d1):
        return {"model": "m", "suite": "s", "per_prompt": {"family": ["a", "a"], "gold": gold},
                "metrics": {"distinct_1": {"value": d1}}}

    out = evaluate_many({0: result([1, 2], 0.4), 1: result([3, 5], 0.6)}, BOOT)["metrics"]
    expected = bootstrap_ci_grouped([[1, 2], [3, 5]], n_boot=200, seed=0)
    assert (out["gold"]["value"], out["gold"]["ci_low"], out["gold"]["ci_high"]) == expected
    assert out["gold"]["value"] == 2.75 and out["gold/a"]["value"] == 2.75
    assert out["distinct_1"]["value"] == 0.5 and out["distinct_1"]["ci_low"] is None


def test_format_table_lists_metrics_and_notes():
    s, scores = fixed_samples()
    r = {"model": "m", "suite": "s", "n_prompts": 4, "samples_per_prompt": 1, "judge": "gold",
         **summarize(s, scores, boot=BOOT)}
    lines = format_table(r).splitlines()
    assert lines[2].split()[:2] == ["gold", "0.625"]
    assert lines[-1].split() == ["harmful", "0.750", "-", "0.500", "-"]
    assert any(line.split()[:2] == ["reward", "n/a"] for line in lines)


# ---- suites ------------------------------------------------------------------------------
def test_shipped_suites_load():
    full, tiny = load_suite("minihh"), load_suite("minihh_tiny")
    assert full.n_prompts == 200 and full.world.preset == "default" and full.judge == "gold"
    assert tiny.n_prompts == 12 and tiny.sampling.max_new_tokens == 16
    assert load_suite("minihh", ["sampling.seed=3"]).sampling.seed == 3


@pytest.mark.parametrize("data, key", [
    ({"world": {"name": "minihh"}, "sampling": {"temprature": 1.0}}, "sampling.temprature"),
    ({"world": {"name": "minihh"}, "n_prompts": "many"}, "n_prompts"),
    ({"world": {"name": "minihh"}, "metrics": ["gold", "winrate"]}, "metrics[1]"),
    ({"world": {"name": "minihh"}, "split": "dev"}, "split"),
    ({"world": {"name": "minihh", "preset": "huge"}}, "world.preset"),
    ({"world": {"name": "minihh"}, "sampling": {"samples_per_prompt": 0}},
     "sampling.samples_per_prompt"),
    ({"prompts_file": None}, "world"),
])
def test_suite_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=r"^suite\.yaml: .*" + re.escape(key)):
        parse_suite(data, "suite.yaml")


def test_suite_error_suggests_a_key_and_a_suite():
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        parse_suite({"world": {"name": "minihh"}, "sampling": {"temprature": 1.0}})
    with pytest.raises(ConfigError, match="Did you mean 'minihh'"):
        load_suite("minhh")


def test_ai_judge_spec():
    assert ai_judge_config("ai:").backend == "world"
    cfg = ai_judge_config("ai:http://localhost:8000/v1#my-model")
    assert (cfg.backend, cfg.http_model) == ("http://localhost:8000/v1", "my-model")
    assert ai_judge_config("ai:/models/judge").backend == "/models/judge"
    with pytest.raises(ConfigError, match="after '#'"):
        ai_judge_config("ai:https://host/v1")


# ---- generation on the tiny llama ---------------------------------------------------------
def test_kl_of_a_policy_against_itself_is_zero(tiny_llama, tmp_path):
    """Reference = policy, same seed: identical samples and log-probs, so every k1 term is
    exactly 0 and every judgement a tie (win rate ½). Sampling is deterministic for the
    seed, and the cache round-trips."""
    spec = SamplingSpec(temperature=1.0, max_new_tokens=6, samples_per_prompt=2, seed=3)
    recs = records(["a", "b", "c"])
    s = generate_samples(str(tiny_llama), recs, spec, reference=str(tiny_llama))
    assert s.responses == s.reference_responses and len(s.responses) == 6
    assert s.logp_policy == s.logp_reference
    assert all(lp < 0 for lp in s.logp_policy)
    assert s.logp_policy == pytest.approx([sum(t) for t in s.token_logps], abs=1e-4)
    judge = FakeJudge()
    judge.prefer = lambda r, a, b: torch.full((len(a),), 0.5)
    m = summarize(s, score_rows(s, judge=judge), ["kl", "win_rate"], BOOT)["metrics"]
    assert m["kl"]["value"] == 0.0 and m["kl"]["ci_high"] == 0.0
    assert m["win_rate"]["value"] == 0.5
    again = generate_samples(str(tiny_llama), recs, spec)
    assert again.responses == s.responses and again.logp_policy == s.logp_policy
    write_samples(tmp_path, s, key="k")
    cached = read_samples(tmp_path, recs, "k")
    assert cached.responses == s.responses and cached.logp_reference == s.logp_reference
    assert read_samples(tmp_path, recs, "other") is None
