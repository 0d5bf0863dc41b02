"""RL pieces (masked statistics, KL, token rewards, GAE, PPO, controllers, group baselines)
against hand-worked numbers and naive loops."""

import math

import pytest
import torch

from prefopt.losses import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    eos_penalty,
    explained_variance,
    gae,
    grpo_advantages,
    kl_estimate,
    last_token_index,
    masked_mean,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
    token_rewards,
    whiten,
)

D = torch.float64
X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=D)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])  # masked entries: 1, 2, 4


def t(*v):
    return torch.tensor(v, dtype=D)


def test_masked_mean_and_var():
    assert masked_mean(X, MASK).item() == pytest.approx(7 / 3)  # (1 + 2 + 4)/3
    torch.testing.assert_close(masked_mean(X, MASK, dim=1), t(1.5, 4.0))
    # deviations from 7/3: −4/3, −1/3, 5/3 → (16 + 1 + 25)/9/3 = 14/9 (biased)
    assert masked_var(X, MASK).item() == pytest.approx(14 / 9)
    assert masked_mean(X, torch.zeros_like(MASK)).item() == 0.0  # empty mask → 0


def test_whiten():
    # (x − 7/3)/sqrt(14/9) on masked entries: −4/√14, −1/√14, 5/√14; 0 elsewhere
    s = math.sqrt(14)
    out = whiten(X, MASK)
    torch.testing.assert_close(out, torch.tensor([[-4 / s, -1 / s, 0], [5 / s, 0, 0]], dtype=D))
    kept = whiten(X, MASK, shift_mean=False)  # unit variance, mean 7/3 kept
    torch.testing.assert_close(kept, (out + 7 / 3) * MASK)
    assert masked_mean(kept, MASK).item() == pytest.approx(7 / 3)


def test_explained_variance():
    # residual (0, 0, 1): var 2/9; target (1, 2, 3): var 2/3 → 1 − (2/9)/(2/3) = 2/3
    mask = torch.ones(1, 3)
    assert explained_variance(t(1, 2, 2)[None], t(1, 2, 3)[None], mask) == pytest.approx(2 / 3)
    assert explained_variance(t(2, 2, 2)[None], t(1, 2, 3)[None], mask) == pytest.approx(0.0)


def test_entropy_hand_and_chunked_against_naive():
    # p = (1/4, 3/4): H = ¼ log 4 + ¾ log(4/3) = 0.346574 + 0.215762 = 0.562335; uniform(4): log 4
    logits = torch.tensor([[0.0, math.log(3), -math.inf, -math.inf], [0.0, 0.0, 0.0, 0.0]],
                          dtype=D)
    torch.testing.assert_close(entropy_from_logits(logits), t(0.5623351446188083, math.log(4)))
    z = torch.randn(5, 7, 11, dtype=D, generator=torch.Generator().manual_seed(0))
    naive = -(torch.softmax(z, -1) * torch.log_softmax(z, -1)).sum(-1)
    torch.testing.assert_close(entropy_from_logits(z, chunk_size=3), naive)


def test_kl_estimators():
    # π_θ = 0.5, π_ref = 0.25: log r = log(π_ref/π_θ) = −log 2
    # k1 = log 2; k2 = ½(log 2)² = 0.240227; k3 = (0.5 − 1) + log 2 = 0.193147
    logp, ref = t(math.log(0.5)), t(math.log(0.25))
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(math.log(2) - 0.5)
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(logp, ref, "k4")


def test_token_rewards_places_score_at_last_response_token():
    # β = 0.5: −β·kl on real tokens, + score at the last one, 0 on padding
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=D)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = token_rewards(t(1.0, 2.0), kl, mask, beta=0.5)
    torch.testing.assert_close(out, torch.tensor([[-0.05, -0.1 + 1.0, 0.0],
                                                  [-0.2, -0.25, -0.3 + 2.0]], dtype=D))
    assert last_token_index(torch.tensor([[1, 0, 0], [1, 1, 1]])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="no tokens"):
        token_rewards(t(1.0), kl[:1], torch.zeros(1, 3), beta=0.5)


def test_eos_penalty():
    score, has_eos = t(0.5, 2.0, -3.0), torch.tensor([True, False, False])
    torch.testing.assert_close(eos_penalty(score, has_eos), t(0.5, -1.0, -1.0))
    torch.testing.assert_close(eos_penalty(score, has_eos, mode="add"), t(0.5, 1.0, -4.0))
    with pytest.raises(ValueError, match="mode"):
        eos_penalty(score, has_eos, mode="clip")


def test_gae_hand_worked():
    # γ = 0.9, λ = 0.5 (γλ = 0.45). Row 0: r = (0, 0, 1), V = (0.5, 0.6, 0.7):
    #   δ2 = 1 − 0.7 = 0.3; δ1 = 0.9·0.7 − 0.6 = 0.03; δ0 = 0.9·0.6 − 0.5 = 0.04
    #   A2 = 0.3; A1 = 0.03 + 0.45·0.3 = 0.165; A0 = 0.04 + 0.45·0.165 = 0.11425
    #   G = A + V = (0.61425, 0.765, 1.0)
    # Row 1 (last token padding, garbage 9s ignored): r = (0, 1), V = (0.5, 0.6):
    #   δ1 = 1 − 0.6 = 0.4; δ0 = 0.04; A = (0.04 + 0.45·0.4, 0.4, 0) = (0.22, 0.4, 0)
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 9.0]], dtype=D)
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.11425, 0.165, 0.3], [0.22, 0.4, 0.0]],
                                                 dtype=D))
    torch.testing.assert_close(ret, torch.tensor([[0.61425, 0.765, 1.0], [0.72, 1.0, 0.0]],
                                                 dtype=D))


