"""Row formats: turn one raw row (a dict) into a typed record, or raise ``RowError``.

Preference rows come in three shapes (tried in this order):

(a) standard: a ``prompt`` column (string or message list) with ``chosen`` / ``rejected``
    as strings, or as message lists whose last message is the assistant reply and whose
    earlier messages are either absent or equal to the prompt;
(b) conversational: no ``prompt``; ``chosen`` / ``rejected`` are full message lists that
    share every message but the final assistant reply, which is the completion;
(c) implicit prompt (Anthropic HH): no ``prompt``; ``chosen`` / ``rejected`` are transcripts
    ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``. They are split at the last
    ``"\\n\\nAssistant:"`` inside their longest common prefix; the text before it is parsed
    into messages (Human -> user, Assistant -> assistant, one leading space stripped from
    each turn) and the text after it, less one leading space, is each completion.

Decisions: ``label`` (default 1.0) is P(chosen wins) and must lie in [0, 1]; ``margin``
comes from a ``margin`` column, else from ``score_chosen - score_rejected`` when both scores
are present (the label stays as given, default 1.0), else 0.0. A null value counts as an
absent column. Unknown extra columns are ignored for pairs, demonstrations and unpaired
examples, and kept in ``meta`` for prompts. Message dicts keep ``role`` and ``content`` only.
Empty prompts and empty (whitespace-only) completions are errors.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass
from typing import Any

from prefopt.data.records import (
    Demonstration,
    Messages,
    PreferencePair,
    PromptRecord,
    UnpairedExample,
    user,
)
from prefopt.errors import DataError

ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class RowError(DataError):
    """A ``DataError`` about one row; ``reason`` is the key it is counted under when skipped."""

    def __init__(self, message: str, *, reason: str, source: str | None = None,
                 row: int | None = None, field: str | None = None):
        super().__init__(message, source=source, row=row, field=field)
        self.reason = reason


@dataclass(frozen=True)
class RowContext:
    """Where a row comes from: builds errors that name the source, the row and the field."""

    source: str
    row: int

    def error(self, reason: str, field: str | None, message: str) -> RowError:
        """A ``RowError`` at this row."""
        return RowError(message, reason=reason, source=self.source, row=self.row, field=field)


def json_type(value: Any) -> str:
    """The JSON name of a value's type (``null``, ``boolean``, ``number``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, numbers.Real):
        return "number"
    names = {str: "string", list: "list", tuple: "list", dict: "object"}
    return next((n for t, n in names.items() if isinstance(value, t)), type(value).__name__)


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require(row: dict, key: str, ctx: RowContext) -> Any:
    """``row[key]``; a missing column or a null value is an error listing the columns."""
    if key not in row:
        raise ctx.error("missing_field", key, f"missing column; present columns: {list(row)}")
    if row[key] is None:
        raise ctx.error("missing_field", key, "value is null")
    return row[key]


# ---------------------------------------------------------------- messages and texts


def parse_messages(value: Any, ctx: RowContext, field: str) -> Messages:
    """A non-empty list of ``{"role", "content"}`` dicts with known roles and string content."""
    if not isinstance(value, list):
        raise ctx.error("wrong_type", field,
                        f"expected a list of messages, got {json_type(value)}")
    if not value:
        raise ctx.error("bad_messages", field, "empty message list")
    return [_message(m, ctx, field, i) for i, m in enumerate(value)]


def _message(msg: Any, ctx: RowContext, field: str, i: int) -> dict[str, str]:
    """One validated message, reduced to its role and content."""
    if not isinstance(msg, dict):
        raise ctx.error("bad_messages", field,
                        f"message {i}: expected an object, got {json_type(msg)}")
    role = msg.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise ctx.error("bad_messages", field,
                        f"message {i}: role must be one of {list(ROLES)}, got {short(role)}")
    content = msg.get("content")
    if content is None:
        raise ctx.error("bad_messages", field, f"message {i}: missing 'content'")
    if not isinstance(content, str):
        raise ctx.error("bad_messages", field,
                        f"message {i}: expected string content, got {json_type(content)}")
    return {"role": role, "content": content}


def parse_prompt(value: Any, ctx: RowContext, field: str = "prompt") -> Messages:
    """A prompt given as a non-empty string (one user turn) or as a message list."""
    if isinstance(value, str):
        if not value.strip():
            raise ctx.error("empty_prompt", field, "empty prompt")
        return user(value)
    if isinstance(value, list):
        return parse_messages(value, ctx, field)
    raise ctx.error("wrong_type", field,
                    f"expected a string or a list of messages, got {json_type(value)}")


def final_reply(messages: Messages, ctx: RowContext, field: str) -> str:
    """The content of the last message, which must be the assistant's."""
    role = messages[-1]["role"]
    if role != "assistant":
        raise ctx.error("bad_messages", field,
                        f"last message must be the assistant reply, got role '{role}'")
    return messages[-1]["content"]


