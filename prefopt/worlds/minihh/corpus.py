"""The pretraining corpus of the minihh world: what the raw base model has read.

Three kinds of conversation (``DOC_MIX``):

- ``chat``: one or two user/assistant turns on train-split prompts; the assistant's
  behaviour follows ``HELPFUL_MIX`` or ``HARMFUL_MIX`` (45% good, the rest wrong, padded,
  rambling, needless refusals and compliance with harmful requests), so there is room for
  alignment to improve the model.
- ``critique``: a constitutional critique/revision exchange (``revision_messages`` then the
  revision). The critique names the response's actual flaw with probability
  ``P_CRITIQUE_RIGHT`` and some other flaw otherwise; the revision is the good answer with
  probability ``P_REVISION_GOOD``, else a padded one. Imperfect on purpose.
- ``comparison``: ``comparison_messages`` for two responses of different gold reward, then
  "(A)" or "(B)"; the answer names the gold's winner with probability ``P_COMPARISON_RIGHT``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from prefopt.algorithms.cai.constitution import Constitution
from prefopt.algorithms.cai.prompts import (
    ANSWER_A,
    ANSWER_B,
    comparison_messages,
    few_shot_prefix,
    revision_messages,
)
from prefopt.data.records import Messages, PromptRecord
from prefopt.worlds.minihh.behaviours import BEHAVIOURS, good, respond, verbose
from prefopt.worlds.minihh.constitution import load_world_constitution
from prefopt.worlds.minihh.gold import gold_reward
from prefopt.worlds.minihh.tasks import make_prompts

DOC_MIX = {"chat": 0.55, "critique": 0.2, "comparison": 0.25}
HELPFUL_MIX = {"good": 0.45, "wrong": 0.2, "verbose": 0.12, "refuse": 0.1, "ramble": 0.08,
               "comply": 0.05}
HARMFUL_MIX = {"good": 0.45, "comply": 0.3, "refuse": 0.1, "ramble": 0.05, "verbose": 0.05,
               "wrong": 0.05}
P_TWO_TURNS = 0.25
P_FEW_SHOT = 0.25
P_CRITIQUE_RIGHT = 0.8
P_REVISION_GOOD = 0.85
P_COMPARISON_RIGHT = 0.75

# flaw -> (critique text, principle that targets it)
FLAWS = {
    "comply": ("the response helps with a harmful request. it could hurt someone.", "harmless"),
    "wrong": ("the response gives a wrong answer.", "helpful"),
    "verbose": ("the response is too long and says things twice.", "concise"),
    "ramble": ("the response does not answer the question.", "helpful"),
    "refuse_safe": ("the response refuses a safe request. it should just help.",
                    "no_over_refusal"),
    "refuse_bare": ("the response refuses but gives no reason and no other way to help.",
                    "helpful"),
    "good": ("the response is fine. it needs no change.", None),
}
HELPFUL_FLAWED = {"wrong": 0.3, "verbose": 0.25, "refuse": 0.2, "ramble": 0.15, "good": 0.1}
HARMFUL_FLAWED = {"comply": 0.6, "refuse": 0.15, "verbose": 0.05, "ramble": 0.1, "good": 0.1}


@dataclass
class CorpusDoc:
    """One conversation of the corpus and how it was made (for tests and statistics)."""

    kind: str
    messages: Messages
    behaviours: list[str] = field(default_factory=list)
    faithful: bool | None = None   # critique names the real flaw / comparison agrees with gold


def _pick(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _turn(record: PromptRecord, rng: random.Random) -> tuple[Messages, str]:
    behaviour = _pick(rng, HARMFUL_MIX if record.family == "harmful" else HELPFUL_MIX)
    reply = respond(record, behaviour, rng)
    return [*record.prompt, {"role": "assistant", "content": reply}], behaviour


def chat_doc(records: list[PromptRecord], rng: random.Random) -> CorpusDoc:
    """User/assistant turns, one per record, each with a sampled behaviour."""
    messages, behaviours = [], []
    for rec in records:
        turn, b = _turn(rec, rng)
        messages += turn
        behaviours.append(b)
    return CorpusDoc("chat", messages, behaviours)


def flaw_of(record: PromptRecord, behaviour: str) -> str:
    """The flaw a critique should name for a response of this behaviour."""
    if behaviour == "refuse":
        return "refuse_bare" if record.family == "harmful" else "refuse_safe"
    return behaviour


def critique_doc(record: PromptRecord, constitution: Constitution,
                 rng: random.Random) -> CorpusDoc:
    """A flawed response, a critique (mostly right), and a revision (mostly good)."""
    behaviour = _pick(rng, HARMFUL_FLAWED if record.family == "harmful" else HELPFUL_FLAWED)
    response = respond(record, behaviour, rng)
    flaw = flaw_of(record, behaviour)
    faithful = rng.random() < P_CRITIQUE_RIGHT
    named = flaw if faithful else rng.choice(sorted(f for f in FLAWS if f != flaw))
    text, principle_name = FLAWS[named]
    principle = (constitution.principle(principle_name) if principle_name
                 else rng.choice(constitution.principles))
    prefix = few_shot_prefix(constitution) if rng.random() < P_FEW_SHOT else []
    if behaviour == "good":
        revision = response
    else:
        revision = good(record, rng) if rng.random() < P_REVISION_GOOD else verbose(record, rng)
    messages = revision_messages(record.prompt, response, text, principle, prefix)
    messages.append({"role": "assistant", "content": revision})
    return CorpusDoc("critique", messages, [behaviour], faithful)


def _distinct_pair(record: PromptRecord, rng: random.Random):
    """Two behaviours' responses whose gold rewards differ (None if 20 tries fail)."""
    for _ in range(20):
        b1, b2 = rng.sample(BEHAVIOURS, 2)
        a, b = respond(record, b1, rng), respond(record, b2, rng)
        ra, rb = gold_reward(record, a), gold_reward(record, b)
        if ra != rb:
            return (b1, a, ra), (b2, b, rb)
    return None


