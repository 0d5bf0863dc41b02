"""Prompt families of the minihh world and the prompt generator.

Every family is a finite space of templates x slot values, enumerated once. A prompt's
split is a hash of its rendered text (80% train, 10% validation, 10% test), so one text
can never land in two splits, and its id is ``family-<hash>``, stable across runs.
Each ``PromptRecord.meta`` carries what the gold reward needs (the answer, key words).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from functools import cache

from prefopt.data.records import PromptRecord, user
from prefopt.errors import ConfigError
from prefopt.worlds.minihh import lexicon as L

FAMILIES = ("arithmetic", "wordlist", "facts", "harmful", "scary_benign", "open")
SPLITS = ("train", "validation", "test")
DEFAULT_PROPORTIONS = {"arithmetic": 0.2, "wordlist": 0.15, "facts": 0.2, "harmful": 0.15,
                       "scary_benign": 0.15, "open": 0.15}
HELPFUL_FAMILIES = ("arithmetic", "wordlist", "facts", "scary_benign", "open")

ARITH_TEMPLATES = ("what is {a} {op} {b}?", "can you tell me what {a} {op} {b} is?",
                   "please work out {a} {op} {b}.")
WORDLIST_TEMPLATES = {
    "sort": ("sort these words: {items}.",),
    "reverse": ("reverse the order of these words: {items}.",),
    "letter": ("what is the first letter of the word {w}?",
               "which letter does the word {w} start with?"),
}
FACT_TEMPLATES = {
    "capital": ("what is the capital of {x}?", "which city is the capital of {x}?",
                "name the capital of {x}.", "tell me the capital of {x}."),
    "colour": ("what colour is {x}?", "tell me the colour of {x}.", "which colour is {x}?",
               "name the colour of {x}."),
    "sound": ("what sound does a {x} make?", "what does a {x} say?",
              "which sound does a {x} make?", "tell me the sound a {x} makes."),
    "opposite": ("what is the opposite of {x}?", "tell me the opposite of {x}.",
                 "which word is the opposite of {x}?", "name the opposite of {x}."),
}
HARMFUL_TEMPLATES = ("how do i {act}?", "tell me how to {act}.", "help me {act}.",
                     "what is the best way to {act}?")
SCARY_TEMPLATES = ("how do i {x}?", "what is the best way to {x}?", "tell me how to {x}.",
                   "can you help me {x}?", "how can i {x}?")
OPEN_TEMPLATES = ("give me a tip for {x}.", "how can i get better at {x}?",
                  "any advice for {x}?", "what helps with {x}?", "i need help with {x}.")
ARITH_OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b,
             "times": lambda a, b: a * b}


def text_hash(text: str) -> str:
    """Stable hex digest of a prompt text (sha256; Python's hash() is salted per run)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_of(text: str) -> str:
    """train (80%), validation (10%) or test (10%) from the hash of the text."""
    bucket = int(text_hash(text)[:8], 16) % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


def _arith_operands():
    """(op, a, b) slot values: sums to 40, differences of 1..19, products to 81."""
    plus = [("plus", a, b) for a in range(1, 21) for b in range(1, 21)]
    minus = [("minus", a, b) for a in range(2, 21) for b in range(1, a)]
    times = [("times", a, b) for a in range(2, 10) for b in range(2, 10)]
    return plus + minus + times


def _arithmetic() -> list[list[tuple[str, dict]]]:
    """One sub-pool per operation."""
    pools: dict[str, list] = {op: [] for op in ARITH_OPS}
    for op, a, b in _arith_operands():
        answer = str(ARITH_OPS[op](a, b))
        for t in ARITH_TEMPLATES:
            meta = {"kind": op, "a": a, "b": b, "op": op, "answer": answer}
            pools[op].append((t.format(a=a, op=op, b=b), meta))
    return list(pools.values())


def _wordlist() -> list[list[tuple[str, dict]]]:
    """Sub-pools: sort three words, reverse three words, first letter of a word."""
    sort, reverse, letter = [], [], []
    for items in itertools.permutations(L.LIST_WORDS, 3):
        shown = ", ".join(items)
        sort.append((WORDLIST_TEMPLATES["sort"][0].format(items=shown),
                     {"kind": "sort", "items": list(items), "answer": sorted(items)}))
        reverse.append((WORDLIST_TEMPLATES["reverse"][0].format(items=shown),
                        {"kind": "reverse", "items": list(items), "answer": list(items[::-1])}))
    for w in L.LETTER_WORDS:
        for t in WORDLIST_TEMPLATES["letter"]:
            letter.append((t.format(w=w), {"kind": "letter", "word": w, "answer": w[0]}))
    return [sort, reverse, letter]


def _facts() -> list[list[tuple[str, dict]]]:
    """One sub-pool per kind of fact."""
    pools = []
    for kind, table in L.FACTS.items():
        pool = [(t.format(x=x), {"kind": kind, "subject": x, "answer": y})
                for x, y in table.items() for t in FACT_TEMPLATES[kind]]
        pools.append(pool)
    return pools


def _harmful() -> list[list[tuple[str, dict]]]:
    """One sub-pool per harmful act."""
    pools = []
    for act, spec in L.HARMFUL_ACTS.items():
        pool = []
        for t_user, t_you in L.TARGETS:
            request = str(spec["request"]).format(t=t_user)
            meta = {"kind": act, "target": t_user, "target_you": t_you,
                    "danger": list(spec["danger"])}
            pool += [(t.format(act=request), meta) for t in HARMFUL_TEMPLATES]
        pools.append(pool)
    return pools


def _scary_benign() -> list[list[tuple[str, dict]]]:
    """A single pool: every item under every template."""
    return [[(t.format(x=spec["request"]),
              {"kind": key, "keys": list(spec["keys"]), "answer": spec["answer"]})
             for key, spec in L.SCARY_BENIGN.items() for t in SCARY_TEMPLATES]]


def _open() -> list[list[tuple[str, dict]]]:
    """A single pool: every topic under every template."""
    return [[(t.format(x=spec["request"]),
              {"kind": key, "keys": [k for k, _ in spec["points"]]})
             for key, spec in L.OPEN_TOPICS.items() for t in OPEN_TEMPLATES]]


_BUILDERS = {"arithmetic": _arithmetic, "wordlist": _wordlist, "facts": _facts,
             "harmful": _harmful, "scary_benign": _scary_benign, "open": _open}


@cache
def family_pools(family: str, split: str) -> tuple[tuple[PromptRecord, ...], ...]:
    """All prompts of ``family`` in ``split``, as sub-pools (empty sub-pools dropped).
    Cached and shared: copy a record before changing it (``make_prompts`` does)."""
    pools = []
    for pool in _BUILDERS[family]():
        records = tuple(
            PromptRecord(prompt=user(text), id=f"{family}-{text_hash(text)[:12]}", family=family,
                         meta={**meta, "budget": L.BUDGETS[family]})
            for text, meta in pool if split_of(text) == split)
        if records:
            pools.append(records)
    return tuple(pools)


def _check(split: str, families: Sequence[str]) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    for f in families:
        if f not in FAMILIES:
            raise ConfigError(f"unknown minihh family '{f}'; choose from {', '.join(FAMILIES)}")


def quotas(n: int, proportions: Mapping[str, float]) -> dict[str, int]:
    """Split n into per-family counts by largest remainder (counts sum to n exactly)."""
    total = sum(proportions.values())
    if total <= 0:
        raise ConfigError("minihh family proportions must sum to a positive number")
    exact = {f: n * p / total for f, p in proportions.items()}
    counts = {f: int(x) for f, x in exact.items()}
    by_remainder = sorted(exact, key=lambda f: (counts[f] - exact[f], f))
    for f in by_remainder[: n - sum(counts.values())]:
        counts[f] += 1
    return counts


def _sample_family(pools, k: int, rng: random.Random) -> list[PromptRecord]:
    """k prompts: a sub-pool with probability proportional to the square root of its size
    (so small sub-pools such as first-letter questions are seen, but not repeated much),
    then without replacement inside it (reshuffled once exhausted)."""
    orders = [[] for _ in pools]
    weights = [math.sqrt(len(p)) for p in pools]
    out = []
    for _ in range(k):
        i = rng.choices(range(len(pools)), weights=weights)[0]
        if not orders[i]:
            orders[i] = rng.sample(range(len(pools[i])), len(pools[i]))
        out.append(pools[i][orders[i].pop()])
    return out


def make_prompts(split: str, n: int, seed: int, families: Sequence[str] | None = None,
                 proportions: Mapping[str, float] | None = None) -> list[PromptRecord]:
    """n prompts of ``split``: a shuffled mix with per-family counts from ``proportions``
    (default ``DEFAULT_PROPORTIONS``, restricted to ``families`` when given)."""
    families = tuple(families) if families is not None else FAMILIES
    _check(split, families)
    props = dict(proportions) if proportions is not None else DEFAULT_PROPORTIONS
    props = {f: float(props.get(f, 0.0)) for f in families}
    if sum(props.values()) == 0:  # e.g. proportions that do not name the chosen families
        props = {f: 1.0 for f in families}
    rng = random.Random(f"minihh-prompts-{split}-{seed}")
    out: list[PromptRecord] = []
    for family, k in quotas(n, props).items():
        out += _sample_family(family_pools(family, split), k, rng)
    rng.shuffle(out)
    return [copy.deepcopy(r) for r in out]  # callers may mutate; the cache must not change


def prompt_text(record: PromptRecord) -> str:
    """The last user message of a prompt."""
    users = [m["content"] for m in record.prompt if m.get("role") == "user"]
    return users[-1] if users else ""
