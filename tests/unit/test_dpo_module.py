"""DPO / KTO / online DPO modules and preference sources against naive computations."""

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from prefopt.algorithms import reference_cache
from prefopt.algorithms.dpo import DPO, DPOConfig, harden, preference_credit
from prefopt.algorithms.kto import KTO, KTOConfig, mismatched, weight_ratio_warning
from prefopt.algorithms.online_dpo import OnlineDPO, OnlineDPOConfig, rollout_encodings
from prefopt.data.records import PreferencePair, PromptRecord, UnpairedExample, user
from prefopt.data.tokenize import encode_example
from prefopt.errors import ConfigError
from prefopt.feedback.preference_sources import (
    AnnotatorPreference,
    GoldPreference,
    RewardPreference,
    load_preference_source,
    pairwise_agreement,
    register_preference_source,
)
from prefopt.losses import PairLogps, preference_loss
from prefopt.policy import ModelConfig, load_policy
from prefopt.policy.logprobs import naive_token_logprobs

PAIRS = [
    PreferencePair(user("what is two plus three?"), "five good", "the answer is bad",
                   label=1.0, id="p0"),
    PreferencePair(user("what colour is the sky?"), "blue", "sort these words", label=0.8,
                   id="p1"),
    PreferencePair(user("reverse cat dog"), "dog cat good", "no", label=0.6, id="p2"),
]


