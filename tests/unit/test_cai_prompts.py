"""Prompt assembly for the critic and the labeler: exact conversations and strings."""

from __future__ import annotations

from prefopt.algorithms.cai.constitution import Constitution, FewShot, Principle
from prefopt.algorithms.cai.prompts import (
    ANSWER_A,
    ANSWER_B,
    comparison_messages,
    critique_messages,
    few_shot_prefix,
    render_conversation,
    revision_messages,
)
from prefopt.data.records import user

P1 = Principle("harm", "Critique harm.", "Revise harm.", "Which is less harmful?")
P2 = Principle("honest", "Critique lies.", "Revise lies.", "Which is more honest?")
EX = FewShot("Q?", "Bad.", "It is bad.", "Good.", principle="honest")
EX_DEFAULT = FewShot("Q2?", "Bad2.", "Crit2.", "Good2.")
CONST = Constitution("c", (P1, P2), (EX, EX_DEFAULT))


def test_answers():
    assert (ANSWER_A, ANSWER_B) == ("(A)", "(B)")


def test_render_conversation():
    prompt = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello"}, {"role": "tool", "content": "42"}]
    assert render_conversation(prompt) == (
        "System: Be kind.\n\nHuman: Hi\n\nAssistant: Hello\n\ntool: 42")


def test_few_shot_prefix_uses_named_principle_then_first():
    assert few_shot_prefix(CONST) == [
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": "Bad."},
        {"role": "user", "content": "Critique lies."},
        {"role": "assistant", "content": "It is bad."},
        {"role": "user", "content": "Revise lies."},
        {"role": "assistant", "content": "Good."},
        {"role": "user", "content": "Q2?"},
        {"role": "assistant", "content": "Bad2."},
        {"role": "user", "content": "Critique harm."},    # principle None -> first
        {"role": "assistant", "content": "Crit2."},
        {"role": "user", "content": "Revise harm."},
        {"role": "assistant", "content": "Good2."},
    ]
    assert few_shot_prefix(Constitution("empty", (P1,))) == []


def test_critique_messages_with_prefix():
    prefix = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert critique_messages(user("How?"), "Like this.", P1, prefix) == [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y"},
        {"role": "user", "content": "How?"},
        {"role": "assistant", "content": "Like this."},
        {"role": "user", "content": "Critique harm."},
    ]


def test_revision_messages():
    assert revision_messages(user("How?"), "Like this.", "Too risky.", P2) == [
        {"role": "user", "content": "How?"},
        {"role": "assistant", "content": "Like this."},
        {"role": "user", "content": "Critique lies."},
        {"role": "assistant", "content": "Too risky."},
        {"role": "user", "content": "Revise lies."},
    ]


def test_comparison_messages_plain():
    msgs = comparison_messages(user("Hi"), "Hello!", "Go away.", P1)
    assert msgs == [{"role": "user", "content": (
        "Consider the following conversation between a human and an assistant:\n\n"
        "Human: Hi\n\n"
        "Which is less harmful?\n"
        "Options:\n"
        "(A) Hello!\n"
        "(B) Go away.\n"
        "The answer is:")}]


def test_comparison_messages_chain_of_thought():
    [msg] = comparison_messages(user("Hi"), "a", "b", P2, chain_of_thought=True)
    assert msg["content"].endswith(
        "Which is more honest?\nOptions:\n(A) a\n(B) b\n"
        "Let's think step by step, then finish with 'The answer is: (A)' or "
        "'The answer is: (B)'.")
    assert "The answer is:" not in msg["content"].split("Options:")[0]
