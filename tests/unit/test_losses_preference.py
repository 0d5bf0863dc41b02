"""Pair (DPO-family) losses and KTO against hand-worked numbers and naive float references.

Shared batch (β = 0.5), two pairs:
  pair 0: log π_θ(y_w) = −10, log π_θ(y_l) = −14, ref −11 / −13, |y_w| = 4, |y_l| = 2
          ρ_w = 1, ρ_l = −1, h = 2, βh = 1; h̄ = 1/4 − (−1/2) = 0.75; avg = −2.5 / −7
  pair 1: log π_θ(y_w) = −8, log π_θ(y_l) = −6, ref −8 / −8, |y_w| = 2, |y_l| = 4
          ρ_w = 0, ρ_l = 2, h = −2, βh = −1; h̄ = 0 − 2/4 = −0.5; avg = −4 / −1.5
ℓ(1) = log(1 + e^−1) = 0.31326169, ℓ(−1) = log(1 + e) = 1.31326169 = ℓ(1) + 1.
σ(0.5) = 0.62245933, σ(1) = 0.73105858.
"""

import math
import random

import pytest
import torch

from prefopt.errors import ConfigError
from prefopt.losses import (
    ACCEPTS_SOFT_LABELS,
    HARD_LABEL_ONLY,
    PAIR_LOSSES,
    REFERENCE_FREE,
    PairLogps,
    discopop_loss,
    dpo_loss,
    kto_loss,
    kto_weights_ok,
    preference_loss,
)

BETA = 0.5
L1, LM1 = 0.31326168751822286, 1.3132616875182228  # ℓ(1), ℓ(−1)


def batch(dtype=torch.float64, grad=False) -> PairLogps:
    t = lambda *v: torch.tensor(v, dtype=dtype, requires_grad=grad)  # noqa: E731
    return PairLogps(chosen=t(-10.0, -8.0), rejected=t(-14.0, -6.0),
                     chosen_len=torch.tensor([4, 2]), rejected_len=torch.tensor([2, 4]),
                     ref_chosen=t(-11.0, -8.0), ref_rejected=t(-13.0, -8.0))


HAND = {
    "dpo": [L1, LM1],
    # 0.9·ℓ(βh) + 0.1·ℓ(−βh): 0.9·0.31326 + 0.1·1.31326 ; 0.9·1.31326 + 0.1·0.31326
    "conservative_dpo": [0.41326168751822286, 1.2132616875182228],
    # [0.9·ℓ(z) − 0.1·ℓ(−z)]/0.8 = ℓ(z) − z/8 (as ℓ(−z) = ℓ(z) + z): ℓ(1) − 0.125 ; ℓ(−1) + 0.125
    "robust_dpo": [L1 - 0.125, LM1 + 0.125],
    # (h̄ − 1/(2β))² = (0.75 − 1)² ; (−0.5 − 1)²
    "ipo": [0.0625, 2.25],
    # max(0, 1 − βh) = max(0, 0) ; max(0, 2)
    "hinge": [0.0, 2.0],
    # ℓ(β·h̄) = ℓ(0.375) = log(1 + e^−0.375) ; ℓ(−0.25) = log(1 + e^0.25)
    "ln_dpo": [0.52312326413984, 0.8259394198788436],
    # ℓ(βh) + 1·(−log π(y_w)/|y_w|) = ℓ(1) + 10/4 ; ℓ(−1) + 8/2
    "rpo": [L1 + 2.5, LM1 + 4.0],
    # a_w = βρ_w = (0.5, 0), a_l = (−0.5, 1): ℓ(a_w) + ½ℓ(−a_w) + ½ℓ(−a_l)
    # pair 0: ℓ(.5) + ½ℓ(−.5) + ½ℓ(.5) = 1.5·0.474077 + 0.5·0.974077 = 0.711115 + 0.487038
    # pair 1: ℓ(0) + ½ℓ(0) + ½ℓ(−1) = 1.5·0.693147 + 0.5·1.313262 = 1.039721 + 0.656631
    "nca": [1.1981539683602134, 1.6963516145990294],
    # (1 − σ(a_w)) + σ(a_l): 1 − 0.622459 + 0.377541 ; 1 − 0.5 + 0.731059
    "apo_zero": [0.7550813375962908, 1.2310585786300049],
    # σ(a_w) + 1 − σ(βh): 0.622459 + 1 − 0.731059 ; 0.5 + 1 − 0.268941
    "apo_down": [0.8914007525718497, 1.2310585786300049],
    # (ρ_w − 1)² + (ρ_l + 1)²: 0 + 0 ; 1 + 9
    "sppo_hard": [0.0, 10.0],
    # m = σ(βh/0.05) = σ(±20): ≈ e^−1 ; ≈ ℓ(−1) (written with the 2e−9 corrections)
    "discopop": [(1 - 1 / (1 + math.exp(-20))) * L1 + math.exp(-1) / (1 + math.exp(-20)),
                 (1 - 1 / (1 + math.exp(20))) * LM1 + math.exp(1) / (1 + math.exp(20))],
    # σ(z)(log σ(z) − log .999) + σ(−z)(log σ(−z) − log .001), z = ±1:
    # .731059·(−.313262 + .001001) + .268941·(−1.313262 + 6.907755) ; swapped roles
    "exo_pair": [1.2763098386691134, 4.468039722870171],
    # z = β(avg_w − avg_l) = 0.5·4.5 = 2.25 ; 0.5·(−2.5) = −1.25; ℓ(z − 0.5) = ℓ(1.75) ; ℓ(−1.75)
    "simpo": [0.16022415043808724, 1.9102241504380872],
    # ℓ(β(log π_w − log π_l)) + avg NLL: ℓ(0.5·4) + 2.5 ; ℓ(0.5·(−2)) + 4
    "cpo": [2.6269280110429727, 5.313261687518223],
    # log odds(a) = a − log(1 − e^a): pair 0: −2.5 + 0.085650 = −2.414350, −7 + 0.000912
    # = −6.999088, z = 4.584738: 2.5 + 0.1·ℓ(4.584738) = 2.5 + 0.1·0.010155
    # pair 1: −4 + 0.018485 = −3.981515, −1.5 + 0.252482 = −1.247518: 4 + 0.1·ℓ(−2.733997)
    "orpo": [2.50101546878169, 4.2796933432740385],
}


