"""Constitution YAML loading: the good path and every error naming file, entry and field."""

from __future__ import annotations

import re

import pytest

from prefopt.algorithms.cai.constitution import Constitution, FewShot, Principle
from prefopt.algorithms.cai.parse import (
    load_constitution,
    load_default_constitution,
    parse_constitution,
)
from prefopt.errors import ConstitutionError

GOOD = """\
name: tiny
principles:
  - name: harmless
    critique: "Say how it is harmful."
    revision: "Make it harmless."
    comparison: "Which is less harmful?"
  - name: honest
    critique: |
      Say what is false.
    revision: Make it true.
    comparison: Which is more honest?
few_shot:
  - principle: honest
    prompt: Is the sky green?
    response: Yes.
    critique: It is false.
    revision: No, it is usually blue.
  - prompt: Hi
    response: Go away.
    critique: Rude.
    revision: Hello!
"""


def write(tmp_path, text: str | bytes, name: str = "c.yaml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path, text: str | bytes) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConstitutionError) as info:
        load_constitution(path)
    return str(info.value).replace(str(path), "FILE")


def test_good_file_parses_exactly(tmp_path):
    c = load_constitution(write(tmp_path, GOOD))
    assert c == Constitution(
        name="tiny",
        principles=(
            Principle("harmless", "Say how it is harmful.", "Make it harmless.",
                      "Which is less harmful?"),
            # the block scalar's trailing newline is stripped
            Principle("honest", "Say what is false.", "Make it true.", "Which is more honest?"),
        ),
        few_shot=(
            FewShot("Is the sky green?", "Yes.", "It is false.", "No, it is usually blue.",
                    principle="honest"),
            FewShot("Hi", "Go away.", "Rude.", "Hello!", principle=None),
        ),
    )
    assert c.principle(c.few_shot[1].principle).name == "harmless"


def test_default_constitution_parses():
    c = load_default_constitution()
    assert c.name == "prefopt-default"
    assert [p.name for p in c.principles] == [
        "avoid-harm", "ethics", "honesty", "manipulation", "autonomy", "over-refusal",
        "not-preachy", "helpfulness"]
    assert [ex.principle for ex in c.few_shot] == ["avoid-harm", "over-refusal"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace("    comparison: \"Which is less harmful?\"\n", ""),
     "FILE: principles[0]: field 'comparison': missing"),
    (lambda t: t.replace("revision: Make it true.", "revision: '  '"),
     "FILE: principles[1]: field 'revision': must not be empty"),
    (lambda t: t.replace("critique: \"Say how it is harmful.\"", "critique: 3"),
     "FILE: principles[0]: field 'critique': must be a string, got int"),
    (lambda t: t.replace("    comparison: Which is more honest?",
                         "    comparisn: Which is more honest?"),
     "FILE: principles[1]: field 'comparisn': unknown key; did you mean 'comparison'?"),
    (lambda t: t.replace("few_shot:", "fewshot:"),
     "FILE: field 'fewshot': unknown key; did you mean 'few_shot'?"),
    (lambda t: t.replace("name: tiny", "title: tiny"),
     "FILE: field 'title': unknown key; expected one of: 'name', 'principles', 'few_shot'"),
    (lambda t: t.replace("- name: honest", "- name: harmless"),
     "FILE: principles[1]: field 'name': duplicate principle name 'harmless' "
     "(first at principles[0])"),
    (lambda t: t.replace("principle: honest", "principle: honesty"),
     "FILE: few_shot[0]: field 'principle': unknown principle 'honesty'; "
     "did you mean 'honest'?"),
    (lambda t: t.replace("  - prompt: Hi\n", "  - prompt: Hi\n    prompt: Ho\n"),
     "FILE: line 19: invalid YAML: duplicate key 'prompt' (first given on line 18)"),
])
def test_errors_name_file_entry_and_field(tmp_path, mutate, expected):
    text = mutate(GOOD)
    assert text != GOOD
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize("text, expected", [
    ("", "FILE: empty document; expected a mapping with 'name' and 'principles'"),
    ("- a\n- b\n", "FILE: top level: must be a mapping, got list"),
    ("name: x\n", "FILE: field 'principles': missing"),
    ("name: x\nprinciples: []\n", "FILE: field 'principles': must not be empty"),
    ("name: x\nprinciples: {a: 1}\n", "FILE: field 'principles': must be a list, got dict"),
    ("name: [x]\nprinciples: []\n", "FILE: field 'name': must be a string, got list"),
    ("name:\nprinciples: []\n", "FILE: field 'name': must be a string, got null"),
    ("principles:\n  - name: a\n", "FILE: field 'name': missing"),
    ("name: x\nprinciples:\n  - just a string\n",
     "FILE: principles[0]: must be a mapping, got str"),
    ("name: x\nprinciples:\n  - name: [a\n", None),   # invalid YAML, checked below
    (b"name: x\nprinciples:\n  - name: caf\xe9\n",
     "FILE: line 3: not valid UTF-8 (byte 33: invalid continuation byte)"),
])
def test_document_level_errors(tmp_path, text, expected):
    message = error_of(tmp_path, text)
    if expected is None:
        assert re.fullmatch(r"FILE: line 4: invalid YAML: .+", message), message
    else:
        assert message == expected


def test_invalid_yaml_reports_line(tmp_path):
    message = error_of(tmp_path, "name: x\nprinciples:\n  - name: a\n   bad: : [\n")
    assert message.startswith("FILE: line 4: invalid YAML: ")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConstitutionError, match=r"nope\.yaml: constitution file not found$"):
        load_constitution(path)


def test_utf8_bom_and_unicode_text_accepted(tmp_path):
    text = "\ufeff" + GOOD.replace("Hello!", "Bonjour, ça va ?")
    c = load_constitution(write(tmp_path, text.encode("utf-8")))
    assert c.few_shot[1].revision == "Bonjour, ça va ?"


def test_parse_constitution_from_dict_names_source():
    data = {"name": "d", "principles": [{"name": "p", "critique": "c", "revision": "r"}]}
    with pytest.raises(ConstitutionError) as info:
        parse_constitution(data, "recipe.yaml:cai.constitution")
    assert str(info.value) == ("recipe.yaml:cai.constitution: principles[0]: "
                               "field 'comparison': missing")


def test_null_optional_few_shot_principle_and_list(tmp_path):
    text = GOOD.replace("principle: honest", "principle: null")
    assert load_constitution(write(tmp_path, text)).few_shot[0].principle is None
    head = GOOD.split("few_shot:")[0] + "few_shot:\n"
    assert load_constitution(write(tmp_path, head, "h.yaml")).few_shot == ()


def test_yaml_tags_are_not_executed(tmp_path):
    message = error_of(tmp_path, "name: !!python/object/apply:os.system ['true']\n")
    assert message.startswith("FILE: line 1: invalid YAML: ")
