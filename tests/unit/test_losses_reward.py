"""Bradley–Terry loss and expected calibration error against hand-worked numbers.

ℓ(z) = −log σ(z): ℓ(1) = 0.31326169, ℓ(−1) = 1.31326169, ℓ(0) = log 2 = 0.69314718.
"""

import random

import pytest
import torch

from prefopt.losses import bradley_terry_loss, expected_calibration_error

L1, LM1, LOG2 = 0.31326168751822286, 1.3132616875182228, 0.6931471805599453
R_W = torch.tensor([2.0, 0.0], dtype=torch.float64)
R_L = torch.tensor([1.0, 1.0], dtype=torch.float64)  # Δ = r_w − r_l = (1, −1)


def test_hard_labels():
    # mean(ℓ(1), ℓ(−1)) = (0.313262 + 1.313262)/2 = 0.813262; one of two ordered right
    loss, m = bradley_terry_loss(R_W, R_L)
    assert loss.item() == pytest.approx((L1 + LM1) / 2, abs=1e-12)
    assert m == {"accuracy": 0.5, "margin": 0.0}


def test_margin_is_subtracted():
    # z = Δ − m = (1 − 1, −1 − 0) = (0, −1): mean(log 2, ℓ(−1)) = (0.693147 + 1.313262)/2
    loss, _ = bradley_terry_loss(R_W, R_L, margin=torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert loss.item() == pytest.approx((LOG2 + LM1) / 2, abs=1e-12)


def test_soft_labels_and_accuracy_follow_label_direction():
    # p = (0.75, 0.25): 0.75ℓ(1) + 0.25ℓ(−1) = ℓ(1) + 0.25 for both pairs (pair 1 mirrored);
    # pair 0: p > ½ and Δ > 0, pair 1: p < ½ and Δ < 0 → accuracy 1
    loss, m = bradley_terry_loss(R_W, R_L, label=torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert loss.item() == pytest.approx(L1 + 0.25, abs=1e-12)
    assert m["accuracy"] == 1.0


def test_tied_labels_are_left_out_of_accuracy():
    _, m = bradley_terry_loss(R_W, R_L, label=torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert m["accuracy"] == 1.0  # only pair 0 counts, and it is ordered right


def test_soft_label_one_equals_hard():
    r_w, r_l = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    hard, _ = bradley_terry_loss(r_w, r_l)
    soft, _ = bradley_terry_loss(r_w, r_l, label=torch.ones(8, dtype=torch.float64))
    assert torch.equal(hard, soft)


def test_centering():
    # + 0.01·mean((r_w + r_l)²) = 0.01·mean(9, 1) = 0.05
    loss, _ = bradley_terry_loss(R_W, R_L, center_coef=0.01)
    assert loss.item() == pytest.approx((L1 + LM1) / 2 + 0.05, abs=1e-12)


def test_gradient_is_sigma_minus_one():
    # dℓ(Δ)/dr_w = −σ(−Δ), averaged over B = 2: −σ(−1)/2, −σ(1)/2
    r_w = R_W.clone().requires_grad_()
    bradley_terry_loss(r_w, R_L)[0].backward()
    torch.testing.assert_close(r_w.grad, torch.tensor([-0.2689414213699951 / 2,
                                                       -0.7310585786300049 / 2],
                                                      dtype=torch.float64))


def test_ece_hand_worked():
    # bins of width 0.1: 0.05→0; 0.15, 0.12→1; 0.55→5; 0.95, 1.0→9 (1.0 joins the last bin)
    # bin 0: |0 − 0.05| = 0.05 (n 1); bin 1: |0.5 − 0.135| = 0.365 (n 2); bin 5: |0 − 0.55| = 0.55
    # (n 1); bin 9: |1 − 0.975| = 0.025 (n 2). ECE = (0.05 + 2·0.365 + 0.55 + 2·0.025)/6 = 0.23
    probs = torch.tensor([0.05, 0.15, 0.12, 0.95, 1.0, 0.55], dtype=torch.float64)
    outcomes = torch.tensor([0, 1, 0, 1, 1, 0])
    assert expected_calibration_error(probs, outcomes) == pytest.approx(0.23, abs=1e-12)


def test_ece_perfectly_calibrated_is_zero():
    probs = torch.tensor([0.25] * 4 + [0.75] * 4, dtype=torch.float64)
    outcomes = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(probs, outcomes) == pytest.approx(0.0, abs=1e-15)


def naive_ece(probs, outcomes, n_bins):
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i, p in enumerate(probs)
               if lo <= p < hi or (b == n_bins - 1 and p == 1.0)]
        if idx:
            conf = sum(probs[i] for i in idx) / len(idx)
            acc = sum(outcomes[i] for i in idx) / len(idx)
            total += len(idx) / len(probs) * abs(acc - conf)
    return total


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_against_naive_loop(n_bins):
    rng = random.Random(n_bins)
    probs = [rng.random() for _ in range(200)] + [1.0, 0.0]
    outcomes = [int(rng.random() < p) for p in probs]
    got = expected_calibration_error(torch.tensor(probs, dtype=torch.float64),
                                     torch.tensor(outcomes), n_bins=n_bins)
    assert got == pytest.approx(naive_ece(probs, outcomes, n_bins), abs=1e-12)
