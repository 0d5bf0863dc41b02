"""The minihh tokenizer: saved as a standard HF tokenizer, chat template, pad != eos, round trip."""

import random

import pytest
from transformers import AutoTokenizer

from prefopt.worlds.minihh.behaviours import respond
from prefopt.worlds.minihh.corpus import corpus
from prefopt.worlds.minihh.tasks import make_prompts
from prefopt.worlds.minihh.tokenizer import SPECIAL_TOKENS, build_tokenizer

CHAT = [{"role": "user", "content": "what is 7 plus 5?"},
        {"role": "assistant", "content": "7 plus 5 is 12."}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("minihh_tok")
    build_tokenizer(out, seed=0)
    return AutoTokenizer.from_pretrained(str(out))


def test_special_tokens(tok):
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2, 3, 4, 5, 6]
    assert (tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token) == (
        "<pad>", "<eos>", "<bos>", "<unk>")
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert tok.pad_token_id != tok.eos_token_id
    assert 400 < len(tok) < 800   # a few hundred word pieces


def test_chat_template_ids(tok):
    ids = tok.apply_chat_template(CHAT)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == [
        "<|user|>", "▁what", "▁is", "▁7", "▁plus", "▁5", "?", "<|assistant|>",
        "▁7", "▁plus", "▁5", "▁is", "▁12", ".", "<eos>"]
    assert ids == [4, 548, 305, 89, 409, 67, 14, 5, 89, 409, 67, 305, 26, 12, 1]
    assert tok.apply_chat_template(CHAT, tokenize=False) == (
        "<|user|>what is 7 plus 5?<|assistant|>7 plus 5 is 12.<eos>")


def test_prompt_plus_completion_is_the_conversation(tok):
    """The data contract: template(prompt, generation prompt) + completion + eos."""
    prompt = tok.apply_chat_template(CHAT[:1], add_generation_prompt=True)["input_ids"]
    assert prompt == [4, 548, 305, 89, 409, 67, 14, 5]
    completion = tok(CHAT[1]["content"], add_special_tokens=False)["input_ids"]
    assert prompt + completion + [tok.eos_token_id] == tok.apply_chat_template(CHAT)["input_ids"]


def test_round_trip_world_text(tok):
    rng = random.Random(0)
    texts = [m["content"] for conv in corpus(60, seed=7) for m in conv]
    for r in make_prompts("test", 60, seed=1):
        texts += [r.prompt[0]["content"], respond(r, "good", rng), respond(r, "verbose", rng)]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text


def test_short_sequences(tok):
    rng = random.Random(0)
    for r in make_prompts("test", 100, seed=2):
        assert len(tok.apply_chat_template(r.prompt, add_generation_prompt=True)["input_ids"]) < 40
        assert len(tok(respond(r, "good", rng))["input_ids"]) < 40


def test_unknown_words_map_to_unk(tok):
    assert tok("what is zebra?", add_special_tokens=False)["input_ids"] == [548, 305, 3, 14]
