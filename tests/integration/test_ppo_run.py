"""PPO / GRPO / RLOO on the real engine with tiny llamas and a fake reward.

The fake reward is the fraction of response tokens equal to the id of "yes" (about 1/70 for
the random model), so learning is visible as a rising mean score.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

from prefopt.algorithms import ppo as ppo_module
from prefopt.algorithms.pg import GRPO, RLOO, GRPOConfig, RLOOConfig
from prefopt.algorithms.ppo import PPO, PPOConfig, value_model_from_reward
from prefopt.cli import main
from prefopt.data.records import PromptRecord, user
from prefopt.engine.config import TrainConfig
from prefopt.engine.trainer import Trainer
from prefopt.policy import ModelConfig, SamplingConfig, load_policy
from prefopt.policy.heads import new_scalar_model
from prefopt.recipe import load_recipe

PROMPTS = ["what is two plus three?", "hello", "sort these words", "what colour is the sky?",
           "reverse cat dog", "tip", "good dog", "bad cat"]
RECIPES = Path(__file__).parents[2] / "recipes" / "toy"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads on a busy
    2-core machine slow these tests about tenfold."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class YesSource:
    """reward = (number of "yes" tokens) / (number of response tokens)."""

    def __init__(self, tokenizer):
        self.tok, self.yes = tokenizer, tokenizer.convert_tokens_to_ids("yes")

    def score(self, records, responses):
        ids = [self.tok(r, add_special_tokens=False)["input_ids"] for r in responses]
        return torch.tensor([i.count(self.yes) / max(len(i), 1) for i in ids])


def _records():
    return [PromptRecord(user(p), id=str(i)) for i, p in enumerate(PROMPTS)]


def _train(module, out, steps, lr=1e-2, **kw):
    cfg = TrainConfig(lr=lr, epochs=1000, max_steps=steps, batch_size=8, micro_batch_size=8,
                      lr_scheduler="constant", progress=False, seed=0, **kw)
    Trainer(module, cfg, out).fit()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scores(rows):
    return [r["objective/raw_scores"] for r in rows]


SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0)


def test_ppo_raises_the_fake_reward(tiny_llama, tmp_path):
    policy = load_policy(ModelConfig(path=str(tiny_llama)))
    value = new_scalar_model(ModelConfig(path=str(tiny_llama)), policy.tokenizer)
    cfg = PPOConfig(sampling=SAMPLING, missing_eos_penalty=None, kl_coef=0.01, ppo_epochs=1)
    module = PPO(policy, value, YesSource(policy.tokenizer), _records(), cfg, batch_size=8)
    rows = _train(module, tmp_path, 30)
    s = _scores(rows)
    # seed 0: about 0.03 over the first five rollouts, ~1.0 ("yes yes ...") over the last
    assert sum(s[-5:]) / 5 > sum(s[:5]) / 5 + 0.4, s
    logged = {"objective/scores", "objective/non_score_reward", "objective/kl",
              "objective/entropy", "policy/clipfrac", "policy/approxkl", "value/clipfrac",
              "value/explained_variance", "response/length", "response/no_eos_frac", "kl_coef",
              "time/generate", "time/score", "time/logprobs"}
    assert logged <= set(rows[-1])
    assert rows[-1]["response/length"] == 8.0 and rows[-1]["kl_coef"] == 0.01
    # non_score_reward = −β·KL
    assert rows[-1]["objective/non_score_reward"] == pytest.approx(-0.01 * rows[-1][
        "objective/kl"], rel=1e-5)


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_grpo_rloo_raise_the_fake_reward(tiny_llama, tmp_path, algo):
    policy = load_policy(ModelConfig(path=str(tiny_llama)))
    source = YesSource(policy.tokenizer)
    if algo == "grpo":
        cfg = GRPOConfig(sampling=SAMPLING, missing_eos_penalty=None, group_size=4, beta=0.0)
        module = GRPO(policy, source, _records(), cfg, 4, batch_size=4, kl_estimator="k3")
    else:
        cfg = RLOOConfig(sampling=SAMPLING, missing_eos_penalty=None, rloo_k=4, kl_coef=0.0)
        module = RLOO(policy, source, _records(), cfg, 4, batch_size=4)
    s = _scores(_train(module, tmp_path, 20))
    assert sum(s[-5:]) / 5 > sum(s[:5]) / 5 + 0.4, s


def _uint8_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}


def _lora_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _saved_reward_model(tiny_llama, out):
    model = new_scalar_model(ModelConfig(path=str(tiny_llama)))
    return model.save(out, load_policy(ModelConfig(path=str(tiny_llama))).tokenizer)


def test_ppo_qlora_step_keeps_4bit_base_and_trains_adapters(tiny_llama, tmp_path):
    mcfg = ModelConfig(path=str(tiny_llama), mode="qlora", lora_r=4)
    policy = load_policy(mcfg)
    value = value_model_from_reward(str(_saved_reward_model(tiny_llama, tmp_path / "rm")), mcfg)
    ids = torch.tensor([[4, 45, 23, 10, 3]])
    with torch.no_grad():  # bitsandbytes' CPU backend repacks the NF4 bytes on first use
        policy.model(input_ids=ids), value.values(ids, torch.ones_like(ids))
    before = [_uint8_weights(m) for m in (policy.model, value)]
    lora_before = [_lora_weights(m) for m in (policy.model, value)]
    assert all(before) and all(lora_before)
    cfg = PPOConfig(sampling=SAMPLING, missing_eos_penalty=None, ppo_epochs=1)
    module = PPO(policy, value, YesSource(policy.tokenizer), _records(), cfg, batch_size=8)
    rows = _train(module, tmp_path / "run", 1, lr=1e-2)
    assert rows[0]["step"] == 1
    for model, b4, lb in zip((policy.model, value), before, lora_before):
        for n, w in _uint8_weights(model).items():
            assert torch.equal(w, b4[n]), n  # packed NF4 base untouched
        changed = [n for n, w in _lora_weights(model).items() if not torch.equal(w, lb[n])]
        assert changed, "no LoRA adapter moved"


def test_value_init_from_reward_in_lora_equals_reward_model(tiny_llama, tmp_path):
    """A fresh LoRA (B = 0) on the reward backbone: V(s_t) = the reward model's r at t."""
    rm_dir = _saved_reward_model(tiny_llama, tmp_path / "rm")
    from prefopt.policy.heads import load_scalar_model

    rm = load_scalar_model(rm_dir)
    value = value_model_from_reward(str(rm_dir), ModelConfig(path=str(tiny_llama), mode="lora"))
    ids = torch.tensor([[4, 45, 23, 10, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(value.values(ids, mask), rm.values(ids, mask))
    trainable = {n.split(".")[0] for n, p in value.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "head"}
    assert all("lora_" in n for n, p in value.backbone.named_parameters() if p.requires_grad)


def test_adaptive_kl_coefficient_is_checkpointed_and_restored(tiny_llama, tmp_path):
    """Ziegler's controller with init 0.15, target 6, horizon 10, B = 4 rollouts per step.
    Step 1: π_θ = π_ref so KL = 0, e = clip(0/6 − 1, ±0.2) = −0.2, β = 0.15·(1 − 0.2·4/10)
    = 0.138. Step 2 (after resuming; lr 1e-4 keeps KL ≪ 6): β = 0.138·0.92 = 0.12696."""
    def module():
        policy = load_policy(ModelConfig(path=str(tiny_llama)))
        value = new_scalar_model(ModelConfig(path=str(tiny_llama)), policy.tokenizer)
        cfg = PPOConfig(sampling=SAMPLING, adaptive_kl=True, kl_coef=0.15, kl_target=6.0,
                        kl_horizon=10, ppo_epochs=1)
        return PPO(policy, value, YesSource(policy.tokenizer), _records()[:4], cfg, 4)

    tc = dict(lr=1e-4, epochs=10, batch_size=4, micro_batch_size=4, progress=False,
              save_every=1)
    first = module()
    Trainer(first, TrainConfig(max_steps=1, **tc), tmp_path).fit()
    saved = json.loads((tmp_path / "checkpoints" / "step-1" / "module.json").read_text())
    assert saved["kl_coef"] == pytest.approx(0.138) and saved["n_rollouts"] == 1
    second = module()
    Trainer(second, TrainConfig(max_steps=2, **tc), tmp_path).fit(resume=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_coef"] for r in rows] == pytest.approx([0.15, 0.138])
    assert second.kl_ctl.value == pytest.approx(0.12696)


@pytest.mark.parametrize("name", ["ppo", "ppo_lora", "ppo_qlora", "rloo", "grpo"])
def test_toy_recipes_parse(name):
    cfg = load_recipe(RECIPES / f"{name}.yaml")
    assert cfg.algorithm == name.split("_")[0]
    assert cfg.model.path == "runs/toy/sft/final" and cfg.data.train == "world:prompts"
    assert cfg.params.reward == "runs/toy/reward/final"
    assert cfg.model.mode == {"ppo": "full", "ppo_qlora": "qlora"}.get(name, "lora")


def test_prefopt_run_ppo_from_recipe(tiny_llama, tmp_path, monkeypatch):
    """The real entry point: recipe -> build(ctx) -> engine -> final/ and metrics."""
    monkeypatch.setattr(ppo_module, "load_reward_source",
                        lambda spec, world, **kw: YesSource(load_policy(
                            ModelConfig(path=str(tiny_llama))).tokenizer))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    recipe = {"algorithm": "ppo", "world": None,
              "model": {"path": str(tiny_llama), "mode": "lora", "lora_r": 4},
              "data": {"train": str(prompts)},
              "train": {"lr": 1e-3, "max_steps": 4, "batch_size": 4, "micro_batch_size": 2,
                        "progress": False},
              "ppo": {"reward": "fake", "value_init": "policy", "ppo_epochs": 2,
                      "sampling": {"max_new_tokens": 6}}}
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]  # 2 rollouts × (2 epochs × 1 minibatch)
    assert (out / "final" / "adapter_config.json").is_file()
