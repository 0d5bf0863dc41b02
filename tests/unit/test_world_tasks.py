"""minihh prompt families, splits, behaviours, demonstrations, corpus and the World registry."""

import hashlib
import random
from collections import Counter

import pytest

from prefopt.algorithms.cai.prompts import ANSWER_A
from prefopt.errors import ConfigError
from prefopt.worlds import World, get_world
from prefopt.worlds.minihh import MiniHH, lexicon
from prefopt.worlds.minihh.behaviours import (
    BEHAVIOURS,
    RAMBLES,
    REFUSALS,
    demonstrate,
    demonstrations,
    respond,
)
from prefopt.worlds.minihh.constitution import load_world_constitution
from prefopt.worlds.minihh.corpus import DOC_MIX, corpus, corpus_docs
from prefopt.worlds.minihh.gold import classify, gold_reward, words
from prefopt.worlds.minihh.tasks import FAMILIES, SPLITS, family_pools, make_prompts, quotas


def test_quotas_largest_remainder():
    # 10 * (0.5, 0.3, 0.2) is exact; 7 / 3 = 2.33 each, the tie goes to the first name.
    assert quotas(10, {"a": 0.5, "b": 0.3, "c": 0.2}) == {"a": 5, "b": 3, "c": 2}
    assert quotas(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}


def test_make_prompts_mix_and_determinism():
    recs = make_prompts("train", 200, seed=3)
    # default proportions 0.2/0.15/0.2/0.15/0.15/0.15 of 200
    assert Counter(r.family for r in recs) == {"arithmetic": 40, "wordlist": 30, "facts": 40,
                                               "harmful": 30, "scary_benign": 30, "open": 30}
    again = make_prompts("train", 200, seed=3)
    assert [(r.id, r.prompt) for r in recs] == [(r.id, r.prompt) for r in again]
    assert [r.id for r in make_prompts("train", 200, seed=4)] != [r.id for r in recs]
    only = make_prompts("test", 12, seed=0, families=["harmful", "open"])
    assert Counter(r.family for r in only) == {"harmful": 6, "open": 6}


def test_ids_are_family_and_text_hash():
    for r in make_prompts("validation", 30, seed=0):
        text = r.prompt[0]["content"]
        assert r.id == f"{r.family}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def test_splits_disjoint_and_sized():
    texts = {s: {r.prompt[0]["content"] for f in FAMILIES for p in family_pools(f, s) for r in p}
             for s in SPLITS}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    total = sum(len(t) for t in texts.values())
    assert 0.77 < len(texts["train"]) / total < 0.83   # 80% by hash


def test_meta_answers():
    for r in make_prompts("train", 300, seed=1, families=["arithmetic", "wordlist"]):
        m = r.meta
        if m["kind"] == "plus":
            assert m["answer"] == str(m["a"] + m["b"])
        elif m["kind"] == "times":
            assert m["answer"] == str(m["a"] * m["b"])
        elif m["kind"] == "sort":
            assert m["answer"] == sorted(m["items"])
        elif m["kind"] == "reverse":
            assert m["answer"] == m["items"][::-1]


def test_unknown_split_or_family():
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        make_prompts("dev", 1, 0)
    with pytest.raises(ConfigError, match="unknown minihh family 'math'"):
        make_prompts("train", 1, 0, families=["math"])
    with pytest.raises(ConfigError, match="unknown minihh behaviour 'rude'"):
        respond(make_prompts("train", 1, 0)[0], "rude", random.Random(0))


def test_prompts_and_responses_are_short():
    rng = random.Random(0)
    for r in make_prompts("train", 300, seed=2):
        assert len(words(r.prompt[0]["content"])) <= 15
        assert len(words(respond(r, "good", rng))) <= 28
        for b in BEHAVIOURS:   # padded harmful refusals are the longest
            assert len(words(respond(r, b, rng))) <= 42


def test_hand_picked_responses():
    rec = next(r for r in family_pools("arithmetic", "train")[0] if r.meta["a"] == 7
               and r.meta["b"] == 5)
    rng = random.Random(0)
    assert respond(rec, "good", rng) == "7 plus 5 is 12."
    assert respond(rec, "comply", rng) == "sure. 7 plus 5 is 12."
    assert respond(rec, "refuse", rng) in REFUSALS


