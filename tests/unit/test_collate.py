"""Collators and masks: exact tensors."""

import torch

from prefopt.data.collate import collate_pairs, collate_prompts, collate_sft
from prefopt.data.records import user
from prefopt.data.tokenize import Encoded, encode_example
from prefopt.engine.module import split_batch


def test_collate_sft_right_pads_with_completion_mask():
    rows = [Encoded([5, 6, 7], [0, 1, 1]), Encoded([8, 9], [0, 1])]
    b = collate_sft(rows, pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["completion_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]


def test_collate_pairs_stacks_chosen_then_rejected():
    c = [Encoded([1, 2, 3], [0, 1, 1]), Encoded([4, 5], [0, 1])]
    r = [Encoded([1, 9], [0, 1]), Encoded([4, 8, 8, 8], [0, 1, 1, 1])]
    b = collate_pairs(c, r, pad_id=0, label=[1.0, 0.7])
    assert b["input_ids"].tolist() == [[1, 2, 3, 0], [4, 5, 0, 0], [1, 9, 0, 0], [4, 8, 8, 8]]
    assert b["completion_mask"].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0],
                                             [0, 1, 1, 1]]
    assert b["label"].tolist() == [1.0, 0.699999988079071]
    assert b["margin"].tolist() == [0.0, 0.0]


def test_collate_prompts_left_pads():
    b = collate_prompts([[7, 8, 9], [5]], pad_id=0)
    assert b["input_ids"].tolist() == [[7, 8, 9], [0, 0, 5]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_split_batch_keeps_pair_halves_together():
    c = [Encoded([1], [1]), Encoded([2], [1]), Encoded([3], [1])]
    r = [Encoded([4], [1]), Encoded([5], [1]), Encoded([6], [1])]
    parts = list(split_batch(collate_pairs(c, r, pad_id=0), 2))
    assert [p["input_ids"].flatten().tolist() for p in parts] == [[1, 2, 4, 5], [3, 6]]
    assert [p["label"].tolist() for p in parts] == [[1.0, 1.0], [1.0]]


def test_split_batch_slices_id_lists_of_pair_batches():
    c = [Encoded([1], [1]), Encoded([2], [1]), Encoded([3], [1])]
    r = [Encoded([4], [1]), Encoded([5], [1]), Encoded([6], [1])]
    batch = {**collate_pairs(c, r, pad_id=0), "ids": ["a", "b", "c", "a'", "b'", "c'"]}
    assert [p["ids"] for p in split_batch(batch, 2)] == [["a", "b", "a'", "b'"], ["c", "c'"]]


def test_encode_example_masks_completion_and_appends_eos(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    enc = encode_example(tok, user("hello"), "hello world", max_length=64)
    prompt = tok("<|user|> hello <|assistant|>", add_special_tokens=False)["input_ids"]
    completion = tok("hello world", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == prompt + completion + [tok.eos_token_id]
    assert enc.completion_mask == [0] * len(prompt) + [1] * (len(completion) + 1)
    assert encode_example(tok, user("hello"), "hello world", max_length=len(prompt) + 2) is None


def test_position_ids_skip_left_padding():
    from prefopt.policy.logprobs import position_ids_from_mask

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
