"""Hand-worked checks of prefopt.eval.stats."""

import math

import numpy as np
import pytest

from prefopt.eval.stats import (
    bon_peak,
    bootstrap_ci,
    bootstrap_ci_grouped,
    fit_gao_bon,
    fit_gao_rl,
    fit_logistic,
    gao_bon,
    gao_rl,
    kl_best_of_n,
    length_controlled_win_rate,
    length_feature,
    rates_by_group,
    rl_peak,
    win_rate,
)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---- bootstrap -----------------------------------------------------------------------

def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean = 15 / 5 = 3
    point, lo, hi = bootstrap_ci(values, seed=7)
    assert point == 3.0
    assert lo < 3.0 < hi
    assert bootstrap_ci(values, seed=7) == (point, lo, hi)
    irregular = [0.3, 1.7, 2.2, 4.1, 5.9, 8.0, 9.4]  # many distinct replicate means
    assert bootstrap_ci(irregular, seed=8) != bootstrap_ci(irregular, seed=7)


def test_bootstrap_ci_constant_collapses():
    assert bootstrap_ci([2.5] * 7) == (2.5, 2.5, 2.5)


def test_bootstrap_ci_two_points_hand_case():
    """[0, 1]: each replicate mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the
    2.5% and 97.5% quantiles of 1000 replicates are 0 and 1."""
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)


def test_bootstrap_ci_resamples_rows_of_a_2d_array():
    """Rows stay aligned: column 0 − column 1 is 1 in every row, so the CI collapses to 1."""
    rows = np.array([[3.0, 2.0], [5.0, 4.0], [0.0, -1.0]])
    point, lo, hi = bootstrap_ci(rows, statistic=lambda r: float(np.mean(r[:, 0] - r[:, 1])))
    assert (point, lo, hi) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_grouped_covers_seed_variation():
    """Seeds [0,0,0] and [1,1,1]: point = (0 + 1)/2 = 0.5. A replicate draws 2 seeds with
    replacement → mean 0, 0.5, 1 with prob 1/4, 1/2, 1/4 → CI (0, 1). Pooling the six
    prompts instead ignores the seed level: P(all six draws 0) = 1/64 < 2.5%, so the
    pooled CI is no wider than [1/6, 5/6]."""
    assert bootstrap_ci_grouped([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]) == (0.5, 0.0, 1.0)
    _, lo, hi = bootstrap_ci([0, 0, 0, 1, 1, 1])
    assert lo >= 1 / 6 and hi <= 5 / 6


def test_bootstrap_ci_grouped_constant_and_point():
    """Point = mean of per-seed means = (2 + 4)/2 = 3, even with unequal sizes."""
    assert bootstrap_ci_grouped([[2.0], [4.0, 4.0, 4.0]])[0] == 3.0
    assert bootstrap_ci_grouped([[1.5, 1.5], [1.5]]) == (1.5, 1.5, 1.5)


def test_bootstrap_rejects_empty():
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci_grouped([])


# ---- win rates -------------------------------------------------------------------------

def test_win_rate_ties_count_half():
    assert win_rate([1, 0, 0.5, 1]) == 0.625  # (1 + 0 + 0.5 + 1) / 4
    assert win_rate([0.9, 0.3]) == pytest.approx(0.6)  # soft: (0.9 + 0.3) / 2
    with pytest.raises(ValueError):
        win_rate([1.2, 0.0])


def test_fit_logistic_recovers_soft_targets_exactly():
    """p_i = σ(0.3 + 2 x_i) is exactly the model, so the unpenalised MLE is (0.3, 2)."""
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    a, b = fit_logistic(x, sigmoid(0.3 + 2.0 * x), ridge=0.0)
    assert a == pytest.approx(0.3, abs=1e-9)
    assert b == pytest.approx(2.0, abs=1e-9)


def test_fit_logistic_intercept_only():
    """x ≡ 0: σ(a) = mean p = 0.625 → a = log(0.625 / 0.375) = log(5/3) = 0.5108."""
    a, b = fit_logistic([0.0] * 4, [1, 0, 0.5, 1])
    assert a == pytest.approx(math.log(5 / 3), abs=1e-9)
    assert b == 0.0


def test_length_feature_hand_case():
    """Δ = [10, 10, 10, −10]: mean 5, deviations [5, 5, 5, −15], Σ² = 300, sd = √(300/3) = 10,
    z = tanh(Δ / 10) = ±tanh(1) = ±0.761594."""
    z = length_feature([20, 20, 20, 10], [10, 10, 10, 20])
    assert z == pytest.approx([0.761594, 0.761594, 0.761594, -0.761594], abs=1e-6)


def test_lc_win_rate_equals_raw_without_length_differences():
    """Δ ≡ 0 → z ≡ 0 → LC = σ(a) = mean p = (1 + 0 + 0.5 + 1)/4 = 0.625."""
    lc = length_controlled_win_rate([1, 0, 0.5, 1], [7, 3, 5, 2], [7, 3, 5, 2])
    assert lc == pytest.approx(0.625, abs=1e-12)
    # a constant Δ cannot be told apart from quality: sd(Δ) = 0 → raw rate
    assert length_controlled_win_rate([1, 0, 0.5, 1], [9] * 4, [4] * 4) == pytest.approx(0.625)


