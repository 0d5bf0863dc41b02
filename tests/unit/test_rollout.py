"""Rollout machinery and the RL modules' wiring, on a tiny llama with hand-set rollouts.

The hand-set rollout (``_fixed_rollout``) has prompts of P = 3 columns (the second row
left-padded by one) and responses of R = 3 columns:

    row 0: [ 4 45 23 | 10  3(EOS)  0 ]   response tokens 10, EOS     -> length 2, has EOS
    row 1: [ 0  4 18 | 11 12 13     ]   response tokens 11, 12, 13  -> length 3, no EOS

Log-prob position t scores token t+1, so the response tokens (columns 3, 4, 5) are scored at
positions 2, 3, 4: response_mask = [[0 0 1 1 0], [0 0 1 1 1]].
"""

import pytest
import torch

from prefopt.algorithms.pg import GRPO, RLOO, GRPOConfig, RLOOConfig
from prefopt.algorithms.ppo import PPO, PPOConfig
from prefopt.algorithms.rollout import (
    Experience,
    make_experience,
    minibatch_updates,
    repeat_records,
)
from prefopt.data.records import PromptRecord, user
from prefopt.policy import ModelConfig, SamplingConfig, load_policy
from prefopt.policy.generate import Rollout
from prefopt.policy.heads import new_scalar_model
from prefopt.policy.logprobs import naive_token_logprobs

EOS, PAD = 3, 0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads on a busy
    2-core machine slow these tests about tenfold."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _fixed_rollout(k: int = 1) -> Rollout:
    rows = [([4, 45, 23], [1, 1, 1], [10, EOS, PAD], [1, 1, 0], True, "a"),
            ([0, 4, 18], [0, 1, 1], [11, 12, 13], [1, 1, 1], False, "b c d")]
    rows = [r for r in rows for _ in range(k)]  # consecutive k rows share a prompt
    cols = list(zip(*rows))
    return Rollout(*(torch.tensor(c) for c in cols[:4]), torch.tensor(cols[4]), list(cols[5]))


class ListSource:
    """Returns the given scores in order, whatever the responses."""

    def __init__(self, scores):
        self.scores, self.calls = torch.tensor(scores, dtype=torch.float32), 0

    def score(self, records, responses):
        self.calls += 1
        return self.scores[:len(responses)]


class TokenSource(ListSource):
    """Has the token path; ``score`` must then not be called."""

    def score(self, records, responses):
        raise AssertionError("the text path was used although the token path applies")

    def score_tokens(self, prompt_ids, prompt_mask, response_ids, response_mask):
        return response_mask.sum(1).float()  # response length

    def shares_tokenizer(self, tokenizer):
        return True


@pytest.fixture
def policy(tiny_llama):
    return load_policy(ModelConfig(path=str(tiny_llama), mode="full"))


def _records(n=2):
    return [PromptRecord(user(f"prompt {i}"), id=str(i)) for i in range(n)]


def _patch_generate(monkeypatch, policy, k=1):
    monkeypatch.setattr(policy, "generate", lambda prompts, cfg, bs: _fixed_rollout(k))


def test_repeat_records_groups_consecutively():
    ids = [r.id for r in repeat_records(_records(2), 3)]
    assert ids == ["0", "0", "0", "1", "1", "1"]