def test_key_words_are_unambiguous():
    """Each open key word is in its own topic's sentence and in no other stock text."""
    sentences = {t: [s for _, s in spec["points"]] for t, spec in lexicon.OPEN_TOPICS.items()}
    for topic, spec in lexicon.OPEN_TOPICS.items():
        for key, sentence in spec["points"]:
            assert key in words(sentence)
            for other, texts in sentences.items():
                if other != topic:
                    assert all(key not in words(s) for s in texts), (key, other)
    stock = " ".join([*RAMBLES, *REFUSALS, *lexicon.FILLERS])
    keys = {k for spec in lexicon.OPEN_TOPICS.values() for k, _ in spec["points"]}
    keys |= {k for spec in lexicon.SCARY_BENIGN.values() for k in spec["keys"]}
    assert not keys & set(words(stock))


def test_demonstrator_mostly_good():
    recs = make_prompts("train", 1000, seed=5)
    rng = random.Random(0)
    replies = [demonstrate(r, rng) for r in recs]
    good = sum(gold_reward(r, y) >= 1.0 for r, y in zip(recs, replies))
    # good with p = 0.8 except the 30% compliance on harmful prompts (15% of the mix):
    # 0.8 * (1 - 0.15 * 0.3) = 0.764
    assert 0.73 < good / 1000 < 0.80
    harmful = [(r, y) for r, y in zip(recs, replies) if r.family == "harmful"]
    complied = sum(classify(r, y)["harmful_compliance"] for r, y in harmful)
    assert 0.22 < complied / len(harmful) < 0.38
    demos = demonstrations("train", 20, seed=5)
    assert [d.id for d in demos] == [r.id for r in make_prompts("train", 20, seed=5)]
    assert demos == demonstrations("train", 20, seed=5)


def test_corpus_deterministic_and_mixed():
    assert corpus(50, seed=1) == corpus(50, seed=1)
    assert corpus(50, seed=1) != corpus(50, seed=2)
    docs = corpus_docs(2000, seed=0)
    kinds = Counter(d.kind for d in docs)
    for kind, share in DOC_MIX.items():
        assert abs(kinds[kind] / 2000 - share) < 0.03
    chat = [b for d in docs if d.kind == "chat" for b in d.behaviours]
    assert abs(chat.count("good") / len(chat) - 0.45) < 0.03
    critiques = [d.faithful for d in docs if d.kind == "critique"]
    assert abs(sum(critiques) / len(critiques) - 0.8) < 0.06


def test_corpus_comparisons_agree_with_gold_mostly():
    docs = [d for d in corpus_docs(3000, seed=0) if d.kind == "comparison"]
    by_text = {r.prompt[0]["content"]: r for f in FAMILIES for p in family_pools(f, "train")
               for r in p}
    agree = 0
    for d in docs:
        text = d.messages[0]["content"]
        a = text.split("\n(A) ")[1].split("\n(B) ")[0]
        b = text.split("\n(B) ")[1].split("\n")[0]
        prompt = text.split("Human: ")[1].split("\n\n")[0]
        rec = by_text[prompt]
        a_wins = gold_reward(rec, a) > gold_reward(rec, b)
        assert (d.messages[-1]["content"] == ANSWER_A) == (a_wins == d.faithful)
        agree += d.faithful
    assert abs(agree / len(docs) - 0.75) < 0.06


def test_constitution_loads():
    c = load_world_constitution()
    assert c.name == "minihh"
    assert [p.name for p in c.principles] == ["harmless", "helpful", "concise",
                                              "no_over_refusal"]
    assert [f.principle for f in c.few_shot] == ["harmless", "no_over_refusal"]


def test_world_registry():
    world = get_world("minihh")
    assert isinstance(world, MiniHH) and isinstance(world, World)
    assert [r.id for r in world.prompts("test", 5, 0)] == [r.id for r in make_prompts("test", 5, 0)]
    with pytest.raises(ConfigError, match="did you mean 'minihh'"):
        get_world("minihhh")
