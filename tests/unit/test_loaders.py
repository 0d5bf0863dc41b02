"""Loaders: exact records for every accepted format, exact messages for every error."""

from __future__ import annotations

import json
import logging

import datasets
import pytest

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
from prefopt.errors import ConfigError, DataError


def a(text: str) -> dict[str, str]:
    """An assistant message."""
    return {"role": "assistant", "content": text}


def u(text: str) -> dict[str, str]:
    """A user message."""
    return {"role": "user", "content": text}


def write_jsonl(path, rows) -> str:
    """Write rows (dicts, or raw str lines) as a .jsonl file; return its path as a string."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- preference formats


def test_standard_string_format_with_optional_fields(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Hi", "chosen": "A", "rejected": "B", "extra": [1, 2]},
        {"prompt": "Q", "chosen": "C", "rejected": "D", "label": 0.75, "margin": 2,
         "annotator": "ann-3", "id": 17},
    ])
    assert load_preferences(src) == [
        PreferencePair(user("Hi"), "A", "B", id="p.jsonl:1"),
        PreferencePair(user("Q"), "C", "D", label=0.75, margin=2.0, annotator="ann-3",
                       id="17"),
    ]


def test_standard_message_format(tmp_path):
    prompt = [{"role": "system", "content": "Be brief."}, u("Hi")]
    src = write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": prompt, "chosen": [a("Yo")], "rejected": [a("Go away")]},
        {"prompt": prompt, "chosen": prompt + [a("Yo")], "rejected": "Hm"},
    ])
    assert load_preferences(src) == [
        PreferencePair(prompt, "Yo", "Go away", id="m.jsonl:1"),
        PreferencePair(prompt, "Yo", "Hm", id="m.jsonl:2"),
    ]


def test_scores_give_the_margin_and_keep_the_label(tmp_path):
    """margin = score_chosen - score_rejected = 7.5 - 6.0 = 1.5; an explicit margin wins."""
    src = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "P", "chosen": "A", "rejected": "B", "score_chosen": 7.5,
         "score_rejected": 6},
        {"prompt": "P", "chosen": "A", "rejected": "B", "score_chosen": 7.5,
         "score_rejected": 6, "margin": 0.25, "label": 0.5},
    ])
    pairs = load_preferences(src)
    assert [(p.label, p.margin) for p in pairs] == [(1.0, 1.5), (0.5, 0.25)]


def test_conversational_format_takes_the_shared_prefix_as_prompt(tmp_path):
    history = [u("Hi"), a("Hello"), u("Joke?")]
    src = write_jsonl(tmp_path / "c.jsonl", [
        {"chosen": history + [a("Knock knock")], "rejected": history + [a("No")]},
    ])
    assert load_preferences(src) == [
        PreferencePair(history, "Knock knock", "No", id="c.jsonl:1")]


def test_hh_implicit_prompt_with_multi_turn_history(tmp_path):
    base = "\n\nHuman: How do I bake?\n\nAssistant: With an oven.\n\nHuman: And bread?"
    src = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": base + "\n\nAssistant: Knead dough, then bake it.",
         "rejected": base + "\n\nAssistant: Knead nothing."},
        {"chosen": "Human: Hi\n\nAssistant: Hello there", "rejected": "Human: Hi\n\nAssistant: Go"},
    ])
    assert load_preferences(src) == [
        PreferencePair([u("How do I bake?"), a("With an oven."), u("And bread?")],
                       "Knead dough, then bake it.", "Knead nothing.", id="hh.jsonl:1"),
        PreferencePair([u("Hi")], "Hello there", "Go", id="hh.jsonl:2"),
    ]


# ---------------------------------------------------------------- sources

ROWS = [{"prompt": "Hi", "chosen": "A", "rejected": "B"},
        {"prompt": "Yo", "chosen": "C", "rejected": "D"}]


def expected(name: str) -> list[PreferencePair]:
    """The pairs of ROWS with default ids from source ``name``."""
    return [PreferencePair(user("Hi"), "A", "B", id=f"{name}:1"),
            PreferencePair(user("Yo"), "C", "D", id=f"{name}:2")]


def test_dataset_and_dataset_dict_objects():
    ds = datasets.Dataset.from_list(ROWS)
    assert load_preferences(ds) == expected("<dataset>")
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([1])})
    assert load_preferences(dd, "test") == [PreferencePair(user("Yo"), "C", "D", id="<dataset>:1")]
    with pytest.raises(DataError) as e:
        load_preferences(dd)
    assert str(e.value) == "<dataset>: the dataset has splits ['train', 'test']; pass split="
    with pytest.raises(DataError) as e:
        load_preferences(dd, "dev")
    assert str(e.value) == "<dataset>: no split 'dev'; available: ['train', 'test']"


def test_parquet_written_by_datasets(tmp_path):
    path = tmp_path / "pairs.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    assert load_preferences(path) == expected("pairs.parquet")


def test_save_to_disk_directory(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "saved"))
    assert load_preferences(tmp_path / "saved", "train") == expected("saved")
    assert load_preferences(str(tmp_path / "saved")) == expected("saved")


def test_json_list_and_data_object(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(ROWS))
    (tmp_path / "d.json").write_text(json.dumps({"data": ROWS, "version": 2}))
    assert load_preferences(tmp_path / "l.json") == expected("l.json")
    assert load_preferences(tmp_path / "d.json") == expected("d.json")


def test_load_rows_numbers_jsonl_rows_by_line(tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", ['{"x": 1}', "", "  ", '{"x": 2}'])
    assert list(load_rows(src)) == [(1, {"x": 1}), (4, {"x": 2})]


# ---------------------------------------------------------------- other record types


def test_demonstration_formats(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "Hi", "completion": "Hello"},
        {"messages": [u("Hi"), a("Hey")], "id": "m"},
        {"prompt": [u("Q")], "response": "R"},
    ])
    assert load_demonstrations(src) == [
        Demonstration(user("Hi"), "Hello", id="d.jsonl:1"),
        Demonstration(user("Hi"), "Hey", id="m"),
        Demonstration([u("Q")], "R", id="d.jsonl:3"),
    ]


def test_prompt_records_keep_other_columns_in_meta(tmp_path):
    src = write_jsonl(tmp_path / "q.jsonl", [
        {"prompt": "Hi", "family": "greet", "id": "g1", "gold": 0.5},
        {"prompt": [u("Yo")]},
    ])
    assert load_prompts(src) == [
        PromptRecord(user("Hi"), id="g1", family="greet", meta={"gold": 0.5}),
        PromptRecord([u("Yo")], id="q.jsonl:2"),
    ]


def test_unpaired_labels_accept_booleans_and_zero_one(tmp_path):
    src = write_jsonl(tmp_path / "k.jsonl", [
        {"prompt": "P", "completion": "good", "label": True},
        {"prompt": "P", "completion": "bad", "label": 0},
    ])
    assert load_unpaired(src) == [
        UnpairedExample(user("P"), "good", True, id="k.jsonl:1"),
        UnpairedExample(user("P"), "bad", False, id="k.jsonl:2"),
    ]


# ---------------------------------------------------------------- row errors

PAIR_ERRORS = [
    ({"prompt": "P", "rejected": "B"},
     "row 1, field 'chosen': missing column; present columns: ['prompt', 'rejected']"),
    ({"prompt": "P", "chosen": 3, "rejected": "B"},
     "row 1, field 'chosen': expected a string or a list of messages, got number"),
    ({"prompt": "P", "chosen": "A", "rejected": "  "},
     "row 1, field 'rejected': empty completion"),
    ({"prompt": "P", "chosen": "A", "rejected": "A"},
     "row 1, field 'rejected': chosen and rejected are identical"),
    ({"prompt": "P", "chosen": "A", "rejected": "B", "label": 1.5},
     "row 1, field 'label': label must be in [0, 1], got 1.5"),
    ({"prompt": "P", "chosen": "A", "rejected": "B", "label": "yes"},
     "row 1, field 'label': expected a number, got string"),
    ({"prompt": [{"role": "bot", "content": "x"}], "chosen": "A", "rejected": "B"},
     "row 1, field 'prompt': message 0: role must be one of "
     "['system', 'user', 'assistant'], got 'bot'"),
    ({"prompt": [u("x"), {"role": "user"}], "chosen": "A", "rejected": "B"},
     "row 1, field 'prompt': message 1: missing 'content'"),
    ({"prompt": [u("P")], "chosen": [u("P"), a("A")], "rejected": [u("Q"), a("B")]},
     "row 1, field 'rejected': the messages before the final reply differ from 'prompt'"),
    ({"chosen": [u("P"), a("A")], "rejected": [u("Q"), a("B")]},
     "row 1, field 'rejected': no 'prompt' column, and the messages before the final "
     "reply differ between 'chosen' and 'rejected'"),
    ({"chosen": [u("P"), u("A")], "rejected": [u("P"), a("B")]},
     "row 1, field 'chosen': last message must be the assistant reply, got role 'user'"),
    ({"chosen": "A", "rejected": [a("B")]},
     "row 1, field 'rejected': expected a string like 'chosen' (no 'prompt' column), "
     "got list"),
    ({"chosen": "Human: a\n\nAssistant: b", "rejected": "Human: c\n\nAssistant: d"},
     "row 1, field 'chosen': no 'prompt' column, and 'chosen' and 'rejected' share no "
     "prefix ending in '\\n\\nAssistant:'"),
    ({"prompt": "P", "chosen": "A", "rejected": "B", "score_chosen": 1.0},
     "row 1, field 'score_rejected': missing column; present columns: "
     "['prompt', 'chosen', 'rejected', 'score_chosen']"),
]


@pytest.mark.parametrize(("row", "message"), PAIR_ERRORS)
def test_preference_row_errors_name_file_row_and_field(tmp_path, row, message):
    src = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError) as e:
        load_preferences(src)
    assert str(e.value) == f"{src}, {message}"


LINE_ERRORS = [
    ('{"prompt": "P",', "row 2: invalid JSON: Expecting property name enclosed in double "
                        "quotes at column 16"),
    ('{"prompt": "P", "prompt": "Q"}', "row 2, field 'prompt': duplicate key in JSON object"),
    ("[1, 2]", "row 2: expected a JSON object, got list"),
]


@pytest.mark.parametrize(("line", "message"), LINE_ERRORS)
def test_line_errors_name_the_line(tmp_path, line, message):
    src = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "P"}, line])
    with pytest.raises(DataError) as e:
        load_prompts(src)
    assert str(e.value) == f"{src}, {message}"


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    with pytest.raises(DataError) as e:
        load_prompts(path)
    assert str(e.value) == (f"{path}, row 2: line 2 is not valid UTF-8 "
                            "(byte 12: invalid start byte)")


def test_other_record_errors(tmp_path):
    cases = [
        (load_demonstrations, {"text": "x"},
         "field 'prompt': missing column (expected 'prompt' + 'completion' or 'response', "
         "or 'messages'); present columns: ['text']"),
        (load_demonstrations, {"messages": [a("x")]},
         "field 'messages': no messages before the final reply"),
        (load_unpaired, {"prompt": "P", "completion": "C", "label": 0.5},
         "field 'label': label must be true/false or 0/1, got 0.5"),
        (load_prompts, {"prompt": ""}, "field 'prompt': empty prompt"),
        (load_prompts, {"prompt": "P", "family": 3}, "field 'family': expected a string, "
                                                     "got number"),
    ]
    for loader, row, message in cases:
        src = write_jsonl(tmp_path / "o.jsonl", [row])
        with pytest.raises(DataError) as e:
            loader(src)
        assert str(e.value) == f"{src}, row 1, {message}"


# ---------------------------------------------------------------- source errors


def test_source_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n \n")
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "bad.json").write_text('[{"prompt": "P"},\n oops]')
    (tmp_path / "num.json").write_text("3")
    cases = [
        (tmp_path / "empty.jsonl", "no rows"),
        (tmp_path / "missing.jsonl", "file not found"),
        (tmp_path / "a.csv", "unsupported file type '.csv'; expected .jsonl, .json, "
                             ".parquet or a directory saved with save_to_disk"),
        (tmp_path / "bad.json", "invalid JSON at line 2, column 2: Expecting value"),
        (tmp_path / "num.json", "expected a JSON list of objects or an object with a "
                                "'data' list, got number"),
    ]
    for path, message in cases:
        with pytest.raises(DataError) as e:
            load_prompts(path)
        assert str(e.value) == f"{path}: {message}"
    with pytest.raises(DataError) as e:
        load_prompts(tmp_path / "empty.jsonl", "train")
    assert str(e.value) == f"{tmp_path / 'empty.jsonl'}: split='train' given, but a .jsonl " \
                           "file has no splits"
    with pytest.raises(DataError) as e:
        load_prompts(42)
    assert str(e.value) == ("42: unsupported source of type int; expected a path or a "
                            "datasets.Dataset / DatasetDict")


def test_unreadable_parquet_and_plain_directory(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError) as e:
        load_prompts(tmp_path / "junk.parquet")
    assert str(e.value).startswith(f"{tmp_path / 'junk.parquet'}: cannot read parquet: ")
    with pytest.raises(DataError) as e:
        load_prompts(tmp_path / "plain")
    assert str(e.value).startswith(f"{tmp_path / 'plain'}: not a dataset saved with "
                                   "save_to_disk (")


def test_conversational_rows_from_a_dataset_object():
    """Nested message features survive datasets' Arrow round trip."""
    rows = [{"chosen": [u("Hi"), a("Hello")], "rejected": [u("Hi"), a("Bye")]}]
    ds = datasets.Dataset.from_list(rows)
    assert load_preferences(ds) == [PreferencePair([u("Hi")], "Hello", "Bye", id="<dataset>:1")]