def nonempty(text: str, ctx: RowContext, field: str) -> str:
    """``text`` unchanged; an empty or whitespace-only completion is an error."""
    if not text.strip():
        raise ctx.error("empty_completion", field, "empty completion")
    return text


def parse_completion(value: Any, prompt: Messages, ctx: RowContext, field: str) -> str:
    """A completion given as a string or as messages ending in the assistant reply.

    Messages before the reply, if any, must equal ``prompt``.
    """
    if isinstance(value, list):
        messages = parse_messages(value, ctx, field)
        text = final_reply(messages, ctx, field)
        if len(messages) > 1 and messages[:-1] != prompt:
            raise ctx.error("prompt_mismatch", field,
                            "the messages before the final reply differ from 'prompt'")
        return nonempty(text, ctx, field)
    if isinstance(value, str):
        return nonempty(value, ctx, field)
    raise ctx.error("wrong_type", field,
                    f"expected a string or a list of messages, got {json_type(value)}")


# ---------------------------------------------------------------- implicit prompts


def _strip_space(text: str) -> str:
    """``text`` less one leading space."""
    return text[1:] if text.startswith(" ") else text


def parse_transcript(text: str, ctx: RowContext, field: str) -> Messages:
    """Messages of an HH transcript ``"\\n\\nHuman: a\\n\\nAssistant: b"``."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise ctx.error("bad_transcript", field,
                        "transcript must start with '\\n\\nHuman:'; got " + short(parts[0]))
    turns = zip(parts[1::2], parts[2::2])
    messages = [{"role": _HH_ROLES[who], "content": _strip_space(said)} for who, said in turns]
    if not messages:
        raise ctx.error("no_prompt", field, "no turn before the final '\\n\\nAssistant:'")
    return messages


def split_transcripts(chosen: str, rejected: str, ctx: RowContext) -> tuple[Messages, str, str]:
    """(prompt, chosen reply, rejected reply) of two HH transcripts sharing a prefix."""
    cut = chosen.rfind(HH_ASSISTANT, 0, len(os.path.commonprefix([chosen, rejected])))
    if cut < 0:
        raise ctx.error("bad_transcript", "chosen",
                        "no 'prompt' column, and 'chosen' and 'rejected' share no prefix "
                        "ending in '\\n\\nAssistant:'")
    prompt = parse_transcript(chosen[:cut], ctx, "chosen")
    start = cut + len(HH_ASSISTANT)
    return (prompt, nonempty(_strip_space(chosen[start:]), ctx, "chosen"),
            nonempty(_strip_space(rejected[start:]), ctx, "rejected"))


def split_conversations(chosen: list, rejected: list,
                        ctx: RowContext) -> tuple[Messages, str, str]:
    """(prompt, chosen reply, rejected reply) of two message lists sharing all but the reply."""
    c, r = parse_messages(chosen, ctx, "chosen"), parse_messages(rejected, ctx, "rejected")
    c_text, r_text = final_reply(c, ctx, "chosen"), final_reply(r, ctx, "rejected")
    if c[:-1] != r[:-1]:
        raise ctx.error("prompt_mismatch", "rejected",
                        "no 'prompt' column, and the messages before the final reply "
                        "differ between 'chosen' and 'rejected'")
    if len(c) < 2:
        raise ctx.error("no_prompt", "chosen",
                        "no 'prompt' column and no messages before the final reply")
    return c[:-1], nonempty(c_text, ctx, "chosen"), nonempty(r_text, ctx, "rejected")


# ---------------------------------------------------------------- scalar fields


def _real(value: Any, ctx: RowContext, field: str) -> float:
    """A number as a float (overflowing integers become ``inf``); other types are errors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ctx.error("wrong_type", field, f"expected a number, got {json_type(value)}")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _finite(value: Any, ctx: RowContext, field: str) -> float:
    """A finite number."""
    out = _real(value, ctx, field)
    if not math.isfinite(out):
        raise ctx.error("bad_number", field, f"expected a finite number, got {short(value)}")
    return out


def _label_and_margin(row: dict, ctx: RowContext) -> tuple[float, float]:
    """``label`` in [0, 1] (default 1.0) and ``margin`` (column, else score difference)."""
    label = 1.0
    if row.get("label") is not None:
        value = row["label"]
        label = float(value) if isinstance(value, bool) else _real(value, ctx, "label")
        if not 0.0 <= label <= 1.0:
            raise ctx.error("bad_label", "label", f"label must be in [0, 1], got {short(value)}")
    if row.get("margin") is not None:
        return label, _finite(row["margin"], ctx, "margin")
    if row.get("score_chosen") is None and row.get("score_rejected") is None:
        return label, 0.0
    margin = (_finite(require(row, "score_chosen", ctx), ctx, "score_chosen")
              - _finite(require(row, "score_rejected", ctx), ctx, "score_rejected"))
    if not math.isfinite(margin):
        raise ctx.error("bad_number", "score_chosen", "score_chosen - score_rejected overflows")
    return label, margin


