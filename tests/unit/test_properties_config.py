"""Property tests of the recipe parser (``read_yaml`` + ``parse_recipe``): whatever the file
holds (random text, random bytes, invalid UTF-8, duplicated keys, unknown, missing or
wrong-typed keys), the result is a RunConfig or a ConfigError, never another exception,
and nothing is written next to the recipe."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prefopt.config import read_yaml
from prefopt.errors import ConfigError, PrefoptError
from prefopt.recipe import RunConfig, parse_recipe

FAST = settings(max_examples=50, deadline=None, database=None)
VALID = {
    "algorithm": "dpo",
    "world": {"name": "minihh", "preset": "tiny"},
    "model": {"path": "world:minihh", "mode": "lora", "lora_r": 8},
    "data": {"train": "world:pairs", "max_length": 128},
    "train": {"lr": 1.0e-4, "epochs": 1, "batch_size": 8, "report_to": ["tensorboard"]},
    "dpo": {"beta": 0.1},
}
ALGORITHMS = ["sft", "reward", "ppo", "rloo", "grpo", "dpo", "online_dpo", "kto",
              "best_of_n", "sl_cai", "rl_cai"]
KEYS = ["algorithm", "world", "model", "data", "train", "lr", "epochs", "mode", "path",
        "batch_size", "beta", "name", "preset", "max_length", "report_to", *ALGORITHMS]

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
           | st.sampled_from(["1e-4", "lora", "full", "world:minihh", "tiny", "nan"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                        max_size=4), max_leaves=8)


def parse_file(data: bytes) -> RunConfig | None:
    """Write ``data`` as a recipe in a fresh directory and parse it; the directory must hold
    only that file afterwards. Returns the config, or None after a ConfigError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_bytes(data)
        try:
            cfg = parse_recipe(read_yaml(path), str(path))
        except ConfigError as e:
            assert str(e)  # every message says something
            cfg = None
        assert [p.name for p in Path(tmp).iterdir()] == ["recipe.yaml"]
    if cfg is not None:
        assert isinstance(cfg, RunConfig) and cfg.algorithm in ALGORITHMS
        assert parse_recipe(cfg.to_dict()) == cfg  # a valid config round-trips
    return cfg


def test_the_valid_recipe_parses():
    cfg = parse_file(yaml.safe_dump(VALID).encode())
    assert cfg.params.beta == 0.1 and cfg.train.lr == 1e-4 and cfg.model.lora_r == 8


@FAST
@given(st.text(max_size=200))
@example("? [a, b]\n: 1\n")  # an unhashable (sequence) key
@example("algorithm: sft\n1: 2\n")  # a non-string key
@example("[" * 2000)  # nesting deeper than the YAML composer's recursion
@example("algorithm: sft\ntrain: {lr: .inf, epochs: -1}\n")
def test_random_text_gives_a_config_or_config_error(text):
    cfg = parse_file(text.encode("utf-8"))
    assert cfg is None or isinstance(cfg, RunConfig)


@FAST
@given(st.binary(max_size=200))
@example(b"algorithm: sft\nmodel: {path: \xff\xfe}\n")  # invalid UTF-8
def test_random_bytes_give_a_config_or_config_error(data):
    cfg = parse_file(data)
    assert cfg is None or isinstance(cfg, RunConfig)


@st.composite
def mutated_recipes(draw) -> dict:
    """The valid recipe with some keys removed, added, retyped or renamed."""
    recipe = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([None, *[k for k in recipe if isinstance(
            recipe.get(k), dict)]]))
        node = recipe if section is None else recipe[section]
        action = draw(st.sampled_from(["drop", "add", "retype", "rename_algorithm"]))
        if action == "drop" and node:
            node.pop(draw(st.sampled_from(sorted(node, key=str))))
        elif action == "add":
            node[draw(st.sampled_from(KEYS) | st.text(max_size=6))] = draw(values)
        elif action == "retype" and node:
            node[draw(st.sampled_from(sorted(node, key=str)))] = draw(values)
        elif action == "rename_algorithm":
            recipe["algorithm"] = draw(st.sampled_from(ALGORITHMS) | scalars)
    return recipe


@FAST
@given(mutated_recipes())
def test_mutated_recipes_give_a_config_or_config_error(recipe):
    from_file = parse_file(yaml.safe_dump(recipe, allow_unicode=True).encode())
    try:  # the same dict handed over directly (as prefopt compare does)
        direct = parse_recipe(recipe)
    except ConfigError:
        direct = None
    assert (from_file is None) == (direct is None)


@FAST
@given(st.sampled_from(sorted(VALID)), st.booleans())
def test_duplicated_keys_name_the_key_and_line(key, nested):
    text = yaml.safe_dump(VALID, sort_keys=False)
    if nested:  # repeat the first key of a section inside that section
        section = key if isinstance(VALID[key], dict) else "train"
        key = next(iter(VALID[section]))
        text = text.replace(f"{section}:\n", f"{section}:\n  {key}: 1\n", 1)
    else:  # repeat a top-level key at the end
        text += f"{key}: {yaml.safe_dump(VALID[key], default_flow_style=True).strip()}\n"
    assert parse_file(text.encode()) is None
    try:
        read_yaml_text(text)
    except ConfigError as e:
        assert f"duplicated key '{key}'" in str(e) and ", line " in str(e), str(e)
    else:
        raise AssertionError("a duplicated key was accepted")


def read_yaml_text(text: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(text, encoding="utf-8")
        return read_yaml(path)


def test_config_error_is_a_prefopt_error():
    assert issubclass(ConfigError, PrefoptError)