def test_masks_logps_kl_and_eos_penalty_exact(policy, monkeypatch):
    _patch_generate(monkeypatch, policy)
    with policy.reference():  # freeze the reference, then move the policy away from it
        pass
    with torch.no_grad():
        policy.model.lm_head.weight.add_(0.05 * torch.randn_like(policy.model.lm_head.weight))
    sampling = SamplingConfig(temperature=0.7)
    exp, timings = make_experience(policy, _records(), ListSource([0.5, 0.25]), sampling,
                                   missing_eos_penalty=-1.0, forward_batch_size=1)
    assert exp.input_ids.tolist() == [[4, 45, 23, 10, EOS, PAD], [PAD, 4, 18, 11, 12, 13]]
    assert exp.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]]
    assert exp.response_mask.tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    # old log-probs = naive log_softmax(logits / T) gathered, on the response positions
    # (the LM head runs only there); 0 elsewhere
    naive = naive_token_logprobs(policy.model, exp.input_ids, exp.attention_mask, 0.7)
    resp = exp.response_mask.bool()
    torch.testing.assert_close(exp.old_logps[resp], naive[resp], atol=1e-5, rtol=1e-5)
    with policy.reference() as ref:
        naive_ref = naive_token_logprobs(ref, exp.input_ids, exp.attention_mask, 0.7)
    torch.testing.assert_close(exp.ref_logps[resp], naive_ref[resp], atol=1e-5, rtol=1e-5)
    assert not exp.old_logps[~resp].any() and not exp.ref_logps[~resp].any()
    # k1 on response positions only
    torch.testing.assert_close(exp.kl, (naive - naive_ref) * exp.response_mask)
    assert exp.kl.abs().sum() > 0
    # row 1 never stopped: its score is replaced by the penalty, the raw score is kept
    assert exp.raw_scores.tolist() == [0.5, 0.25]
    assert exp.scores.tolist() == [0.5, -1.0]
    assert exp.has_eos.tolist() == [True, False]
    assert set(timings) == {"time/generate", "time/score", "time/logprobs"}


def test_token_path_used_when_tokenizer_shared(policy, monkeypatch):
    _patch_generate(monkeypatch, policy)
    exp, _ = make_experience(policy, _records(), TokenSource([]), SamplingConfig(),
                             missing_eos_penalty=None)
    assert exp.scores.tolist() == [2.0, 3.0]  # lengths: 10 EOS | 11 12 13


def test_real_generation_shapes(policy):
    sampling = SamplingConfig(max_new_tokens=5)
    exp, _ = make_experience(policy, _records(3), ListSource([0.0] * 6), sampling, k=2)
    B, T = exp.input_ids.shape
    assert B == 6 and exp.response_mask.shape == exp.old_logps.shape == (6, T - 1)
    assert [r.id for r in exp.records] == ["0", "0", "1", "1", "2", "2"]
    # the tokens scored at masked positions are exactly the non-pad response tokens
    resp = exp.input_ids[:, 1:][exp.response_mask.bool()]
    assert int(exp.response_mask.sum()) == len(resp) and (resp != PAD).all()
    assert (exp.kl == 0).all()  # policy == reference before any update


def test_minibatch_updates_cover_each_row_once_per_epoch(policy, monkeypatch):
    _patch_generate(monkeypatch, policy, k=4)  # 8 rows
    exp, _ = make_experience(policy, _records(2), ListSource([0.0] * 8), SamplingConfig(), k=4)
    exp.extras = {"row": torch.arange(8)}
    steps = list(minibatch_updates(exp, 2, 2, 3, torch.Generator().manual_seed(0)))
    assert len(steps) == 4  # 2 epochs × 2 minibatches
    assert [[m.rows for m in s] for s in steps] == [[3, 1]] * 4  # 4 rows = 3 + 1 micro
    for epoch in (steps[:2], steps[2:]):
        seen = sorted(r for s in epoch for m in s for r in m.extras["row"].tolist())
        assert seen == list(range(8))


def _hand_experience(scores, kl_rows):
    """Four rows whose only meaningful fields are scores and per-row KL sums."""
    n = len(scores)
    kl = torch.zeros(n, 3)
    kl[:, 0] = torch.tensor(kl_rows)
    z = torch.zeros(n, 4, dtype=torch.long)
    return Experience(z, z, torch.ones(n, 3), kl, kl, kl, torch.tensor(scores),
                      torch.tensor(scores), torch.ones(n, dtype=torch.bool), [""] * n, [])


def test_rloo_advantage_is_leave_one_out_of_kl_penalised_reward(policy):
    """β = 0.5, k = 2: R = score − β·ΣKL = [1, 2, 3, 6] − 0.5·[0, 2, 0, 0] = [1, 1, 3, 6];
    A = R_i − R_other = [0, 0, −3, 3]."""
    module = RLOO(policy, None, [], RLOOConfig(), k=2, batch_size=2, kl_coef=0.5)
    adv = module.sequence_advantages(_hand_experience([1.0, 2.0, 3.0, 6.0], [0, 2, 0, 0]))
    torch.testing.assert_close(adv, torch.tensor([0.0, 0.0, -3.0, 3.0]))


