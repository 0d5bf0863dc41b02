"""AI label arithmetic (Bai et al. 2022 sec. 4; Lee et al. 2023) with hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from prefopt.algorithms.cai.labels import (
    LabelStats,
    clamp_label,
    parse_answer,
    position_bias,
    position_bias_mask,
    soft_label_from_logprobs,
    soft_labels_from_logprobs,
    swap_average,
)


def test_soft_label_is_normalised_probability():
    """P(A) = 0.3 / (0.3 + 0.1) = 0.75."""
    assert soft_label_from_logprobs(math.log(0.3), math.log(0.1)) == pytest.approx(0.75, abs=1e-15)
    assert soft_label_from_logprobs(-2.0, -2.0) == 0.5


def test_soft_label_is_stable_for_tiny_probabilities():
    """exp(-1000) underflows to 0, a naive 0/0; stably it is sigmoid(1) = 0.7310585786300049."""
    assert soft_label_from_logprobs(-1000.0, -1001.0) == pytest.approx(0.7310585786300049,
                                                                       abs=1e-15)
    assert soft_label_from_logprobs(-1001.0, -1000.0) == pytest.approx(0.2689414213699951,
                                                                       abs=1e-15)
    assert soft_label_from_logprobs(0.0, -1000.0) == 1.0
    assert soft_label_from_logprobs(-math.inf, -0.5) == 0.0
    with pytest.raises(ValueError, match="undefined"):
        soft_label_from_logprobs(-math.inf, -math.inf)


def test_soft_labels_batched_matches_scalar():
    a = torch.tensor([math.log(0.3), 0.0, -1000.0, -math.inf], dtype=torch.float64)
    b = torch.tensor([math.log(0.1), 0.0, -1001.0, -0.5], dtype=torch.float64)
    expected = torch.tensor([0.75, 0.5, 0.7310585786300049, 0.0], dtype=torch.float64)
    assert torch.allclose(soft_labels_from_logprobs(a, b), expected, atol=1e-15, rtol=0)


def test_swap_average():
    """(x, y) shown: first wins 0.8; (y, x) shown: first (y) wins 0.3, so x wins 0.7.
    P(x ≻ y) = (0.8 + 0.7) / 2 = 0.75."""
    assert swap_average(0.8, 0.3) == pytest.approx(0.75, abs=1e-15)
    # always picking the first position cancels out to 0.5
    assert swap_average(0.9, 0.9) == pytest.approx(0.5, abs=1e-15)
    out = swap_average(torch.tensor([0.8, 0.9, 1.0]), torch.tensor([0.3, 0.9, 0.0]))
    assert torch.allclose(out, torch.tensor([0.75, 0.5, 1.0]), atol=1e-7)


@pytest.mark.parametrize("p_ab, p_ba, biased", [
    (0.8, 0.7, True),    # first position both times
    (0.2, 0.1, True),    # second position both times
    (0.8, 0.3, False),   # consistent: x wins both times
    (0.5, 0.9, False),   # a tie is no position preference
    (0.5, 0.5, False),
])
def test_position_bias(p_ab, p_ba, biased):
    assert position_bias(p_ab, p_ba) is biased


def test_position_bias_mask():
    p_ab = torch.tensor([0.8, 0.2, 0.8, 0.5])
    p_ba = torch.tensor([0.7, 0.1, 0.3, 0.9])
    assert position_bias_mask(p_ab, p_ba).tolist() == [True, True, False, False]


def test_clamp_label():
    assert clamp_label(0.9) == 0.6
    assert clamp_label(0.1) == 0.4
    assert clamp_label(0.55) == 0.55
    assert clamp_label(0.9, lo=0.2, hi=0.8) == 0.8
    out = clamp_label(torch.tensor([0.0, 0.45, 1.0]))
    assert torch.allclose(out, torch.tensor([0.4, 0.45, 0.6]))
    with pytest.raises(ValueError, match="0 <= lo <= hi <= 1"):
        clamp_label(0.5, lo=0.7, hi=0.3)


@pytest.mark.parametrize("text, answer", [
    ("(A)", "A"),
    (" (B)", "B"),
    ("(B) because it declines politely.", "B"),
    ("(A). Response (B) is worse.", "A"),      # the reply opens with its answer
    ("B", "B"),
    (" A.", "A"),
    ("I pick (B) of the two.", "B"),
    ("Both (A) and (B) are fine.", None),     # ambiguous
    ("(A) helps more but (B) is safer. The answer is: (B)", "B"),   # the cue wins
    ("Step 1: ... The answer is: A", "A"),
    ("the answer is (B).", "B"),
    ("The answer is: Response (A)", "A"),
    ("The answer is: Although both are fine.", None),   # cue without a letter
    ("The answer is: (A)\nWait, the answer is: (B)", "B"),   # last cue
    ("A response that helps.", None),          # the article 'A' is not an answer
    ("", None),
    ("I cannot decide.", None),
])
def test_parse_answer(text, answer):
    assert parse_answer(text) == answer


def test_label_stats_counts_and_rates():
    stats = LabelStats()
    stats.add(0.8, reference=1.0)                 # agrees
    stats.add(0.3, biased=True, reference=1.0)    # disagrees, biased
    stats.add(None, reference=0.0)                # unparseable: no agreement counted
    stats.add(0.5, reference=0.5)                 # tie agrees with tie
    stats.add(0.6)                                # no reference
    assert (stats.n, stats.n_unparseable, stats.n_position_bias,
            stats.n_with_reference, stats.n_agree) == (5, 1, 1, 3, 2)
    assert stats.as_dict() == {
        "labels/n": 5, "labels/n_unparseable": 1, "labels/n_position_bias": 1,
        "labels/n_with_reference": 3, "labels/n_agree": 2,
        "labels/unparseable_rate": 0.2, "labels/position_bias_rate": 0.2,
        "labels/agreement": 2 / 3}


def test_label_stats_add_swapped_and_merge():
    stats = LabelStats()
    assert stats.add_swapped(0.8, 0.3, reference=1.0) == pytest.approx(0.75)   # consistent
    assert stats.add_swapped(0.9, 0.9, reference=0.0) == pytest.approx(0.5)    # biased, tie
    assert stats.add_swapped(None, 0.4) is None
    assert (stats.n, stats.n_unparseable, stats.n_position_bias,
            stats.n_with_reference, stats.n_agree) == (3, 1, 1, 2, 1)
    total = stats.merge(LabelStats(n=1, n_with_reference=1, n_agree=1))
    assert total == LabelStats(n=4, n_unparseable=1, n_position_bias=1, n_with_reference=3,
                               n_agree=2)
    assert total.agreement == pytest.approx(2 / 3)


def test_label_stats_empty():
    stats = LabelStats()
    assert (stats.unparseable_rate, stats.position_bias_rate, stats.agreement) == (0.0, 0.0, None)


# --- LocalHFBackend (prefopt.algorithms.cai.backends): the judge that produces the log-probs

WORDS = ["[PAD]", "[UNK]", "[EOS]", "<user>", "<assistant>", "(A)", "(B)", "hello", "world",
         "which", "is", "better", "yes", "no", "please"]
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} [EOS] {% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")
CONVS = [[{"role": "user", "content": "hello"}],
         [{"role": "user", "content": "which is better yes no please"}],
         [{"role": "user", "content": "world"},
          {"role": "assistant", "content": "hello"},
          {"role": "user", "content": "yes"}]]


@pytest.fixture(scope="module")
def judge():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]",
                                        eos_token="[EOS]", unk_token="[UNK]")
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=64, pad_token_id=0, eos_token_id=2,
                         bos_token_id=None)
    return LlamaForCausalLM(config).eval(), tokenizer


def naive_logprob(model, tokenizer, conv, choice: str) -> float:
    """Σ log_softmax(model(prompt + choice))[t-1, y_t] over the choice tokens, unbatched."""
    prompt = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = tokenizer(prompt + choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)   # (T, V)
    return sum(logp[t - 1, ids[t]].item() for t in range(n, len(ids)))


def test_rendered_prompt_and_tokens(judge):
    from prefopt.algorithms.cai.backends import LocalHFBackend

    backend = LocalHFBackend(*judge, batch_size=2)
    assert backend.render(CONVS[0]) == "<user> hello [EOS] <assistant> "
    assert backend._choice_sequences(CONVS[:1], ["(A)", "yes please"]) == [
        ([3, 7, 2, 4, 5], 4), ([3, 7, 2, 4, 12, 14], 4)]


def test_choice_logprobs_match_naive_forward(judge):
    from prefopt.algorithms.cai.backends import LocalHFBackend

    model, tokenizer = judge
    choices = ["(A)", "(B)", "yes please"]   # unequal lengths: padding inside a batch
    got = LocalHFBackend(model, tokenizer, batch_size=4).choice_logprobs(CONVS, choices)
    want = [[naive_logprob(model, tokenizer, c, ch) for ch in choices] for c in CONVS]
    assert len(got) == 3 and all(len(row) == 3 for row in got)
    assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-5, rtol=0)
    # the soft label of the judge is the two-way softmax of those log-probs
    p = soft_label_from_logprobs(got[0][0], got[0][1])
    assert p == pytest.approx(math.exp(want[0][0]) / (math.exp(want[0][0]) + math.exp(want[0][1])))


def test_generate_greedy_is_deterministic_and_padding_free(judge):
    from prefopt.algorithms.cai.backends import LocalHFBackend

    model, tokenizer = judge
    batched = LocalHFBackend(model, tokenizer, batch_size=2).generate(CONVS, 4, 0.0)
    again = LocalHFBackend(model, tokenizer, batch_size=2).generate(CONVS, 4, 0.0)
    single = LocalHFBackend(model, tokenizer, batch_size=1).generate(CONVS, 4, 0.0)
    assert len(batched) == 3 and all(isinstance(s, str) for s in batched)
    assert batched == again == single   # left padding does not change greedy outputs
    assert all(len(s.split()) <= 4 for s in batched)
    model.train()   # the backend scores in eval mode and gives the caller's mode back
    try:
        assert LocalHFBackend(model, tokenizer).generate(CONVS[:1], 4, 0.0) == batched[:1]
        assert model.training
    finally:
        model.eval()


def test_sampling_gives_one_string_per_conversation(judge):
    from prefopt.algorithms.cai.backends import ChatBackend, LocalHFBackend

    backend = LocalHFBackend(*judge, batch_size=2)
    assert isinstance(backend, ChatBackend)
    torch.manual_seed(1)
    out = backend.generate(CONVS, 3, 1.0)
    assert len(out) == 3 and all(len(s.split()) <= 3 for s in out)


def test_cut_at_eos_and_common_prefix():
    from prefopt.algorithms.cai.backends import common_prefix_len, cut_at_eos

    assert cut_at_eos([5, 6, 2, 7, 2], {2}) == [5, 6]
    assert cut_at_eos([5, 6], {2}) == [5, 6]
    assert cut_at_eos([9, 5], {2, 9}) == []
    assert common_prefix_len([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