def test_json_file_row_errors_use_the_position(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "P"}, "text"]))
    with pytest.raises(DataError) as e:
        load_prompts(tmp_path / "p.json")
    assert str(e.value) == f"{tmp_path / 'p.json'}, row 2: expected a JSON object, got string"


def test_bad_on_error_value():
    with pytest.raises(ConfigError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        load_prompts("x.jsonl", on_error="ignore")


# ---------------------------------------------------------------- skip mode


def test_skip_mode_counts_by_reason_and_logs(tmp_path, caplog):
    src = write_jsonl(tmp_path / "mix.jsonl", [
        {"prompt": "P", "chosen": "A", "rejected": "B"},
        "not json",
        {"prompt": "P", "chosen": "A", "rejected": "A"},
        {"prompt": "P", "rejected": "B"},
        {"prompt": "P", "chosen": "A", "rejected": "A"},
        {"prompt": "Q", "chosen": "C", "rejected": "D"},
    ])
    stats = LoadStats()
    with caplog.at_level(logging.WARNING, logger="prefopt.data.loaders"):
        pairs = load_preferences(src, on_error="skip", stats=stats)
    assert [p.id for p in pairs] == ["mix.jsonl:1", "mix.jsonl:6"]
    assert (stats.read, stats.kept) == (6, 2)
    assert stats.skipped == {"bad_json": 1, "identical_completions": 2, "missing_field": 1}
    assert stats.report() == "\n".join([
        "read 6 rows, kept 2, skipped 4",
        f"  bad_json: 1 (first: {src}, row 2: invalid JSON: Expecting value at column 1)",
        f"  identical_completions: 2 (first: {src}, row 3, field 'rejected': chosen and "
        "rejected are identical)",
        f"  missing_field: 1 (first: {src}, row 4, field 'chosen': missing column; present "
        "columns: ['prompt', 'rejected'])",
    ])
    assert caplog.messages == [f"{src}: skipped 4 malformed rows; {stats.report()}"]


def test_skip_mode_with_no_valid_row_still_raises(tmp_path):
    src = write_jsonl(tmp_path / "all_bad.jsonl", ["[]"])
    with pytest.raises(DataError) as e:
        load_prompts(src, on_error="skip")
    assert str(e.value) == (f"{src}: no valid rows; read 1 rows, kept 0, skipped 1\n"
                            f"  not_object: 1 (first: {src}, row 1: expected a JSON object, "
                            "got list)")