def _optional_str(row: dict, key: str, ctx: RowContext) -> str | None:
    """``row[key]`` if it is a string, None if absent or null."""
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise ctx.error("wrong_type", key, f"expected a string, got {json_type(value)}")
    return value


def _row_id(row: dict, ctx: RowContext, default: str) -> str:
    """The ``id`` column as a string (strings and integers accepted), else ``default``."""
    value = row.get("id")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ctx.error("wrong_type", "id", f"expected a string or integer, got {json_type(value)}")
    return str(value)


# ---------------------------------------------------------------- records


def _mixed_types(chosen: Any, rejected: Any, ctx: RowContext) -> RowError:
    """The error for ``chosen`` / ``rejected`` of wrong or differing types without a prompt."""
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, (str, list)):
            return ctx.error("wrong_type", field, "expected a string or a list of messages, "
                             f"got {json_type(value)}")
    return ctx.error("wrong_type", "rejected", f"expected a {json_type(chosen)} like 'chosen' "
                     f"(no 'prompt' column), got {json_type(rejected)}")


def preference_from_row(row: dict, ctx: RowContext, default_id: str) -> PreferencePair:
    """A ``PreferencePair`` from a row in format (a), (b) or (c) (see the module docstring)."""
    chosen, rejected = require(row, "chosen", ctx), require(row, "rejected", ctx)
    if row.get("prompt") is not None:
        prompt = parse_prompt(row["prompt"], ctx)
        c_text = parse_completion(chosen, prompt, ctx, "chosen")
        r_text = parse_completion(rejected, prompt, ctx, "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        prompt, c_text, r_text = split_transcripts(chosen, rejected, ctx)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        prompt, c_text, r_text = split_conversations(chosen, rejected, ctx)
    else:
        raise _mixed_types(chosen, rejected, ctx)
    if c_text == r_text:
        raise ctx.error("identical_completions", "rejected", "chosen and rejected are identical")
    label, margin = _label_and_margin(row, ctx)
    return PreferencePair(prompt, c_text, r_text, label=label, margin=margin,
                          annotator=_optional_str(row, "annotator", ctx),
                          id=_row_id(row, ctx, default_id))


def demonstration_from_row(row: dict, ctx: RowContext, default_id: str) -> Demonstration:
    """A ``Demonstration`` from ``messages`` or ``prompt`` + ``completion`` / ``response``."""
    if row.get("messages") is not None:
        messages = parse_messages(row["messages"], ctx, "messages")
        text = nonempty(final_reply(messages, ctx, "messages"), ctx, "messages")
        if len(messages) < 2:
            raise ctx.error("no_prompt", "messages", "no messages before the final reply")
        return Demonstration(messages[:-1], text, id=_row_id(row, ctx, default_id))
    if "prompt" not in row:
        raise ctx.error("missing_field", "prompt",
                        f"missing column (expected 'prompt' + 'completion' or 'response', "
                        f"or 'messages'); present columns: {list(row)}")
    prompt = parse_prompt(require(row, "prompt", ctx), ctx)
    key = "response" if row.get("completion") is None and "response" in row else "completion"
    text = parse_completion(require(row, key, ctx), prompt, ctx, key)
    return Demonstration(prompt, text, id=_row_id(row, ctx, default_id))


def _bool_label(value: Any, ctx: RowContext) -> bool:
    """A desirability label given as a boolean or as the number 0 or 1."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, numbers.Real):
        raise ctx.error("wrong_type", "label",
                        f"expected a boolean or 0/1, got {json_type(value)}")
    if value not in (0, 1):
        raise ctx.error("bad_label", "label", f"label must be true/false or 0/1, got {short(value)}")
    return value == 1


def unpaired_from_row(row: dict, ctx: RowContext, default_id: str) -> UnpairedExample:
    """An ``UnpairedExample`` from ``prompt`` / ``completion`` / ``label``."""
    prompt = parse_prompt(require(row, "prompt", ctx), ctx)
    text = parse_completion(require(row, "completion", ctx), prompt, ctx, "completion")
    label = _bool_label(require(row, "label", ctx), ctx)
    return UnpairedExample(prompt, text, label, id=_row_id(row, ctx, default_id))


def prompt_from_row(row: dict, ctx: RowContext, default_id: str) -> PromptRecord:
    """A ``PromptRecord``: ``prompt``, optional ``family`` and ``id``; other columns to meta."""
    prompt = parse_prompt(require(row, "prompt", ctx), ctx)
    meta = {k: v for k, v in row.items() if k not in ("prompt", "family", "id")}
    return PromptRecord(prompt, id=_row_id(row, ctx, default_id),
                        family=_optional_str(row, "family", ctx), meta=meta)
