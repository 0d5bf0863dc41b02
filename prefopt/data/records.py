"""Typed records shared by every algorithm.

A prompt is a list of chat messages ``[{"role": "user", "content": "..."}]``; a completion
is the assistant's reply as a plain string. Tokenization (``prefopt.data.tokenize``) renders
the prompt with the tokenizer's chat template and appends the completion and EOS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]


@dataclass
class PromptRecord:
    """A prompt to generate from. ``family`` groups prompts for per-family metrics."""

    prompt: Messages
    id: str = ""
    family: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Demonstration:
    """A (prompt, completion) pair for supervised fine-tuning."""

    prompt: Messages
    completion: str
    id: str = ""


@dataclass
class PreferencePair:
    """A comparison of two completions of one prompt.

    ``label`` is the probability that ``chosen`` is preferred (1.0 for a hard label; a vote
    share for aggregated annotators); ``margin`` is an optional Bradley-Terry margin.
    """

    prompt: Messages
    chosen: str
    rejected: str
    label: float = 1.0
    margin: float = 0.0
    annotator: str | None = None
    id: str = ""


@dataclass
class UnpairedExample:
    """A single completion marked desirable (True) or undesirable (False), for KTO."""

    prompt: Messages
    completion: str
    label: bool
    id: str = ""


def user(text: str) -> Messages:
    """A one-turn prompt."""
    return [{"role": "user", "content": text}]