def perturb(model, seed=1, scale=0.05):
    """Move the policy away from its reference so that log-ratios are not all zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(torch.randn(p.shape, generator=g) * scale)


def naive_logp(model, enc) -> torch.Tensor:
    """Σ completion log-probs of one unpadded sequence via full log-softmax + gather."""
    ids = torch.tensor([enc.input_ids])
    t = naive_token_logprobs(model, ids, torch.ones_like(ids))[0]  # (T-1,)
    return (t * torch.tensor(enc.completion_mask[1:], dtype=t.dtype)).sum()


def naive_pair_logps(policy_model, ref_model, tok, pairs, max_length=64):
    cols = {k: [] for k in ("c", "r", "cl", "rl", "rc", "rr")}
    for p in pairs:
        c = encode_example(tok, p.prompt, p.chosen, max_length)
        r = encode_example(tok, p.prompt, p.rejected, max_length)
        cols["c"].append(naive_logp(policy_model, c))
        cols["r"].append(naive_logp(policy_model, r))
        cols["cl"].append(float(c.n_completion))
        cols["rl"].append(float(r.n_completion))
        if ref_model is not None:
            cols["rc"].append(naive_logp(ref_model, c))
            cols["rr"].append(naive_logp(ref_model, r))
    t = {k: torch.stack(v) if v and isinstance(v[0], torch.Tensor) else torch.tensor(v)
         for k, v in cols.items()}
    return PairLogps(t["c"], t["r"], t["cl"], t["rl"], t["rc"] if ref_model else None,
                     t["rr"] if ref_model else None)


@pytest.fixture
def policy(tiny_llama):
    return load_policy(ModelConfig(path=str(tiny_llama)))


@pytest.mark.parametrize("loss", ["dpo", "conservative_dpo", "ipo", "rpo", "simpo", "orpo"])
def test_loss_equals_preference_loss_on_naive_logps(tiny_llama, policy, loss):
    cfg = DPOConfig(loss=loss, beta=0.5, rpo_alpha=0.7, simpo_gamma=0.3)
    module = DPO(policy, PAIRS, cfg, max_length=64, batch_size=3)
    perturb(policy.model)
    mb = next(iter(module.train_batches(0)))
    order = mb["index"].tolist()  # the epoch shuffles the pairs
    got, metrics = module.loss(mb)
    ref = None if cfg.reference_free else load_policy(ModelConfig(path=str(tiny_llama))).model
    with torch.no_grad():
        p = naive_pair_logps(policy.model, ref, policy.tokenizer, [PAIRS[i] for i in order])
    label = torch.tensor([PAIRS[i].label for i in order])
    want, want_metrics = preference_loss(loss, p, cfg.beta, label, **cfg.hparams())
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    assert abs(want.item() - math.log(2)) > 1e-3  # the perturbation moved the policy
    for k, v in want_metrics.items():
        assert metrics[k] == pytest.approx(v, abs=1e-4), k


def test_precomputed_reference_equals_live(tiny_llama, tmp_path, monkeypatch):
    live_policy = load_policy(ModelConfig(path=str(tiny_llama)))
    pre_policy = load_policy(ModelConfig(path=str(tiny_llama)))
    live = DPO(live_policy, PAIRS * 3, DPOConfig(), 64, batch_size=4)
    pre = DPO(pre_policy, PAIRS * 3, DPOConfig(reference="precomputed", ref_batch_size=5),
              64, batch_size=4, cache_dir=tmp_path)
    assert pre_policy._frozen_ref is None  # full mode: no reference copy kept
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    perturb(live_policy.model)
    perturb(pre_policy.model)
    for b_live, b_pre in zip(live.train_batches(0), pre.train_batches(0)):
        assert "ref_chosen" in b_pre and "ref_chosen" not in b_live
        l_live, _ = live.loss(b_live)
        l_pre, _ = pre.loss(b_pre)
        assert abs(l_live.item() - math.log(2)) > 1e-3
        assert l_pre.item() == pytest.approx(l_live.item(), abs=1e-6)
    # Same key: loaded, not recomputed. Another max_length: a new key, recomputed.
    calls = []
    real = reference_cache.compute_reference_logps
    monkeypatch.setattr(reference_cache, "compute_reference_logps",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = load_policy(ModelConfig(path=str(tiny_llama)))
    DPO(fresh, PAIRS * 3, DPOConfig(reference="precomputed"), 64, 4, cache_dir=tmp_path)
    assert calls == []
    DPO(fresh, PAIRS * 3, DPOConfig(reference="precomputed"), 48, 4, cache_dir=tmp_path)
    assert calls == [1] and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_qlora_step_keeps_4bit_weights_and_trains_adapters(tiny_llama):
    policy = load_policy(ModelConfig(path=str(tiny_llama), mode="qlora", lora_r=4))
    module = DPO(policy, PAIRS, DPOConfig(), 64, batch_size=3)
    # Train mode, as the engine sets it: on CPUs with AVX512-BF16, bitsandbytes repacks the
    # 4-bit weights in place on the first eval-mode no-grad forward (another CPU kernel).
    policy.model.train()
    named = dict(policy.model.named_parameters())
    packed = {n: p.detach().clone() for n, p in named.items() if p.dtype == torch.uint8}
    lora_b = {n: p.detach().clone() for n, p in named.items() if "lora_B" in n}
    assert packed and lora_b
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-2)
    loss, _ = module.loss(next(iter(module.train_batches(0))))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # fresh adapters: π = π_ref
    loss.backward()
    opt.step()
    for n, before in packed.items():
        assert torch.equal(named[n].detach(), before), n
    moved = [n for n, before in lora_b.items() if not torch.equal(named[n].detach(), before)]
    assert len(moved) == len(lora_b)


def test_reference_free_losses_never_call_the_reference(policy, tmp_path):
    def boom(*a, **k):
        raise AssertionError("the reference was used")

    policy.reference = boom
    policy.reference_token_logprobs = boom
    module = DPO(policy, PAIRS, DPOConfig(loss="simpo", reference="precomputed"), 64, 3,
                 eval_data=PAIRS, cache_dir=tmp_path)
    loss, metrics = module.loss(next(iter(module.train_batches(0))))
    assert math.isfinite(loss.item()) and "rewards/chosen" in metrics
    out = module.evaluate()
    assert "eval/kl" not in out and 0.0 <= out["eval/preference_accuracy"] <= 1.0
    assert not list(tmp_path.iterdir())  # nothing precomputed


def test_eval_accuracy_and_kl_at_start(policy):
    """Before training π = π_ref: every implicit reward is 0 (tie → ½ credit) and KL = 0."""
    module = DPO(policy, PAIRS, DPOConfig(eval_kl_prompts=2, eval_max_new_tokens=4), 64, 2,
                 eval_data=PAIRS)
    out = module.evaluate()
    assert out["eval/preference_accuracy"] == 0.5
    assert out["eval/kl"] == pytest.approx(0.0, abs=1e-6)
    assert out["eval/loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_preference_credit_by_hand():
    """r_w − r_l = [1, −1, 0, 2] with labels [1, 1, 0.7, 0.5] → [1, 0, ½, NaN]."""
    got = preference_credit(torch.tensor([1.0, -1, 0, 2]), torch.zeros(4),
                            torch.tensor([1.0, 1, 0.7, 0.5]))
    assert got[:3].tolist() == [1.0, 0.0, 0.5] and math.isnan(got[3])


def test_trdpo_sync_and_config_errors(policy):
    module = DPO(policy, PAIRS, DPOConfig(ref_sync_every=2, ref_sync_alpha=0.5), 64, 3)
    ref_w = policy._frozen_ref.lm_head.weight.detach().clone()
    perturb(policy.model)
    module.after_step(1)  # not a multiple of τ = 2: unchanged
    assert torch.equal(policy._frozen_ref.lm_head.weight, ref_w)
    module.after_step(2)
    want = 0.5 * ref_w + 0.5 * policy.model.lm_head.weight.detach()
    assert torch.allclose(policy._frozen_ref.lm_head.weight, want, atol=1e-7)
    with pytest.raises(ConfigError, match="needs model.mode=full"):
        DPOConfig(ref_sync_every=2).validate("lora")
    with pytest.raises(ConfigError, match="hard_labels"):
        DPOConfig(loss="discopop").validate("full")
    with pytest.raises(ConfigError, match="did you mean 'simpo'"):
        DPOConfig(loss="simpoo").validate("full")


def test_harden_swaps_and_drops_ties():
    pairs = [PreferencePair(user("x"), "a", "b", label=0.3), PreferencePair(user("x"), "c", "d",
             label=0.5), PreferencePair(user("x"), "e", "f", label=0.9)]
    got = [(p.chosen, p.rejected, p.label) for p in harden(pairs)]
    assert got == [("b", "a", 1.0), ("e", "f", 1.0)]


# ---- KTO -------------------------------------------------------------------------------
ROWS = [UnpairedExample(user("what is two plus three?"), "five", True, "u0"),
        UnpairedExample(user("hello"), "bad dog", False, "u1"),
        UnpairedExample(user("sort these words cat dog"), "cat dog good", True, "u2")]


@pytest.mark.parametrize("seed", [4, 1])
def test_kto_mismatched_pairs_and_z0(tiny_llama, policy, seed):
    """KL rows rotate completions by one: (x0, y2), (x1, y0), (x2, y1); z0 = max(0, mean of
    log π_θ − log π_ref on them), computed here row by row without padding (seed 4 moves the
    policy so that the mean is > 0, seed 1 so that it is < 0 and z0 clamps to 0). The loss
    is then the mean of w_D·(1 − σ(β(ρ − z0))) (desirable) and w_U·(1 − σ(β(z0 − ρ)))."""
    cfg = KTOConfig(beta=0.5, w_desirable=1.0, w_undesirable=2.0)
    module = KTO(policy, ROWS, cfg, 64, batch_size=3)
    perturb(policy.model, seed=seed, scale=0.1)
    encs = [e for _, e in module.train]
    kl = mismatched(encs, 64)
    tok = policy.tokenizer
    for i, j in [(0, 2), (1, 0), (2, 1)]:
        want = encode_example(tok, ROWS[i].prompt, ROWS[j].completion, 64)
        assert kl[i] == want
    ref = load_policy(ModelConfig(path=str(tiny_llama))).model
    with torch.no_grad():
        kl_mean = sum((naive_logp(policy.model, e) - naive_logp(ref, e)).item() for e in kl) / 3
        rho = [(naive_logp(policy.model, e) - naive_logp(ref, e)).item() for e in encs]
    z0 = max(0.0, kl_mean)
    assert (z0 > 0.5) if seed == 4 else (kl_mean < -0.5 and z0 == 0.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = [1 - sig(0.5 * (rho[0] - z0)), 2 * (1 - sig(0.5 * (z0 - rho[1]))),
            1 - sig(0.5 * (rho[2] - z0))]
    loss, metrics = module.loss(module.collate(module.train))
    assert metrics["kto/z0"] == pytest.approx(z0, abs=1e-5)
    assert loss.item() == pytest.approx(sum(want) / 3, abs=1e-5)


def test_kto_first_step_loss_and_weight_warning(policy, caplog):
    with caplog.at_level(logging.WARNING):
        module = KTO(policy, ROWS, KTOConfig(), 64, batch_size=3)
    # π = π_ref: ρ = 0 and z0 = 0, so every loss is 1 − σ(0) = ½
    loss, metrics = module.loss(module.collate(module.train))
    assert loss.item() == pytest.approx(0.5, abs=1e-6) and metrics["kto/z0"] == 0.0
    assert "= 2" in caplog.text  # w_D·n_D / (w_U·n_U) = 1·2 / (1·1)
    assert weight_ratio_warning(2, 1, 1.0, 1.5) is None  # 2 / 1.5 = 4/3: inside
    assert weight_ratio_warning(3, 4, 1.0, 1.0) is not None  # 0.75 < 1


# ---- preference sources and online DPO --------------------------------------------------
class Scores:
    def __init__(self, table):
        self.table = table

    def score(self, records, responses):
        return [self.table[r] for r in responses]


class World:
    def __init__(self, table, votes=None):
        self.gold = Scores(table)
        self.votes = votes

    def annotator_pool(self, length_biased=False):
        world = self

        class Pool:
            def label(self, record, a, b, rng):
                return world.votes[(a, b)]
        return Pool()


def test_preference_sources_by_hand():
    recs = [PromptRecord(user("x"))] * 3
    a, b = ["p", "q", "r"], ["q", "q", "p"]
    table = {"p": 1.0, "q": 0.0, "r": -1.0}
    soft = RewardPreference(Scores(table)).prefer(recs, a, b)
    sig = 1 / (1 + math.exp(-1))
    assert soft.tolist() == pytest.approx([sig, 0.5, 1 / (1 + math.exp(2))])
    assert GoldPreference(World(table)).prefer(recs, a, b).tolist() == [1.0, 0.5, 0.0]
    votes = {("p", "q"): [1, 1, 0], ("q", "q"): [1, 0, 1, 0][:3], ("r", "p"): [0, 0, 0]}
    ann = AnnotatorPreference(World(table, votes))
    assert ann.prefer(recs, a, b).tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])
    # annotator pairs (0,1), (0,2), (1,2) agree on 3/3, 1/3, 1/3 of the items
    assert ann.metrics()["labels/annotator_agreement"] == pytest.approx(5 / 9)
    assert pairwise_agreement([[1, 1, 0], [1, 0, 1], [0, 0, 0]]) == pytest.approx(5 / 9)
    majority = AnnotatorPreference(World(table, votes), aggregation="majority")
    assert majority.prefer(recs, a, b).tolist() == [1.0, 1.0, 0.0]


def test_load_preference_source_errors_and_hook():
    ctx = SimpleNamespace(world=None, cfg=SimpleNamespace(train=SimpleNamespace(seed=0)))
    with pytest.raises(ConfigError, match="did you mean 'gold'"):
        load_preference_source("gld", ctx)
    with pytest.raises(ConfigError, match="needs a world"):
        load_preference_source("annotators", ctx)
    with pytest.raises(ConfigError, match="needs a reward-model directory"):
        load_preference_source("reward:", ctx)
    ctx.world = World({"x": 0.0})
    assert isinstance(load_preference_source("gold", ctx), GoldPreference)
    register_preference_source("fixed", lambda c, arg: FixedSource([float(arg)]))
    assert load_preference_source("fixed:0.25", ctx).prefer([], ["a"], ["b"]).tolist() == [0.25]


class FixedSource:
    def __init__(self, p):
        self.p = torch.tensor(p)

    def prefer(self, records, a, b):
        return self.p[:len(a)]


def test_online_rollout_orients_pairs_and_updates(policy):
    recs = [PromptRecord(user(t), id=str(i)) for i, t in
            enumerate(["hello", "what is two plus three?", "reverse cat dog"])]
    cfg = OnlineDPOConfig(max_new_tokens=6, temperature=1.0, update_epochs=2, minibatches=2)
    module = OnlineDPO(policy, recs, FixedSource([0.8, 0.3, 0.5]), cfg, batch_size=3)
    torch.manual_seed(0)
    exp = module.rollout(recs)
    assert exp["label"].tolist() == pytest.approx([0.8, 0.7, 0.5])
    torch.manual_seed(0)  # the same draws again, to know which sample was a and which b
    ro = policy.generate([r.prompt for r in recs] * 2, module.sampling)
    enc = rollout_encodings(ro)
    width = exp["input_ids"].shape[1]
    row = enc[4].input_ids  # pair 1: b (row 3 + 1) won
    assert exp["input_ids"][1, :len(row)].tolist() == row and len(row) <= width
    assert exp["input_ids"][4, :len(enc[1].input_ids)].tolist() == enc[1].input_ids
    assert module.rollout_metrics()["online/label_ties"] == pytest.approx(1 / 3)
    with torch.no_grad():
        ref = [naive_logp(policy.model, enc[i]) for i in (0, 4)]  # π_ref = π before a step
    assert exp["ref_chosen"][:2].tolist() == pytest.approx([r.item() for r in ref], abs=1e-4)
    steps = list(module.updates(exp, micro_batch_size=1))
    assert len(steps) == 4 and module.updates_per_batch == 4
    assert [sum(mb["label"].shape[0] for mb in s) for s in steps] == [2, 1, 2, 1]
    loss, _ = module.loss(steps[0][0])
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    module.cfg.hard_labels = True
    assert module.rollout(recs)["label"].tolist() == [1.0, 1.0]  # the tie is dropped
    module.cfg.hard_labels, module.source = False, FixedSource([math.nan, 0.9, 0.2])
    exp = module.rollout(recs)  # no label (an unparseable judge answer): the pair is dropped
    assert exp["label"].tolist() == pytest.approx([0.9, 0.8]) and exp["index"].tolist() == [1, 2]
    assert module.rollout_metrics()["online/unlabelled"] == pytest.approx(1 / 3)


def test_group_by_length_batches_pairs_of_similar_length(policy):
    """8 pairs whose longer side grows with the index, batch 2: grouping sorts the epoch's
    order by length within a window of 32 batches, so every batch holds two neighbours
    {0,1}, {2,3}, ... (in a shuffled batch order), and each pair is seen once per epoch."""
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    shuffled = [5, 2, 7, 0, 3, 6, 1, 4]  # input order unrelated to length
    pairs = [PreferencePair(user("say it"), " ".join(words[:k + 1]), "no", id=f"p{k}")
             for k in shuffled]
    module = DPO(policy, pairs, DPOConfig(group_by_length=True), 64, batch_size=2)
    length_rank = {i: shuffled[i] for i in range(8)}  # row -> its length rank
    for epoch in range(2):
        batches = [b["index"].tolist() for b in module.train_batches(epoch)]
        assert sorted(i for b in batches for i in b) == list(range(8))
        assert sorted(sorted(length_rank[i] // 2 for i in b) for b in batches) == [
            [0, 0], [1, 1], [2, 2], [3, 3]]
