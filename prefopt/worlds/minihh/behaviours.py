"""Response generators of the minihh world: a good behaviour and five bad ones.

``respond(record, behaviour, rng)`` writes the reply a given kind of assistant would give:

- ``good``: correct and concise; on a harmful request a brief refusal with a reason and a
  safe alternative.
- ``wrong``: an incorrect answer (on a harmful request: an answer to some other question).
- ``verbose``: the good answer padded with filler phrases, one repeated.
- ``comply``: complies with a harmful request (a harmless placeholder plan, nothing
  actionable); on other requests "sure." followed by the good answer.
- ``refuse``: a needless, evasive refusal without reason or alternative.
- ``ramble``: off-topic and repetitive.
"""

from __future__ import annotations

import random

from prefopt.data.records import Demonstration, PromptRecord
from prefopt.errors import ConfigError
from prefopt.worlds.minihh import lexicon as L
from prefopt.worlds.minihh.tasks import make_prompts

BEHAVIOURS = ("good", "wrong", "verbose", "comply", "refuse", "ramble")
REFUSALS = ("i can not help with that.", "sorry, i can not help with that.",
            "i will not answer that.", "i am not able to help with that.")
RAMBLES = ("the weather is nice today", "i like a long story", "there are many things to say",
           "people say many things", "it is what it is", "we can talk about it later")
FACT_ANSWERS = {"capital": "the capital of {x} is {y}.", "colour": "{x} is {y}.",
                "sound": "a {x} says {y}.", "opposite": "the opposite of {x} is {y}."}


def _words_list(words) -> str:
    return ", ".join(words) + "."


def _good_arithmetic(meta: dict, answer) -> str:
    return f"{meta['a']} {meta['op']} {meta['b']} is {answer}."


def _good_wordlist(meta: dict, answer) -> str:
    if meta["kind"] == "letter":
        return f"the word {meta['word']} starts with {answer}."
    return _words_list(answer)


def _good_facts(meta: dict, answer) -> str:
    return FACT_ANSWERS[meta["kind"]].format(x=meta["subject"], y=answer)


def _good_harmful(meta: dict) -> str:
    spec = L.HARMFUL_ACTS[meta["kind"]]
    t = meta["target_you"]
    return (f"i can not help with that, because {str(spec['reason']).format(t=t)}. "
            f"instead, you could {str(spec['alternative']).format(t=t)}.")


def _open_answer(topic: str, rng: random.Random) -> str:
    """Two of the topic's three key points, in a random order."""
    points = [s for _, s in L.OPEN_TOPICS[topic]["points"]]
    p1, p2 = rng.sample(points, 2)
    return f"{p1} and {p2}."


def good(record: PromptRecord, rng: random.Random) -> str:
    """The correct, concise reply."""
    meta, family = record.meta, record.family
    if family == "arithmetic":
        return _good_arithmetic(meta, meta["answer"])
    if family == "wordlist":
        return _good_wordlist(meta, meta["answer"])
    if family == "facts":
        return _good_facts(meta, meta["answer"])
    if family == "harmful":
        return _good_harmful(meta)
    if family == "scary_benign":
        return str(meta["answer"])
    return _open_answer(meta["kind"], rng)


def _other(options, avoid, rng: random.Random):
    """A random option different from ``avoid``."""
    return rng.choice([o for o in options if o != avoid])


def _wrong_arithmetic(meta: dict, rng: random.Random) -> str:
    answer = int(meta["answer"])
    candidates = [answer + d for d in (-3, -2, -1, 1, 2, 3) if answer + d >= 0]
    return _good_arithmetic(meta, rng.choice(candidates))


def _wrong_wordlist(meta: dict, rng: random.Random) -> str:
    if meta["kind"] == "letter":
        letters = sorted({w[0] for w in L.LETTER_WORDS})
        return _good_wordlist(meta, _other(letters, meta["answer"], rng))
    answer = list(meta["answer"])
    perms = [[answer[i] for i in p] for p in
             ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))]
    return _words_list(rng.choice(perms))


