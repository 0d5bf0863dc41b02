"""Policy layer: loading modes, log-probs against the naive reference, generation, save/load."""

import pytest
import torch

from prefopt.data.collate import collate_sft
from prefopt.data.records import user
from prefopt.data.tokenize import encode_example
from prefopt.policy import ModelConfig, SamplingConfig, load_policy
from prefopt.policy.generate import response_mask_after_eos
from prefopt.policy.logprobs import (
    naive_token_logprobs,
    selective_log_softmax,
    token_logprobs,
)

ARCHS = ("llama", "qwen2", "gpt2", "gpt_neox")


def _batch(policy):
    tok = policy.tokenizer
    rows = [encode_example(tok, user("what is two plus three?"), "five", 64),
            encode_example(tok, user("sort these words"), "cat dog sky blue", 64)]
    return collate_sft(rows, tok.pad_token_id)


def test_selective_log_softmax_matches_log_softmax_gather():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    index = torch.randint(0, 11, (3, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(selective_log_softmax(logits, index), ref)
    bf = selective_log_softmax(logits.bfloat16(), index)
    torch.testing.assert_close(bf, ref, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_token_logprobs_match_naive(tiny_models, arch, mode):
    policy = load_policy(ModelConfig(path=str(tiny_models[arch]), mode=mode, lora_r=4))
    batch = _batch(policy)
    fast = token_logprobs(policy.model, batch["input_ids"], batch["attention_mask"],
                          temperature=0.7, chunk=1)
    naive = naive_token_logprobs(policy.model, batch["input_ids"], batch["attention_mask"], 0.7)
    real = batch["attention_mask"][:, 1:].bool()
    torch.testing.assert_close(fast[real], naive[real], atol=1e-5, rtol=1e-5)


def test_recompute_gives_same_gradients(tiny_llama):
    policy = load_policy(ModelConfig(path=str(tiny_llama), mode="full"))
    batch = _batch(policy)
    grads = []
    for recompute in (False, True):
        policy.model.zero_grad()
        lp = token_logprobs(policy.model, batch["input_ids"], batch["attention_mask"],
                            chunk=1, recompute=recompute)
        (lp * batch["completion_mask"][:, 1:]).sum().backward()
        grads.append(policy.model.lm_head.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("recompute", [False, True])
def test_selected_positions_match_naive_values_and_gradients(tiny_models, arch, recompute):
    """``where``: the LM head runs on the completion positions only. Those values and the
    gradient of their sum equal the naive full-vocabulary reference; other positions are 0."""
    policy = load_policy(ModelConfig(path=str(tiny_models[arch]), mode="full"))
    batch = _batch(policy)
    ids, attn = batch["input_ids"], batch["attention_mask"]
    where = batch["completion_mask"][:, 1:].bool()
    out, grads = [], []
    for fast in (True, False):
        policy.model.zero_grad()
        if fast:
            lp = token_logprobs(policy.model, ids, attn, 0.7, chunk=1, recompute=recompute,
                                where=where)
        else:
            lp = naive_token_logprobs(policy.model, ids, attn, 0.7)
        (lp * where).sum().backward()
        out.append(lp.detach())
        grads.append([p.grad.clone() for p in policy.model.parameters() if p.grad is not None])
    torch.testing.assert_close(out[0][where], out[1][where], atol=1e-5, rtol=1e-5)
    assert torch.equal(out[0][~where], torch.zeros_like(out[0][~where]))
    assert len(grads[0]) == len(grads[1]) > 0
    for g_fast, g_naive in zip(*grads):
        torch.testing.assert_close(g_fast, g_naive, atol=1e-5, rtol=1e-4)


def test_selected_positions_can_be_empty(tiny_llama):
    policy = load_policy(ModelConfig(path=str(tiny_llama), mode="full"))
    batch = _batch(policy)
    where = torch.zeros_like(batch["completion_mask"][:, 1:], dtype=torch.bool)
    lp = token_logprobs(policy.model, batch["input_ids"], batch["attention_mask"], where=where)
    assert torch.equal(lp, torch.zeros(where.shape))


def test_left_padding_does_not_change_logprobs(tiny_llama):
    """A prompt left-padded in a batch scores as it does alone (position ids skip padding)."""
    policy = load_policy(ModelConfig(path=str(tiny_llama)))
    ids = torch.tensor([[4, 45, 23, 42, 29, 5, 16]])
    alone = token_logprobs(policy.model, ids, torch.ones_like(ids))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], 1)
    torch.testing.assert_close(token_logprobs(policy.model, padded, mask)[:, 3:], alone,
                               atol=1e-5, rtol=1e-5)


def test_response_mask_after_eos():
    ids = torch.tensor([[7, 3, 9, 9], [7, 8, 9, 10], [3, 0, 0, 0]])
    mask, has_eos = response_mask_after_eos(ids, eos_id=3)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_generate_left_pads_and_stops(tiny_llama, mode):
    policy = load_policy(ModelConfig(path=str(tiny_llama), mode=mode, lora_r=4))
    prompts = [user("hello"), user("what is two plus three?")]
    torch.manual_seed(0)
    roll = policy.generate(prompts, SamplingConfig(max_new_tokens=6, temperature=1.0))
    tok = policy.tokenizer
    assert roll.prompt_ids.shape[0] == 2 and roll.response_ids.shape[1] <= 6
    # left padding: the shorter prompt starts with pads, both end at the last column
    assert roll.prompt_mask[:, -1].tolist() == [1, 1]
    assert roll.prompt_ids[0, 0].item() == tok.pad_token_id
    # after the first EOS only pads
    for r, m in zip(roll.response_ids, roll.response_mask):
        assert (r[~m.bool()] == tok.pad_token_id).all()
    assert len(roll.texts) == 2


def test_reference_is_adapter_disabled_base(tiny_llama):
    policy = load_policy(ModelConfig(path=str(tiny_llama), mode="lora", lora_r=4))
    batch = _batch(policy)
    for n, p in policy.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    ids, attn = batch["input_ids"], batch["attention_mask"]
    pol = policy.token_logprobs(ids, attn)
    ref = policy.reference_token_logprobs(ids, attn)
    base = load_policy(ModelConfig(path=str(tiny_llama)))
    torch.testing.assert_close(ref, base.token_logprobs(ids, attn).detach())
    assert (pol - ref).abs().max() > 1e-3