def test_gae_against_naive_double_loop():
    g = torch.Generator().manual_seed(1)
    B, T, gamma, lam = 4, 9, 0.97, 0.9
    rewards, values = torch.randn(B, T, dtype=D, generator=g), torch.randn(B, T, dtype=D,
                                                                            generator=g)
    lengths = [9, 5, 1, 7]
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        v = [values[b, i].item() for i in range(n)] + [0.0]
        deltas = [rewards[b, i].item() + gamma * v[i + 1] - v[i] for i in range(n)]
        for i in range(T):
            expected = sum((gamma * lam) ** k * deltas[i + k] for k in range(n - i)) if i < n else 0
            assert adv[b, i].item() == pytest.approx(expected, abs=1e-12)
            assert ret[b, i].item() == pytest.approx(expected + (v[i] if i < n else 0), abs=1e-12)


def test_ppo_policy_loss():
    # ratio = (1.5, 0.5, 1.1), Â = (1, 1, −2), ε = 0.2; 4th token is padding
    # −Â·ρ = (−1.5, −0.5, 2.2); −Â·clip(ρ) = (−1.2, −0.8, 2.2); max = (−1.2, −0.5, 2.2)
    # loss = 0.5/3; clipped strictly larger only on token 0 → clipfrac 1/3
    # approxkl = ½·mean(log²1.5, log²0.5, log²1.1) = ½·(0.164402 + 0.480453 + 0.009084)/3
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 50.0]], dtype=D))
    adv = torch.tensor([[1.0, 1.0, -2.0, 100.0]], dtype=D)
    loss, m = ppo_policy_loss(logp, torch.zeros_like(logp), adv, torch.tensor([[1, 1, 1, 0]]))
    assert loss.item() == pytest.approx(0.5 / 3)
    assert m["policy/clipfrac"] == pytest.approx(1 / 3)
    assert m["policy/approxkl"] == pytest.approx(0.10898983303094993)


def test_ppo_value_loss():
    # V = (1, 0, 2), V_old = (0.5, 0.5, 2), G = (2, 0, 1), ε_v = 0.2
    # V_clip = (0.7, 0.3, 2); (V − G)² = (1, 0, 1); (V_clip − G)² = (1.69, 0.09, 1)
    # 0.1·½·mean(1.69, 0.09, 1) = 0.05·2.78/3 = 0.0463333; clipfrac 2/3
    loss, m = ppo_value_loss(t(1.0, 0.0, 2.0)[None], t(0.5, 0.5, 2.0)[None],
                             t(2.0, 0.0, 1.0)[None], torch.ones(1, 3))
    assert loss.item() == pytest.approx(0.05 * 2.78 / 3)
    assert m["value/clipfrac"] == pytest.approx(2 / 3)


def test_adaptive_kl_controller():
    # e = clip(9/6 − 1, ±0.2) = 0.2: 0.15·(1 + 0.2·1000/10000) = 0.153
    # e = 6.6/6 − 1 = 0.1: 0.153·(1 + 0.1·0.05) = 0.153765; e = −0.2: ·(1 − 0.2) = 0.123012
    ctl = AdaptiveKLController(init=0.15, target=6.0, horizon=10000)
    assert ctl.update(9.0, 1000) == pytest.approx(0.153)
    assert ctl.update(6.6, 500) == pytest.approx(0.153765)
    assert ctl.update(0.0, 10000) == pytest.approx(0.123012)
    assert ctl.value == pytest.approx(0.123012)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05 and fixed.value == 0.05


def test_rloo_advantages():
    # group (1, 2, 3): baselines (2.5, 2, 1.5) → (−1.5, 0, 1.5)
    # group (4, 4, 7): baselines (5.5, 5.5, 4) → (−1.5, −1.5, 3)
    out = rloo_advantages(t(1, 2, 3, 4, 4, 7), k=3)
    torch.testing.assert_close(out, t(-1.5, 0.0, 1.5, -1.5, -1.5, 3.0))
    with pytest.raises(ValueError, match="multiple"):
        rloo_advantages(t(1, 2, 3, 4), k=3)
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(t(1, 2), k=1)


def test_grpo_advantages():
    # group (1, 2, 3): mean 2, unbiased std sqrt((1 + 0 + 1)/2) = 1 → (−1, 0, 1)/1.0001
    # group (0, 0, 6): mean 2, std sqrt((4 + 4 + 16)/2) = √12 = 3.464102 → (−2, −2, 4)/3.464202
    # group (5, 5, 5): std 0 → 0
    out = grpo_advantages(t(1, 2, 3, 0, 0, 6, 5, 5, 5), group_size=3)
    s = math.sqrt(12) + 1e-4
    torch.testing.assert_close(out, t(-1 / 1.0001, 0, 1 / 1.0001, -2 / s, -2 / s, 4 / s, 0, 0, 0))
    torch.testing.assert_close(grpo_advantages(t(1, 2, 3, 0, 0, 6), 3, scale=False),
                               t(-1, 0, 1, -2, -2, 4))
