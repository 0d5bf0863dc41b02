"""Hand-worked checks of prefopt.eval.text_metrics and of the evaluate modules in
evals/metrics, loaded offline through prefopt.eval.metrics.load_metric."""

import socket

import numpy as np
import pytest
import torch

from prefopt.errors import ConfigError
from prefopt.eval.metrics import available_metrics, load_metric, metric_path
from prefopt.eval.stats import (
    bootstrap_ci,
    length_controlled_win_rate,
    rates_by_group,
    win_rate,
)
from prefopt.eval.text_metrics import (
    distinct_n,
    entropy_estimate,
    mean_length,
    sequence_kl_estimate,
)

# ---- text metrics ----------------------------------------------------------------------


def test_distinct_n_hand_example():
    """["the cat sat", "the cat ran"]: unigrams the, cat, sat, the, cat, ran → 4 unique / 6;
    bigrams (the cat) ×2, (cat sat), (cat ran) → 3 / 4; trigrams 2 / 2; no 4-grams → 0."""
    texts = ["the cat sat", "the cat ran"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == 0.75
    assert distinct_n(texts, 3) == 1.0
    assert distinct_n(texts, 4) == 0.0
    assert distinct_n([], 1) == 0.0


class CharTokenizer:
    """One token per non-space character."""

    def encode(self, text, add_special_tokens=True):
        return [c for c in text if not c.isspace()]


def test_mean_length_words_and_tokens():
    """Words: (2 + 1)/2 = 1.5; characters: (len("helloworld") + len("hi"))/2 = (10 + 2)/2 = 6."""
    texts = ["hello world", "hi"]
    assert mean_length(texts) == 1.5
    assert mean_length(texts, tokenizer=CharTokenizer()) == 6.0


def test_sequence_kl_estimate_k1():
    """k1 = [−1 − (−2), −2 − (−1.5), −3 − (−3.5)] = [1, −0.5, 0.5] → mean 1/3. One sample
    alone can be negative: −2 − (−1) = −1."""
    mean, per_sample = sequence_kl_estimate([-1.0, -2.0, -3.0], [-2.0, -1.5, -3.5])
    assert mean == pytest.approx(1 / 3)
    assert per_sample.tolist() == [1.0, -0.5, 0.5]
    assert sequence_kl_estimate([-2.0], [-1.0])[0] == -1.0
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)  # tensors are detached
    assert sequence_kl_estimate(lp, torch.tensor([-2.0, -2.5]))[0] == 0.75


def test_entropy_estimate_masks_padding():
    """h = [−(−1 − 2), −(−0.5)] = [3, 0.5]: sequence mean 1.75; per token 3.5 / 3 tokens."""
    logps = np.array([[-1.0, -2.0, -5.0], [-0.5, -np.inf, -np.inf]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    seq, per_token = entropy_estimate(logps, mask)
    assert seq == 1.75
    assert per_token == pytest.approx(3.5 / 3)


# ---- evaluate modules ------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_all_modules_present():
    assert available_metrics() == ["distinct_n", "family_rates", "gold_reward", "lc_win_rate",
                                   "seq_kl", "win_rate"]


def test_unknown_metric_suggests_close_name():
    with pytest.raises(ConfigError, match="Did you mean 'win_rate'"):
        metric_path("win_rat")


def test_win_rate_module(offline):
    prefs = [1, 0, 0.5, 1]
    out = load_metric("win_rate").compute(preferences=prefs, n_boot=200)
    assert out["win_rate"] == 0.625
    assert (out["win_rate"], out["ci_low"], out["ci_high"]) == bootstrap_ci(
        prefs, n_boot=200, statistic=win_rate)


def test_gold_reward_module(offline):
    scores = [0.5, -1.0, 2.0, 1.5]  # mean = 3 / 4 = 0.75
    out = load_metric("gold_reward").compute(scores=scores, n_boot=200, seed=3)
    assert out["mean"] == 0.75 and out["n"] == 4
    assert (out["mean"], out["ci_low"], out["ci_high"]) == bootstrap_ci(scores, n_boot=200,
                                                                        seed=3)


def test_lc_win_rate_module(offline):
    pl, pr = [20] * 15 + [10] * 5, [10] * 15 + [20] * 5
    prefs = [1] * 12 + [0] * 3 + [1] + [0] * 4
    out = load_metric("lc_win_rate").compute(preferences=prefs, policy_lengths=pl,
                                             reference_lengths=pr, n_boot=100)
    assert out["lc_win_rate"] == length_controlled_win_rate(prefs, pl, pr)
    assert out["win_rate"] == 0.65
    rows = np.stack([prefs, pl, pr], axis=1).astype(float)
    lc = lambda r: length_controlled_win_rate(r[:, 0], r[:, 1], r[:, 2])  # noqa: E731
    assert (out["ci_low"], out["ci_high"]) == bootstrap_ci(rows, n_boot=100, statistic=lc)[1:]


def test_distinct_n_module(offline):
    texts = ["the cat sat", "the cat ran"]
    out = load_metric("distinct_n").compute(predictions=texts)
    assert out == {"distinct_1": distinct_n(texts, 1), "distinct_2": 0.75}


def test_seq_kl_module(offline):
    lp, lr = [-1.0, -2.0, -3.0], [-2.0, -1.5, -3.5]
    out = load_metric("seq_kl").compute(policy_logps=lp, reference_logps=lr, n_boot=200)
    assert out["kl"] == pytest.approx(1 / 3)
    k1 = sequence_kl_estimate(lp, lr)[1]
    assert (out["kl"], out["ci_low"], out["ci_high"]) == bootstrap_ci(k1, n_boot=200)


def test_family_rates_module(offline):
    """a: correct [1, 0] → 0.5, harmful_compliance all −1 → None, over_refusal [0, 1] → 0.5;
    b: correct [1] → 1, harmful_compliance [0] → 0. Overall correct: 2/3."""
    fams = ["a", "a", "b"]
    cols = {"correct": [1, 0, 1], "harmful_compliance": [-1, -1, 0], "over_refusal": [0, 1, -1]}
    out = load_metric("family_rates").compute(families=fams, n_boot=200, **cols)
    assert out["per_family"]["a"]["correct"] == rates_by_group(fams, cols["correct"],
                                                               n_boot=200)["a"]
    assert out["per_family"]["a"]["correct"]["rate"] == 0.5
    assert out["per_family"]["a"]["harmful_compliance"]["rate"] is None
    assert out["per_family"]["b"]["harmful_compliance"]["rate"] == 0.0
    assert out["overall"]["correct"]["rate"] == pytest.approx(2 / 3)
    assert out["overall"]["over_refusal"]["n"] == 2
