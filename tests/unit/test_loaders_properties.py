"""Property tests: any input ends in exact records or a DataError, never another exception."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from prefopt.data.loaders import (
    LoadStats,
    load_demonstrations,
    load_preferences,
    load_prompts,
    load_rows,
    load_unpaired,
)
from prefopt.data.records import (
    Demonstration,
    PreferencePair,
    PromptRecord,
    UnpairedExample,
    user,
)
from prefopt.errors import DataError

FAST = settings(max_examples=50, deadline=None, database=None)
LOADERS = [(load_preferences, PreferencePair), (load_demonstrations, Demonstration),
           (load_prompts, PromptRecord), (load_unpaired, UnpairedExample)]
COLUMNS = ["prompt", "chosen", "rejected", "completion", "response", "messages", "label",
           "margin", "score_chosen", "score_rejected", "annotator", "id", "family",
           "role", "content"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from(["user", "assistant", "\n\nHuman: a\n\nAssistant: b"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=5), inner, max_size=5),
    max_leaves=6,
)
texts = st.text(max_size=12) | st.builds(
    lambda c, n: c * n, st.characters(), st.integers(10_000, 100_000))


def run_on_file(data: bytes, suffix: str, loader, **kwargs):
    """Write ``data`` to a fresh file and call ``loader`` on it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        return loader(str(path), **kwargs)


def check_all_loaders(data: bytes, suffix: str) -> int:
    """Every loader returns records of its type or raises DataError, in both modes.
    Returns how many (loader, mode) combinations were checked."""
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        for (loader, record_type), on_error in itertools.product(LOADERS, ("raise", "skip")):
            checked += 1
            stats = LoadStats()
            try:
                records = loader(path, on_error=on_error, stats=stats)
            except DataError:
                continue
            assert records and all(isinstance(r, record_type) for r in records)
            assert stats.kept == len(records)
            assert stats.read == stats.kept + sum(stats.skipped.values())
    return checked


@FAST
@given(st.lists(st.binary(max_size=40), max_size=5))
def test_arbitrary_bytes_give_records_or_data_error(lines):
    data = b"\n".join(lines)
    check_all_loaders(data, ".jsonl")
    check_all_loaders(data, ".json")
    try:
        rows = run_on_file(data, ".jsonl", lambda p: list(load_rows(p)))
    except DataError:
        return
    assert all(isinstance(r, dict) for _, r in rows)


@FAST
@given(st.lists(json_values, min_size=1, max_size=5))
def test_arbitrary_json_values_give_records_or_data_error(values):
    n = check_all_loaders("\n".join(json.dumps(v) for v in values).encode(), ".jsonl")
    n += check_all_loaders(json.dumps(values).encode(), ".json")
    assert n == 4 * len(LOADERS)


@FAST
@given(st.lists(st.dictionaries(st.sampled_from(COLUMNS), json_values, min_size=2, max_size=5),
                min_size=1, max_size=3))
def test_skip_mode_counts_every_row(rows):
    stats = LoadStats()
    data = "\n".join(json.dumps(r) for r in rows).encode()
    try:
        run_on_file(data, ".jsonl", load_preferences, on_error="skip", stats=stats)
    except DataError:
        assert stats.kept == 0
    assert stats.read == len(rows) == stats.kept + sum(stats.skipped.values())


def expected_pair_error(prompt: str, chosen: str, rejected: str) -> str | None:
    """The field the first error names for a string row, or None when the row is valid."""
    for field, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            return f"field '{field}'"
    return "field 'rejected': chosen and rejected are identical" if chosen == rejected else None


@FAST
@given(texts, texts, texts)
def test_string_pairs_round_trip_exactly(prompt, chosen, rejected):
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    error = expected_pair_error(prompt, chosen, rejected)
    try:
        pairs = run_on_file(json.dumps(row).encode(), ".jsonl", load_preferences)
    except DataError as e:
        assert error is not None and f"row 1, {error}" in str(e)
        return
    assert error is None
    assert pairs == [PreferencePair(user(prompt), chosen, rejected, id="data.jsonl:1")]


line_text = st.text(st.characters(blacklist_characters="\n"), max_size=15)


@FAST
@given(st.lists(line_text, min_size=1, max_size=3).map(lambda t: t[:1] + t),
       line_text, line_text)
def test_hh_transcripts_split_at_the_last_shared_assistant_turn(turns, head, tail):
    """turns alternate Human / Assistant and end with a Human turn (odd length)."""
    turns = turns if len(turns) % 2 else turns[:-1]
    chosen_reply, rejected_reply = head + "x" + tail, head + "y"
    roles = ["Human", "Assistant"]
    prefix = "".join(f"\n\n{roles[i % 2]}: {t}" for i, t in enumerate(turns))
    row = {"chosen": f"{prefix}\n\nAssistant: {chosen_reply}",
           "rejected": f"{prefix}\n\nAssistant: {rejected_reply}"}
    pairs = run_on_file(json.dumps(row).encode(), ".jsonl", load_preferences)
    prompt = [{"role": ["user", "assistant"][i % 2], "content": t} for i, t in enumerate(turns)]
    assert pairs == [PreferencePair(prompt, chosen_reply, rejected_reply, id="data.jsonl:1")]


REQUIRED = {load_preferences: ["chosen", "rejected"], load_unpaired: ["prompt", "completion",
            "label"], load_demonstrations: ["prompt", "completion"], load_prompts: ["prompt"]}
VALID = {"prompt": "P", "chosen": "A", "rejected": "B", "completion": "C", "label": True}
EXPECTED = {
    load_preferences: PreferencePair(user("P"), "A", "B", id="data.jsonl:1"),
    load_unpaired: UnpairedExample(user("P"), "C", True, id="data.jsonl:1"),
    load_demonstrations: Demonstration(user("P"), "C", id="data.jsonl:1"),
    load_prompts: PromptRecord(user("P"), id="data.jsonl:1"),
}
extra_keys = st.text(min_size=1, max_size=8).filter(lambda k: k not in COLUMNS)


@FAST
@given(st.sampled_from(list(REQUIRED)), st.sets(st.sampled_from(list(VALID))),
       st.dictionaries(extra_keys, json_values, max_size=3))
def test_random_missing_and_extra_fields(loader, dropped, extra):
    row = {k: v for k, v in VALID.items() if k not in dropped} | extra
    missing = [k for k in REQUIRED[loader] if k in dropped]
    expected_error = f"row 1, field '{missing[0]}': missing column" if missing else None
    if loader is load_preferences and not missing and "prompt" in dropped:
        # without a prompt column, string pairs must be HH transcripts; "A" / "B" are not
        expected_error = "row 1, field 'chosen': no 'prompt' column"
    try:
        records = run_on_file(json.dumps(row).encode(), ".jsonl", loader)
    except DataError as e:
        assert expected_error is not None and expected_error in str(e), str(e)
        return
    assert expected_error is None
    expected = EXPECTED[loader]
    if loader is load_prompts:  # other columns land in meta
        meta = {k: v for k, v in row.items() if k not in ("prompt", "family", "id")}
        expected = PromptRecord(user("P"), id="data.jsonl:1", meta=meta)
    assert records == [expected]