def test_grpo_advantage_is_group_normalised(policy):
    """G = 4, scores [1, 2, 3, 6]: mean 3, unbiased std sqrt(14/3) = 2.16025;
    A = [−2, −1, 0, 3]/(2.16025 + 1e-4). KL does not enter the advantage."""
    module = GRPO(policy, None, [], GRPOConfig(), k=4, batch_size=1, kl_coef=0.04)
    adv = module.sequence_advantages(_hand_experience([1.0, 2.0, 3.0, 6.0], [5, 0, 0, 0]))
    expected = torch.tensor([-2.0, -1.0, 0.0, 3.0]) / ((14 / 3) ** 0.5 + 1e-4)
    torch.testing.assert_close(adv, expected)


def test_grpo_rollout_broadcasts_advantages_and_first_loss(policy, monkeypatch):
    """Rows (k = 2): prompt 0 twice (length 2), prompt 1 twice (length 3); scores
    [1, 3 | 2, 2]: means 2 and 2, unbiased stds √2 and 0, so A = [−1, 1]/(√2 + 1e-4) and
    [0, 0], on response tokens only. At the first step ρ = 1 and π_θ = π_ref, so the loss is
    −Σ_i A_i·len_i / Σ_i len_i = −(−2a + 2a)/10 = 0 and the k3 term is 0."""
    _patch_generate(monkeypatch, policy, k=2)
    cfg = GRPOConfig(missing_eos_penalty=None)
    module = GRPO(policy, ListSource([1.0, 3.0, 2.0, 2.0]), [], cfg, k=2, batch_size=2,
                  kl_estimator="k3", kl_coef=0.04)
    exp = module.rollout(_records(2))
    a = 1 / (2 ** 0.5 + 1e-4)
    expected = torch.tensor([[0, 0, -a, -a, 0], [0, 0, a, a, 0],
                             [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    torch.testing.assert_close(exp.extras["advantages"], expected)
    loss, metrics = module.loss(exp)
    assert abs(loss.item()) < 1e-6 and abs(metrics["policy/kl_ref"]) < 1e-6
    assert metrics["policy/clipfrac"] == 0.0


def test_ppo_returns_are_reward_to_go_with_gamma_lambda_one(policy, monkeypatch, tiny_llama):
    """γ = λ = 1, no whitening, KL = 0 at the start: G_t = Σ_{l≥t} r_l = score at every
    response token, and Â_t = score − V_old(t) with V_old read at log-prob position t."""
    _patch_generate(monkeypatch, policy)
    value = new_scalar_model(ModelConfig(path=str(tiny_llama), mode="full"))
    cfg = PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False, missing_eos_penalty=None)
    module = PPO(policy, value, ListSource([0.5, -2.0]), [], cfg, batch_size=2)
    exp = module.rollout(_records(2))
    mask = exp.response_mask
    expected_returns = torch.tensor([[0.5], [-2.0]]) * mask
    torch.testing.assert_close(exp.extras["returns"], expected_returns)
    with torch.no_grad():
        v = value.values(exp.input_ids, exp.attention_mask)[:, :-1]
    torch.testing.assert_close(exp.extras["advantages"], (expected_returns - v) * mask)
    metrics = module.rollout_metrics()
    assert metrics["objective/kl"] == 0.0 and metrics["kl_coef"] == 0.05
    assert metrics["response/length"] == 2.5 and metrics["response/no_eos_frac"] == 0.5
    assert metrics["objective/scores"] == pytest.approx(-0.75)


def test_ppo_state_dict_roundtrip(policy, tiny_llama):
    value = new_scalar_model(ModelConfig(path=str(tiny_llama), mode="full"))
    module = PPO(policy, value, None, [], PPOConfig(adaptive_kl=True, kl_coef=0.15), 2)
    module.kl_ctl.value, module.n_rollouts = 0.123, 7
    other = PPO(policy, value, None, [], PPOConfig(adaptive_kl=True, kl_coef=0.15), 2)
    other.load_state_dict(module.state_dict())
    assert other.kl_ctl.value == 0.123 and other.n_rollouts == 7
