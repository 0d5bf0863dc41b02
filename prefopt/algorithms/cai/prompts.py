"""Prompt assembly for the critic and the AI labeler (Bai et al. 2022, sec. 3 and 4).

Every prompt is a chat conversation, so a local model, the embedded world's base model and
an OpenAI-compatible endpoint all receive the same thing. The labeler's answer is the
assistant reply "(A)" or "(B)"; its soft label is the normalised probability of the two.
"""

from __future__ import annotations

from prefopt.algorithms.cai.constitution import Constitution, Principle
from prefopt.data.records import Messages

ANSWER_A = "(A)"
ANSWER_B = "(B)"
COMPARISON_TEMPLATE = (
    "Consider the following conversation between a human and an assistant:\n\n"
    "{conversation}\n\n{question}\nOptions:\n(A) {a}\n(B) {b}\n"
)
ANSWER_CUE = "The answer is:"
COT_CUE = "Let's think step by step, then finish with 'The answer is: (A)' or 'The answer is: (B)'."


def render_conversation(prompt: Messages) -> str:
    """'Human: ...' / 'Assistant: ...' turns separated by blank lines."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in prompt)


def few_shot_prefix(constitution: Constitution) -> Messages:
    """Worked critique/revision examples as earlier turns of the critic's conversation."""
    turns: Messages = []
    for ex in constitution.few_shot:
        p = constitution.principle(ex.principle)
        turns += [
            {"role": "user", "content": ex.prompt},
            {"role": "assistant", "content": ex.response},
            {"role": "user", "content": p.critique},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": p.revision},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


def critique_messages(prompt: Messages, response: str, principle: Principle,
                      prefix: Messages = ()) -> Messages:
    """The conversation whose next assistant turn is the critique."""
    return [*prefix, *prompt, {"role": "assistant", "content": response},
            {"role": "user", "content": principle.critique}]


def revision_messages(prompt: Messages, response: str, critique: str, principle: Principle,
                      prefix: Messages = ()) -> Messages:
    """The conversation whose next assistant turn is the revised response."""
    return [*critique_messages(prompt, response, principle, prefix),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": principle.revision}]


def comparison_messages(prompt: Messages, a: str, b: str, principle: Principle,
                        chain_of_thought: bool = False) -> Messages:
    """The multiple-choice question whose answer is "(A)" or "(B)"."""
    text = COMPARISON_TEMPLATE.format(conversation=render_conversation(prompt),
                                      question=principle.comparison, a=a, b=b)
    text += COT_CUE if chain_of_thought else ANSWER_CUE
    return [{"role": "user", "content": text}]
