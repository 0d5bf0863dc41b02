"""Reward models, reward sources and best-of-n: exact numbers on tiny models and fakes."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from prefopt.algorithms.best_of_n import BestOfN, BestOfNConfig, best_of_n, load_best_of_n
from prefopt.algorithms.reward import (
    RewardConfig,
    RewardModule,
    normalization_stats,
    sample_prompts,
)
from prefopt.data.collate import collate_prompts
from prefopt.data.records import PreferencePair, PromptRecord, user
from prefopt.data.tokenize import encode_completion, encode_prompt
from prefopt.errors import ConfigError
from prefopt.feedback.reward_sources import (
    GoldSource,
    RewardModelSource,
    ensemble_reduce,
    load_reward_source,
    raw_scores,
    saved_mode,
)
from prefopt.policy import ModelConfig, Rollout, SamplingConfig, load_policy
from prefopt.policy.heads import ScalarConfig, load_scalar_model, new_scalar_model
from prefopt.policy.load import load_tokenizer

PROMPTS = [user("what is two plus three?"), user("what colour is the sky?"),
           user("hello"), user("sort these words: cat dog")]
RESPONSES = ["five", "the sky is blue", "hello world", "cat dog"]


class FirstTokenReward(torch.nn.Module):
    """r(row) = input_ids[row, 0]: a stand-in scalar model with hand-set rewards."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.cfg = ScalarConfig()

    def forward(self, input_ids, attention_mask):
        return input_ids[:, 0].float() + 0 * self.dummy


def _module(model, tok, cfg=None, **kw):
    return RewardModule(model, tok, [], cfg or RewardConfig(), max_length=64, batch_size=4, **kw)


def test_module_loss_on_hand_batch(tiny_llama):
    """r_w = (2, 0), r_l = (0, 1), labels (1, 0.75), margins (0.5, 0).
    No margin: Δ = (2, −1); ℓ_1 = softplus(−2) = 0.126928,
    ℓ_2 = 0.75·softplus(1) + 0.25·softplus(−1) = 1.063262; mean 0.595095.
    Centering c = 0.1: + 0.1·mean((2+0)², (0+1)²) = + 0.25 -> 0.845095.
    With margins: ℓ_1 = softplus(−1.5) = 0.201413 -> mean 0.632337."""
    tok = load_tokenizer(str(tiny_llama))
    mb = {"input_ids": torch.tensor([[2], [0], [0], [1]]),
          "attention_mask": torch.ones(4, 1, dtype=torch.long),
          "label": torch.tensor([1.0, 0.75]), "margin": torch.tensor([0.5, 0.0])}
    m = FirstTokenReward()
    loss, metrics = _module(m, tok).loss(mb)
    assert loss.item() == pytest.approx(0.595095, abs=1e-5)
    assert metrics["reward/accuracy"] == 0.5  # pair 2: label 0.75 but r_w < r_l
    assert metrics["reward/margin"] == pytest.approx(0.5)
    loss, _ = _module(m, tok, RewardConfig(center_coef=0.1)).loss(mb)
    assert loss.item() == pytest.approx(0.845095, abs=1e-5)
    loss, _ = _module(m, tok, RewardConfig(use_margin=True)).loss(mb)
    assert loss.item() == pytest.approx(0.632337, abs=1e-5)


def test_concatenated_forward_equals_unpadded_scores(tiny_llama):
    """One (2B, T) right-padded forward == each sequence scored alone, and the module's loss
    == the naive BT loss on those per-sequence rewards."""
    tok = load_tokenizer(str(tiny_llama))
    torch.manual_seed(0)
    model = new_scalar_model(ModelConfig(path=str(tiny_llama)), tok)
    pairs = [PreferencePair(PROMPTS[0], "five", "the answer is two", label=0.75),
             PreferencePair(PROMPTS[2], "hello world", "no", label=1.0)]
    mod = RewardModule(model, tok, pairs, RewardConfig(), 64, batch_size=2)
    trainable = {id(p) for p in mod.trainable_parameters()}
    lm_head = model.backbone.get_output_embeddings().weight
    assert id(model.head.weight) in trainable and id(lm_head) not in trainable
    n_backbone = sum(1 for p in model.backbone.parameters() if p is not lm_head)
    assert len(trainable) == n_backbone + 2  # every backbone weight but the LM head, + head
    mb = next(iter(mod.train_batches(0)))
    r_w, r_l = mod.rewards(mb)
    label = mb["label"]  # rows are shuffled: match them to pairs by their labels
    with torch.no_grad():
        alone = []
        for p in pairs:
            row = []
            for text in (p.chosen, p.rejected):
                ids = torch.tensor([encode_prompt(tok, p.prompt) + encode_completion(tok, text)])
                row.append(model(ids, torch.ones_like(ids)).item())
            alone.append(row)
    by_label = {p.label: a for p, a in zip(pairs, alone)}
    for i, lab in enumerate(label.tolist()):
        assert r_w[i].item() == pytest.approx(by_label[lab][0], abs=1e-5)
        assert r_l[i].item() == pytest.approx(by_label[lab][1], abs=1e-5)
    delta = r_w - r_l
    naive = -(label * torch.log(torch.sigmoid(delta))
              + (1 - label) * torch.log(torch.sigmoid(-delta))).mean()
    loss, _ = mod.loss(mb)
    assert loss.item() == pytest.approx(naive.item(), abs=1e-6)


