"""Property tests of the constitution parser: random text, random bytes (invalid UTF-8
included), duplicated keys and mutated documents all end in a Constitution or a
ConstitutionError (a PrefoptError), never another exception, and nothing is written."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prefopt.algorithms.cai.constitution import Constitution
from prefopt.algorithms.cai.parse import (
    FEW_SHOT_KEYS,
    PRINCIPLE_KEYS,
    TOP_KEYS,
    load_constitution,
    parse_constitution,
)
from prefopt.errors import ConstitutionError, PrefoptError

FAST = settings(max_examples=50, deadline=None, database=None)
PRINCIPLE = {"name": "harmless", "critique": "Say how it is harmful.",
             "revision": "Make it harmless.", "comparison": "Which is less harmful?"}
VALID = {"name": "tiny",
         "principles": [PRINCIPLE, {**PRINCIPLE, "name": "honest"}],
         "few_shot": [{"principle": "honest", "prompt": "Is the sky green?", "response": "Yes.",
                       "critique": "It is false.", "revision": "No, it is blue."}]}
KEYS = list(dict.fromkeys([*TOP_KEYS, *PRINCIPLE_KEYS, *FEW_SHOT_KEYS]))

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
           | st.sampled_from(["", "   ", "harmless", "honest"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner,
                                        max_size=4), max_leaves=8)


def check(c: Constitution) -> None:
    """What a parsed constitution guarantees: non-empty stripped texts, unique principle
    names, few-shot principles that exist."""
    assert isinstance(c, Constitution) and c.principles and c.name == c.name.strip() != ""
    names = [p.name for p in c.principles]
    assert len(set(names)) == len(names)
    for p in c.principles:
        assert all(getattr(p, k).strip() == getattr(p, k) != "" for k in PRINCIPLE_KEYS)
    assert all(f.principle is None or f.principle in names for f in c.few_shot)


def load_bytes(data: bytes) -> Constitution | None:
    """Load ``data`` from a fresh directory, which must hold only that file afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "constitution.yaml"
        path.write_bytes(data)
        try:
            c = load_constitution(path)
        except ConstitutionError as e:
            assert str(e).startswith(str(path)), str(e)  # every message names the file
            c = None
        assert [p.name for p in Path(tmp).iterdir()] == ["constitution.yaml"]
    if c is not None:
        check(c)
    return c


def test_the_valid_document_loads():
    c = load_bytes(yaml.safe_dump(VALID).encode())
    assert [p.name for p in c.principles] == ["harmless", "honest"]
    assert c.few_shot[0].principle == "honest"


@FAST
@given(st.text(max_size=200))
@example("[" * 2000)  # nesting deeper than the YAML composer's recursion
@example("? [a]\n: 1\n")  # an unhashable key
@example("name: x\nprinciples: [{name: a, critique: b, revision: c, comparison: d, 1: 2}]\n")
def test_random_text_gives_a_constitution_or_its_error(text):
    c = load_bytes(text.encode("utf-8"))
    assert c is None or isinstance(c, Constitution)


@FAST
@given(st.binary(max_size=200))
@example(b"\xef\xbb\xbfname: bom\nprinciples: []\n")
@example(b"name: \xff\n")
def test_random_bytes_give_a_constitution_or_its_error(data):
    c = load_bytes(data)
    assert c is None or isinstance(c, Constitution)


@st.composite
def mutated(draw) -> dict:
    """The valid document with keys dropped, added or retyped at any level."""
    doc = copy.deepcopy(VALID)
    nodes = [doc, *doc["principles"], *doc["few_shot"]]
    for _ in range(draw(st.integers(1, 4))):
        node = draw(st.sampled_from(nodes))
        action = draw(st.sampled_from(["drop", "add", "retype"]))
        if action == "drop" and node:
            node.pop(draw(st.sampled_from(sorted(node))))
        elif action == "add":
            node[draw(st.sampled_from(KEYS) | st.text(max_size=5))] = draw(values)
        elif action == "retype" and node:
            node[draw(st.sampled_from(sorted(node)))] = draw(values)
    return doc


@FAST
@given(mutated())
def test_mutated_documents_give_a_constitution_or_its_error(doc):
    c = load_bytes(yaml.safe_dump(doc, allow_unicode=True).encode())
    assert c is None or isinstance(c, Constitution)


@FAST
@given(values)
def test_any_python_value_gives_a_constitution_or_its_error(value):
    try:
        check(parse_constitution(value, "<test>"))
    except ConstitutionError as e:
        assert str(e).startswith("<test>")


@FAST
@given(st.sampled_from(PRINCIPLE_KEYS))
def test_duplicated_keys_are_an_error_naming_the_key(key):
    text = yaml.safe_dump(VALID, sort_keys=False).replace(
        "- name: harmless\n", f"- name: harmless\n  {key}: again\n", 1)
    if key == "name":
        text = text.replace("  name: again\n", "  name: harmless\n", 1)
    assert load_bytes(text.encode()) is None
    try:
        load_constitution_text(text)
    except ConstitutionError as e:
        assert f"duplicate key '{key}'" in str(e), str(e)


def load_constitution_text(text: str) -> Constitution:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        return load_constitution(path)


def test_constitution_error_is_a_prefopt_error():
    assert issubclass(ConstitutionError, PrefoptError)