def comparison_doc(record: PromptRecord, constitution: Constitution,
                   rng: random.Random) -> CorpusDoc | None:
    """A multiple-choice comparison answered "(A)"/"(B)", agreeing with gold mostly."""
    pair = _distinct_pair(record, rng)
    if pair is None:
        return None
    (b1, a, ra), (b2, b, rb) = pair
    faithful = rng.random() < P_COMPARISON_RIGHT
    a_wins = (ra > rb) == faithful
    principle = rng.choice(constitution.principles)
    messages = comparison_messages(record.prompt, a, b, principle)
    messages.append({"role": "assistant", "content": ANSWER_A if a_wins else ANSWER_B})
    return CorpusDoc("comparison", messages, [b1, b2], faithful)


def corpus_docs(n_docs: int, seed: int) -> list[CorpusDoc]:
    """n_docs conversations (kinds drawn from ``DOC_MIX``) on train-split prompts."""
    rng = random.Random(f"minihh-corpus-{seed}")
    constitution = load_world_constitution()
    kinds = [_pick(rng, DOC_MIX) for _ in range(n_docs)]
    turns = [2 if k == "chat" and rng.random() < P_TWO_TURNS else 1 for k in kinds]
    records = iter(make_prompts("train", sum(turns), seed))
    docs = []
    for kind, n_turns in zip(kinds, turns):
        recs = [next(records) for _ in range(n_turns)]
        doc = None
        if kind == "critique":
            doc = critique_doc(recs[0], constitution, rng)
        elif kind == "comparison":
            doc = comparison_doc(recs[0], constitution, rng)
        docs.append(doc or chat_doc(recs, rng))
    return docs


def corpus(n_docs: int, seed: int) -> list[Messages]:
    """The pretraining conversations (lists of chat messages), deterministic for a seed."""
    return [doc.messages for doc in corpus_docs(n_docs, seed)]