@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_head_reload_gives_identical_scores(tmp_path, tiny_llama, mode):
    tok = load_tokenizer(str(tiny_llama))
    torch.manual_seed(1)
    model = new_scalar_model(ModelConfig(path=str(tiny_llama), mode=mode, lora_r=4), tok)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # LoRA B starts at 0: make the adapter matter
                p.normal_(std=0.5)
        model.head.bias.fill_(0.3)
    model.cfg.mean, model.cfg.std = 0.25, 2.0
    model.save(tmp_path / "rm", tok)
    reloaded = load_scalar_model(tmp_path / "rm", mode=saved_mode(tmp_path / "rm"))
    model.eval()
    before = raw_scores(model, tok, PROMPTS, RESPONSES)
    after = raw_scores(reloaded, tok, PROMPTS, RESPONSES)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert (reloaded.cfg.mean, reloaded.cfg.std) == (0.25, 2.0)
    assert before.std() > 1e-3  # the inputs are told apart, so equality means something


def test_normalisation_gives_mean_0_std_1(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    torch.manual_seed(2)
    model = new_scalar_model(ModelConfig(path=str(tiny_llama)), tok)
    policy = load_policy(ModelConfig(path=str(tiny_llama)))
    greedy = SamplingConfig(max_new_tokens=6, do_sample=False)
    cfg = RewardConfig(normalize_sampling=greedy)
    mod = _module(model, tok, cfg, norm_prompts=PROMPTS)
    mean, std = mod.normalize(policy)
    assert (model.cfg.mean, model.cfg.std) == (mean, std)
    texts = policy.generate(PROMPTS, greedy).texts  # greedy: the same responses again
    raw = raw_scores(model, tok, PROMPTS, texts)
    scores = (raw - model.cfg.mean) / model.cfg.std
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert mod.normalize(policy) == (mean, std)  # runs once


def test_normalization_stats_by_hand():
    """raw (1, 2, 3, 6): mean 3, population std sqrt((4 + 1 + 0 + 9)/4) = sqrt(3.5)."""
    mean, std = normalization_stats(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(math.sqrt(3.5))
    assert normalization_stats(torch.tensor([2.0, 2.0]))[1] == 1e-6  # floor, no 0 division


def test_sample_prompts_dedupes_and_caps():
    pool = [user("a"), user("b"), user("a"), user("c"), user("d")]
    assert sample_prompts(pool, 10, 0) == [user("a"), user("b"), user("c"), user("d")]
    picked = sample_prompts(pool, 2, 0)
    assert len(picked) == 2 and picked == sample_prompts(pool, 2, 0)


def test_ensemble_reductions_by_hand():
    """Members (3) × rows (2): columns (1, 2, 3) and (4, 0, 2).
    mean = (2, 2); min = (1, 0); population std = (sqrt(2/3), sqrt(8/3)) = (0.816497, 1.632993);
    mean − 0.5·std = (1.591752, 1.183503)."""
    s = torch.tensor([[1.0, 4.0], [2.0, 0.0], [3.0, 2.0]])
    torch.testing.assert_close(ensemble_reduce(s, "mean"), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(ensemble_reduce(s, "min"), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(ensemble_reduce(s, "mean_minus_std", k=0.5),
                               torch.tensor([1.591752, 1.183503]), atol=1e-6, rtol=0)
    torch.testing.assert_close(ensemble_reduce(s[:1], "mean_minus_std"), s[0])
    with pytest.raises(ConfigError, match="mean_minus_std"):
        ensemble_reduce(s, "max")


@pytest.fixture(scope="module")
def two_reward_models(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("rms")
    tok = load_tokenizer(str(tiny_llama))
    paths = []
    for i, (mean, std) in enumerate([(0.1, 0.5), (-0.2, 3.0)]):
        torch.manual_seed(10 + i)
        m = new_scalar_model(ModelConfig(path=str(tiny_llama), mode="lora", lora_r=4), tok)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.5)
        m.cfg.mean, m.cfg.std = mean, std
        paths.append(str(m.save(root / f"rm{i}", tok)))
    return paths


def test_reward_model_source_normalises_and_ensembles(two_reward_models, tiny_llama):
    records = [PromptRecord(p) for p in PROMPTS]
    src = load_reward_source(",".join(two_reward_models), ensemble="min")
    members = src.member_scores(records, RESPONSES)  # (2, 4)
    tok = load_tokenizer(str(tiny_llama))
    for row, path, (mean, std) in zip(members, two_reward_models, [(0.1, 0.5), (-0.2, 3.0)]):
        raw = raw_scores(load_scalar_model(path), tok, PROMPTS, RESPONSES)
        torch.testing.assert_close(row, (raw - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(src.score(records, RESPONSES), members.min(0).values)
    single = load_reward_source(two_reward_models[0])
    torch.testing.assert_close(single.score(records, RESPONSES), members[0], atol=1e-5, rtol=0)


def test_text_path_equals_token_path(two_reward_models, tiny_llama):
    """Rollout tensors (left-padded prompts, right-padded responses ending in EOS) score
    as the text path (chat template + response + EOS, right-padded)."""
    tok = load_tokenizer(str(tiny_llama))
    src = RewardModelSource(two_reward_models, ensemble="mean_minus_std", k=0.7)
    assert src.shares_tokenizer(tok)
    prompt = collate_prompts([encode_prompt(tok, p) for p in PROMPTS], tok.pad_token_id)
    resp = [encode_completion(tok, r) for r in RESPONSES]
    width = max(map(len, resp))
    resp_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in resp])
    resp_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in resp])
    rollout = Rollout(prompt["input_ids"], prompt["attention_mask"], resp_ids, resp_mask,
                      torch.ones(len(resp), dtype=torch.bool), RESPONSES)
    tokens = src.score_rollout(rollout)
    text = src.score([PromptRecord(p) for p in PROMPTS], RESPONSES)
    torch.testing.assert_close(tokens, text, atol=1e-5, rtol=0)
    assert text.std() > 1e-3


def test_gold_source_and_spec_errors(tmp_path):
    world = SimpleNamespace(gold=SimpleNamespace(
        score=lambda recs, resps: [float(len(r)) for r in resps]))
    src = load_reward_source("gold", world=world)
    assert isinstance(src, GoldSource)
    out = src.score([PromptRecord(PROMPTS[0])] * 2, ["ab", "abcd"])
    assert out.dtype == torch.float32 and out.tolist() == [2.0, 4.0]
    with pytest.raises(ConfigError, match="needs a world"):
        load_reward_source("gold")
    with pytest.raises(ConfigError, match="scalar_config.json"):
        load_reward_source(str(tmp_path))


class FakePolicy:
    """Response j (global row index) to a prompt is '<content> j'."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, cfg=None, batch_size=32):
        self.calls.append((len(prompts), batch_size))
        return SimpleNamespace(texts=[f"{p[0]['content']} {j}" for j, p in enumerate(prompts)])


class TableReward:
    def __init__(self, table):
        self.table, self.seen = table, []

    def score(self, records, responses):
        self.seen.append([r.id for r in records])
        return torch.tensor([self.table[t] for t in responses])


def test_best_of_n_selection_exact():
    """n = 4; prompt a gets rows 0–3, prompt b rows 4–7. Scores a: (0.1, 0.9, 0.3, 0.9) ->
    row 1 (first of the tie); b: (−1, −2, 5, 0) -> row 6."""
    records = [PromptRecord(user("a"), id="a"), PromptRecord(user("b"), id="b")]
    table = {"a 0": 0.1, "a 1": 0.9, "a 2": 0.3, "a 3": 0.9,
             "b 4": -1.0, "b 5": -2.0, "b 6": 5.0, "b 7": 0.0}
    policy, reward = FakePolicy(), TableReward(table)
    texts, scores = best_of_n(policy, records, reward, 4, SamplingConfig(), batch_size=3)
    assert texts == ["a 1", "b 6"]
    torch.testing.assert_close(scores, torch.tensor([0.9, 5.0]))
    assert reward.seen == [["a"] * 4 + ["b"] * 4]
    assert policy.calls == [(8, 3)]
    texts, scores = best_of_n(FakePolicy(), records[:1], TableReward(table), 1)
    assert texts == ["a 0"] and scores.tolist() == [pytest.approx(0.1)]


def test_best_of_n_description_round_trip(tmp_path):
    cfg = BestOfNConfig(n=4, reward="gold", temperature=0.9)
    bon = BestOfN("runs/toy/sft/final", cfg)
    bon.save(tmp_path)
    policy, loaded = load_best_of_n(tmp_path)
    assert policy == "runs/toy/sft/final" and loaded == cfg
    assert bon.summary()["best_of_n/kl_analytic"] == pytest.approx(math.log(4) - 3 / 4)


@pytest.mark.parametrize("name", ["reward", "best_of_n"])
def test_toy_recipes_parse(name):
    from prefopt.recipe import load_recipe

    cfg = load_recipe(Path(__file__).parents[2] / "recipes" / "toy" / f"{name}.yaml")
    assert cfg.algorithm == name and cfg.model.path == "runs/toy/sft/final"
    if name == "reward":
        assert (cfg.data.train, cfg.data.eval) == ("world:pairs", "world:pairs")
        assert (cfg.params.center_coef, cfg.params.n_normalize) == (0.01, 64)
    else:
        assert (cfg.params.n, cfg.params.reward) == (16, "runs/toy/reward/final")