def test_lc_win_rate_removes_pure_length_effect_soft():
    """Soft preferences σ(2 z) with z = ±tanh(1) (see test_length_feature_hand_case):
    p = σ(±1.523188) = 0.821008 / 0.178992, raw = (3·0.821008 + 0.178992)/4 = 0.660504.
    The data are exactly the model with intercept 0, so LC = σ(0) = 0.5."""
    pl, pr = [20, 20, 20, 10], [10, 10, 10, 20]
    p = sigmoid(2.0 * length_feature(pl, pr))
    assert win_rate(p) == pytest.approx(0.660504, abs=1e-6)
    assert length_controlled_win_rate(p, pl, pr, ridge=0.0) == pytest.approx(0.5, abs=1e-12)
    assert length_controlled_win_rate(p, pl, pr) == pytest.approx(0.5, abs=1e-3)  # ridge 1e-4


def test_lc_win_rate_removes_pure_length_effect_hard():
    """15 prompts where the policy is longer (wins 12: rate 0.8), 5 where it is shorter
    (wins 1: rate 0.2). Raw = 13/20 = 0.65. Two feature values ±z (Δ = ±10) make the model
    saturated: a + b z = log 4, a − b z = −log 4 → a = 0 → LC = 0.5."""
    pl, pr = [20] * 15 + [10] * 5, [10] * 15 + [20] * 5
    outcomes = [1] * 12 + [0] * 3 + [1] + [0] * 4
    assert win_rate(outcomes) == 0.65
    assert length_controlled_win_rate(outcomes, pl, pr, ridge=0.0) == pytest.approx(0.5, abs=1e-9)
    assert length_controlled_win_rate(outcomes, pl, pr) == pytest.approx(0.5, abs=1e-3)


def test_lc_win_rate_all_wins_is_one():
    assert length_controlled_win_rate([1, 1, 1], [1, 2, 3], [3, 2, 1]) == 1.0


def test_rates_by_group_skips_not_applicable():
    """a: [1, 0, −1] → 1/2 over n = 2; b: [−1] → no applicable row → None."""
    out = rates_by_group(["a", "a", "a", "b"], [1, 0, -1, -1])
    assert out["a"]["rate"] == 0.5 and out["a"]["n"] == 2
    assert out["b"] == {"rate": None, "ci_low": None, "ci_high": None, "n": 0}


# ---- over-optimisation (Gao et al. 2022) -----------------------------------------------

def test_fit_gao_bon_recovers_alpha_beta():
    """α = 1.5, β = 0.25: R(d) = d(1.5 − 0.25 d) at d = 0, 0.5, 1, 2, 3 gives
    0, 0.5·1.375 = 0.6875, 1.25, 2·1.0 = 2.0, 3·0.75 = 2.25; peak α/(2β) = 1.5/0.5 = 3."""
    d = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    r = np.array([0.0, 0.6875, 1.25, 2.0, 2.25])
    assert gao_bon(d, 1.5, 0.25) == pytest.approx(r)
    alpha, beta = fit_gao_bon(d, r)
    assert alpha == pytest.approx(1.5, abs=1e-12)
    assert beta == pytest.approx(0.25, abs=1e-12)
    assert bon_peak(alpha, beta) == pytest.approx(3.0)
    assert bon_peak(1.0, 0.0) == math.inf


def test_fit_gao_rl_recovers_alpha_beta_with_d_zero():
    """α = 1, β = 0.5: R(d) = d(1 − 0.5 log d) at d = 0, 1, e, e² gives 0 (d log d → 0),
    1, e·0.5, e²·0 = 0; peak exp(α/β − 1) = exp(1) = e."""
    e = math.e
    d = np.array([0.0, 1.0, e, e * e])
    r = np.array([0.0, 1.0, e / 2, 0.0])
    assert gao_rl(d, 1.0, 0.5) == pytest.approx(r, abs=1e-12)
    alpha, beta = fit_gao_rl(d, r)
    assert alpha == pytest.approx(1.0, abs=1e-12)
    assert beta == pytest.approx(0.5, abs=1e-12)
    assert rl_peak(alpha, beta) == pytest.approx(e)
    with pytest.raises(ValueError):
        fit_gao_rl([-1.0, 1.0], [0.0, 1.0])


def test_kl_best_of_n():
    """log 4 − 3/4 = 1.386294 − 0.75 = 0.636294; log 16 − 15/16 = 2.772589 − 0.9375 = 1.835089."""
    assert kl_best_of_n(1) == 0.0
    assert kl_best_of_n(4) == pytest.approx(0.636294, abs=1e-6)
    assert kl_best_of_n(16) == pytest.approx(1.835089, abs=1e-6)