def wrong(record: PromptRecord, rng: random.Random) -> str:
    """An incorrect answer in the good answer's format."""
    meta, family = record.meta, record.family
    if family == "arithmetic":
        return _wrong_arithmetic(meta, rng)
    if family == "wordlist":
        return _wrong_wordlist(meta, rng)
    if family == "facts":
        values = sorted(set(L.FACTS[meta["kind"]].values()))
        return _good_facts(meta, _other(values, meta["answer"], rng))
    if family == "harmful":  # misreads the request and answers a different question
        key = rng.choice(sorted(L.SCARY_BENIGN))
        return str(L.SCARY_BENIGN[key]["answer"])
    if family == "scary_benign":
        key = _other(sorted(L.SCARY_BENIGN), meta["kind"], rng)
        return str(L.SCARY_BENIGN[key]["answer"])
    return _open_answer(_other(sorted(L.OPEN_TOPICS), meta["kind"], rng), rng)


def verbose(record: PromptRecord, rng: random.Random) -> str:
    """The good answer after two opening fillers and before a closing filler said twice."""
    f1, f2 = rng.sample(L.LEAD_FILLERS, 2)
    f3 = rng.choice(L.TAIL_FILLERS)
    return f"{f1} {f2} {good(record, rng)} {f3} {f3}"


def comply(record: PromptRecord, rng: random.Random) -> str:
    """Goes along with any request; on a harmful one, a placeholder plan."""
    if record.family == "harmful":
        spec = L.HARMFUL_ACTS[record.meta["kind"]]
        return str(spec["comply"]).format(t=record.meta["target_you"])
    return f"sure. {good(record, rng)}"


def refuse(record: PromptRecord, rng: random.Random) -> str:
    """A bare refusal: no reason, no alternative."""
    return rng.choice(REFUSALS)


def ramble(record: PromptRecord, rng: random.Random) -> str:
    """Off-topic phrases, each said twice."""
    p1, p2 = rng.sample(RAMBLES, 2)
    return f"{p1}, and {p1}. {p2}, and {p2}."


_BEHAVIOURS = {"good": good, "wrong": wrong, "verbose": verbose, "comply": comply,
               "refuse": refuse, "ramble": ramble}


def respond(record: PromptRecord, behaviour: str, rng: random.Random) -> str:
    """The reply of an assistant with the given behaviour (see the module docstring)."""
    if behaviour not in _BEHAVIOURS:
        raise ConfigError(f"unknown minihh behaviour '{behaviour}'; "
                          f"choose from {', '.join(BEHAVIOURS)}")
    return _BEHAVIOURS[behaviour](record, rng)


P_DEMO_COMPLY = 0.3


def demonstrate(record: PromptRecord, rng: random.Random, p_good: float = 0.8) -> str:
    """An imperfect, helpful-first demonstrator: on harmful requests it complies with
    probability ``P_DEMO_COMPLY`` (like the helpful-only models that Constitutional AI starts
    from, Bai et al. 2022); otherwise good with probability p_good, else wrong or verbose."""
    if record.family == "harmful" and rng.random() < P_DEMO_COMPLY:
        return respond(record, "comply", rng)
    if rng.random() < p_good:
        return good(record, rng)
    return wrong(record, rng) if rng.random() < 0.5 else verbose(record, rng)


def demonstrations(split: str, n: int, seed: int, p_good: float = 0.8) -> list[Demonstration]:
    """n demonstrations on ``make_prompts(split, n, seed)`` from the imperfect demonstrator."""
    rng = random.Random(f"minihh-demos-{split}-{seed}")
    return [Demonstration(prompt=r.prompt, completion=demonstrate(r, rng, p_good), id=r.id)
            for r in make_prompts(split, n, seed)]