def test_every_registered_loss_has_a_hand_value():
    assert set(HAND) == set(PAIR_LOSSES)
    assert REFERENCE_FREE == {"simpo", "orpo", "cpo"}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_worked_batch_of_two(name):
    out = PAIR_LOSSES[name](batch(), BETA)
    torch.testing.assert_close(out, torch.tensor(HAND[name], dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_discopop_tau_one():
    # m = σ(βh) = σ(1): (1 − σ(1))ℓ(1) + σ(1)e^−1 = 0.268941·0.313262 + 1/(e + 1) = 0.353190
    out = discopop_loss(batch(), BETA, tau=1.0)
    torch.testing.assert_close(out[0], torch.tensor(0.3531904648719093, dtype=torch.float64))


# ---- naive references: plain python floats, one pair at a time ----
def ell(z):
    return math.log1p(math.exp(-z))


def sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def naive(name, cw, cl, rw, rl, nw, nl, b):
    pw, pl = cw - rw, cl - rl
    h, hbar = pw - pl, pw / nw - pl / nl
    if name == "dpo":
        return ell(b * h)
    if name == "conservative_dpo":
        return 0.9 * ell(b * h) + 0.1 * ell(-b * h)
    if name == "robust_dpo":
        return (0.9 * ell(b * h) - 0.1 * ell(-b * h)) / 0.8
    if name == "ipo":
        return (hbar - 1 / (2 * b)) ** 2
    if name == "hinge":
        return max(0.0, 1 - b * h)
    if name == "ln_dpo":
        return ell(b * hbar)
    if name == "rpo":
        return ell(b * h) - cw / nw
    if name == "nca":
        return ell(b * pw) + 0.5 * ell(-b * pw) + 0.5 * ell(-b * pl)
    if name == "apo_zero":
        return 1 - sig(b * pw) + sig(b * pl)
    if name == "apo_down":
        return sig(b * pw) + 1 - sig(b * h)
    if name == "sppo_hard":
        return (pw - 1 / (2 * b)) ** 2 + (pl + 1 / (2 * b)) ** 2
    if name == "discopop":
        m = sig(b * h / 0.05)
        return (1 - m) * ell(b * h) + m * math.exp(-b * h)
    if name == "exo_pair":
        return (sig(b * h) * (math.log(sig(b * h)) - math.log(0.999))
                + sig(-b * h) * (math.log(sig(-b * h)) - math.log(0.001)))
    if name == "simpo":
        return ell(b * (cw / nw - cl / nl) - 0.5)
    if name == "cpo":
        return ell(b * (cw - cl)) - cw / nw
    if name == "orpo":
        def lo(a):
            return a - math.log(1 - math.exp(a))
        return -cw / nw + 0.1 * ell(lo(cw / nw) - lo(cl / nl))
    raise KeyError(name)


def random_batch(rng, n=12):
    rows = [(rng.uniform(-40, -5), rng.uniform(-40, -5), rng.uniform(-40, -5),
             rng.uniform(-40, -5), rng.randint(5, 30), rng.randint(5, 30)) for _ in range(n)]
    col = lambda i: torch.tensor([r[i] for r in rows], dtype=torch.float64)  # noqa: E731
    p = PairLogps(col(0), col(1), torch.tensor([r[4] for r in rows]),
                  torch.tensor([r[5] for r in rows]), col(2), col(3))
    return rows, p


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_against_naive_float_reference(name):
    rng = random.Random(sorted(PAIR_LOSSES).index(name))
    rows, p = random_batch(rng)
    beta = 0.05 if name in ("sppo_hard", "ipo") else 0.3
    expected = [naive(name, cw, cl, rw, rl, nw, nl, beta) for cw, cl, rw, rl, nw, nl in rows]
    torch.testing.assert_close(PAIR_LOSSES[name](p, beta),
                               torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)


# ---- soft labels ----
@pytest.mark.parametrize("name", sorted(ACCEPTS_SOFT_LABELS))
def test_soft_label_one_equals_hard(name):
    p = random_batch(random.Random(7))[1]
    fn = PAIR_LOSSES[name]
    assert torch.equal(fn(p, 0.3, torch.ones(12, dtype=torch.float64)), fn(p, 0.3))


SYMMETRIC = sorted(ACCEPTS_SOFT_LABELS - {"rpo", "cpo", "orpo"})  # no NLL on y_w


@pytest.mark.parametrize("name", SYMMETRIC)
def test_label_zero_equals_swapped_pair(name):
    p = random_batch(random.Random(3))[1]
    swapped = PairLogps(p.rejected, p.chosen, p.rejected_len, p.chosen_len,
                        p.ref_rejected, p.ref_chosen)
    fn = PAIR_LOSSES[name]
    torch.testing.assert_close(fn(p, 0.3, torch.zeros(12, dtype=torch.float64)),
                               fn(swapped, 0.3), rtol=1e-12, atol=1e-12)


def test_soft_dpo_hand_value():
    # p = 0.75 on pair 0 (βh = 1): 0.75·ℓ(1) + 0.25·ℓ(−1) = 0.234946 + 0.328315 = ℓ(1) + 0.25
    # p = 0.5 on pair 1 (βh = −1): 0.5·(ℓ(−1) + ℓ(1)) = 0.5·(2·0.313262 + 1) = 0.813262
    out = dpo_loss(batch(), BETA, torch.tensor([0.75, 0.5], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([L1 + 0.25, L1 + 0.5], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(HARD_LABEL_ONLY))
def test_hard_only_losses_reject_soft_labels(name):
    fn = PAIR_LOSSES[name]
    with pytest.raises(ValueError, match="no soft-label form"):
        fn(batch(), BETA, torch.tensor([1.0, 0.7]))
    assert torch.equal(fn(batch(), BETA, torch.ones(2)), fn(batch(), BETA))


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dpo_loss(batch(), BETA, torch.tensor([1.2, 0.5]))
    no_ref = PairLogps(torch.zeros(2), torch.zeros(2), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="reference log-probs"):
        dpo_loss(no_ref, BETA)


def test_dpo_gradient():
    # d mean(ℓ(βh))/d log π(y_w) = −β·σ(−βh)/B: −0.5·σ(−1)/2 = −0.067235, −0.5·σ(1)/2 = −0.182765
    p = batch(grad=True)
    dpo_loss(p, BETA).mean().backward()
    expected = torch.tensor([-0.25 * 0.2689414213699951, -0.25 * 0.7310585786300049],
                            dtype=torch.float64)
    torch.testing.assert_close(p.chosen.grad, expected)
    torch.testing.assert_close(p.rejected.grad, -expected)


# ---- wrapper ----
def test_preference_loss_metrics_dpo():
    # r_w = β·ρ_w = (0.5, 0), r_l = β·ρ_l = (−0.5, 1): margins (1, −1)
    loss, m = preference_loss("dpo", batch(), BETA)
    assert loss.item() == pytest.approx((L1 + LM1) / 2)
    assert m == pytest.approx({"rewards/chosen": 0.25, "rewards/rejected": 0.25,
                               "rewards/margins": 0.0, "rewards/accuracies": 0.5,
                               "logps/chosen": -9.0, "logps/rejected": -10.0})


def test_preference_loss_metrics_simpo_use_average_logps():
    # r = β·avg: r_w = 0.5·(−2.5, −4) = (−1.25, −2), r_l = 0.5·(−7, −1.5) = (−3.5, −0.75)
    loss, m = preference_loss("simpo", batch(), BETA, gamma=0.0)
    assert loss.item() == pytest.approx((ell(2.25) + ell(-1.25)) / 2)
    assert m["rewards/chosen"] == pytest.approx(-1.625)
    assert m["rewards/rejected"] == pytest.approx(-2.125)
    assert m["rewards/margins"] == pytest.approx(0.5)
    assert m["rewards/accuracies"] == 0.5


def test_preference_loss_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'simpo'"):
        preference_loss("simpoo", batch(), BETA)
    with pytest.raises(ConfigError, match="did you mean 'gamma'"):
        preference_loss("simpo", batch(), BETA, gama=1.0)


# ---- KTO ----
def test_kto_hand_worked():
    # ρ = (−5 + 6, −7 + 6) = (1, −1); z0 = max(0, mean(0.5, −0.3)) = 0.1; β = 1
    # desirable: 2·(1 − σ(1 − 0.1)) = 2·σ(−0.9) = 2·0.289050; undesirable: 1 − σ(0.1 + 1) = σ(−1.1)
    kl = torch.tensor([-3.0, -4.0], requires_grad=True)
    losses, z0 = kto_loss(torch.tensor([-5.0, -7.0]), torch.tensor([-6.0, -6.0]),
                          torch.tensor([True, False]), kl, torch.tensor([-3.5, -3.7]),
                          beta=1.0, w_desirable=2.0)
    torch.testing.assert_close(losses, torch.tensor([2 * 0.2890504973749960, 0.2497398944048457]))
    assert z0.item() == pytest.approx(0.1) and not z0.requires_grad


def test_kto_z0_clamped_at_zero():
    # mean(kl − kl_ref) = −1 → z0 = 0: desirable loss 1 − σ(0.1·1) = σ(−0.1) = 0.475021
    losses, z0 = kto_loss(torch.tensor([-5.0]), torch.tensor([-6.0]), torch.tensor([True]),
                          torch.tensor([-4.0]), torch.tensor([-3.0]))
    assert z0.item() == 0.0
    assert losses.item() == pytest.approx(0.47502081252106)


@pytest.mark.parametrize("n_d,n_u,w_d,w_u,ok", [
    (100, 100, 1.0, 1.0, True),    # ratio 1
    (100, 50, 1.0, 1.5, True),     # 100/75 = 4/3, inclusive
    (100, 50, 1.0, 1.0, False),    # 2
    (50, 100, 1.0, 1.0, False),    # 0.5
    (50, 100, 2.5, 1.0, True),     # 125/100 = 1.25
    (10, 0, 1.0, 1.0, False),      # undefined
])
def test_kto_weights_ok(n_d, n_u, w_d, w_u, ok):
    assert kto_weights_ok(n_d, n_u, w_d, w_u) is ok


def test_log1mexp_and_orpo_near_certain_completion():
    from prefopt.losses import log1mexp, orpo_loss
    x = torch.tensor([-30.0, -2.0, -0.5, -1e-3], dtype=torch.float64)
    expected = [math.log1p(-math.exp(v)) for v in x.tolist()]  # naive is exact in float64 here
    torch.testing.assert_close(log1mexp(x), torch.tensor(expected, dtype=torch.float64))
    # avg(y_w) = 0 (P rounds to 1): clamped to −1e−6, loss and gradient stay finite
    chosen = torch.tensor([0.0, -3.0], requires_grad=True)
    p = PairLogps(chosen, torch.tensor([-6.0, -9.0]), torch.tensor([3, 3]), torch.tensor([3, 3]))
    loss = orpo_loss(p, BETA).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(chosen.grad).all()
